r"""Autoregressive models of variable-length discrete sequences ending in EOS.

Model
-----
For a vocabulary ``{0, ..., V-1}`` containing the end symbol ``eos_id`` and an
optional context vector ``x``::

    p(y_1..y_J | x) = prod_{j=1}^{J} Categorical(y_j | softmax(h_j W + c)),
    y_J = EOS, y_j != EOS for j < J,

where ``h_j = encoder(u_1..u_j)`` is the output of a causal encoder (GRU, LSTM
or causal self-attention) on the shifted inputs ``u_1 = BOS``, ``u_j = y_{j-1}``.
Inputs are embedded with a learned table of ``V + 1`` rows (row ``V`` is the BOS
input token, never emitted); a context ``x`` is mapped linearly to the embedding
width and added to every input embedding; the attention encoder also adds
sinusoidal positional encodings.

Exact normalisation with a maximum length
------------------------------------------
The model has a declared ``max_len`` ``L``. The conditional at the last position
``j = L`` is forced to be a point mass on EOS, so every draw terminates within
``L`` tokens and the probabilities of all complete sequences (``J <= L``,
EOS exactly at position ``J``) sum to one **exactly**; there is no truncated mass.
A sequence without EOS in its first ``L`` tokens has probability zero.

Event representation
--------------------
An event is an int array of shape ``(L,)``. Its length ``J`` is the position of
its first EOS (1-based, EOS included). Positions after the first EOS are padding:
``log_prob`` ignores them (any value), and ``sample`` / the decoders fill them
with ``eos_id``. ``log_prob`` also accepts arrays ``(..., L')`` with ``L' <= L``
(padded internally with EOS); each row must contain an EOS. Optional
``lengths`` (EOS included) are checked against the first EOS.

Decoding
--------
``sample`` (ancestral, with temperature, top-k and top-p filtering), ``greedy``,
``beam_search`` and ``mbr_decode`` (minimum Bayes risk over samples with a user
utility). Recurrent encoders carry their state through a ``lax.scan`` in
decoding, O(J) per sequence; the attention encoder recomputes the causal stack
over a fixed buffer of ``L`` positions at every step.

Pytree layout and builder
-------------------------
Children ``(params, context)``: ``params`` a dict of float arrays
(``embed (V+1, D)``, ``encoder``, ``out_W (H, V)``, ``out_b (V,)`` and, when
conditional, ``ctx_W (C, D)``, ``ctx_b (D,)``); ``context`` ``(..., C)`` or ``None``.
Aux (hashable): encoder kind, vocab size, ``max_len``, ``eos_id``, number of heads,
``context_dim``, batch shape. Build with
``SequenceModel.init(key, vocab_size, max_len, encoder="gru", ...)`` and bind a
context with ``model.condition(x)``.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpyro.distributions import Distribution
from numpyro.distributions.constraints import Constraint

from .._checks import is_concrete, is_int
from . import decoding
from . import encoders as enc
from .decoding import MBRResult, _check_temperature, _check_top_k, _check_top_p, top_k_filter, top_p_filter

__all__ = [
    "SequenceModel",
    "MBRResult",
    "ENCODER_KINDS",
    "eos_terminated",
    "sequence_lengths",
    "pad_sequences",
    "top_k_filter",
    "top_p_filter",
]

ENCODER_KINDS = ("gru", "lstm", "transformer")


@jax.jit
def _log_prob_jit(model, value):
    return model._log_prob_core(value)


@jax.jit
def _conditional_log_probs_jit(model, value):
    return model._conditional_log_probs(value)


@partial(jax.jit, static_argnums=(3, 4))
def _decode_jit_inner(model, key, options, sample_shape, mode):
    temperature, top_k, top_p = options
    return model._decode(key, sample_shape, mode, temperature, top_k, top_p)


def _decode_jit(model, key, temperature, sample_shape, mode, top_k, top_p):
    """Options are passed as arrays so that every setting shares one compilation."""
    dtype = model._dtype()
    top_k = model.vocab_size if top_k is None else top_k
    top_p = 1.0 if top_p is None else top_p
    options = (jnp.asarray(temperature, dtype), jnp.asarray(top_k, jnp.int32), jnp.asarray(top_p, dtype))
    return _decode_jit_inner(model, key, options, tuple(sample_shape), mode)


@partial(jax.jit, static_argnums=(1,))
def _beam_jit(model, beam_width):
    return model._beam_search_core(beam_width)


# ----------------------------------------------------------------------
# Support constraint
# ----------------------------------------------------------------------
class _EOSTerminated(Constraint):
    """Int sequences over ``[0, V)`` whose last axis contains ``eos_id``."""

    is_discrete = True
    event_dim = 1

    def __init__(self, vocab_size: int, eos_id: int):
        self.vocab_size = vocab_size
        self.eos_id = eos_id

    def __call__(self, x):
        xp = jnp if isinstance(x, jax.Array) else np
        is_eos = x == self.eos_id
        before = xp.cumsum(is_eos, axis=-1) - is_eos == 0  # up to and incl. first EOS
        ok = (x >= 0) & (x < self.vocab_size) & (xp.mod(x, 1) == 0)
        return xp.all(ok | ~before, axis=-1) & xp.any(is_eos, axis=-1)

    def feasible_like(self, prototype):
        return jnp.full(jnp.shape(prototype), self.eos_id, dtype=jnp.int32)

    def tree_flatten(self):
        return (), ((), {"vocab_size": self.vocab_size, "eos_id": self.eos_id})

    def __repr__(self):
        return f"EOSTerminated(vocab_size={self.vocab_size}, eos_id={self.eos_id})"

    def eq(self, other, static=False):
        return (isinstance(other, _EOSTerminated) and other.vocab_size == self.vocab_size
                and other.eos_id == self.eos_id)


def eos_terminated(vocab_size: int, eos_id: int = 0) -> Constraint:
    """Support of :class:`SequenceModel`: sequences over ``[0, vocab_size)`` containing ``eos_id``."""
    return _EOSTerminated(int(vocab_size), int(eos_id))


# ----------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------
def sequence_lengths(value, eos_id: int = 0):
    """Length ``J`` of each padded sequence: 1 + index of the first EOS (EOS included);
    ``L + 1`` marks a row without EOS (not a valid event)."""
    value = jnp.asarray(value)
    is_eos = value == eos_id
    first = jnp.argmax(is_eos, axis=-1)
    return jnp.where(jnp.any(is_eos, axis=-1), first + 1, value.shape[-1] + 1)


def pad_sequences(seqs, max_len: int, eos_id: int = 0, append_eos: bool = True):
    """Python lists of token ids -> padded int32 array ``(len(seqs), max_len)``.

    With ``append_eos`` the EOS symbol is appended to each sequence; the rest is
    padded with ``eos_id``. Raises ValueError if a sequence (with its EOS) is longer
    than ``max_len``, or if a sequence contains EOS before its end.
    """
    out = np.full((len(seqs), max_len), eos_id, dtype=np.int32)
    for i, s in enumerate(seqs):
        s = list(int(t) for t in s)
        if append_eos:
            if eos_id in s:
                raise ValueError(f"seqs[{i}] already contains eos_id={eos_id} before its end")
            s = s + [eos_id]
        if len(s) > max_len:
            raise ValueError(
                f"seqs[{i}] has length {len(s)} (EOS included), longer than max_len={max_len}"
            )
        out[i, : len(s)] = s
    return jnp.asarray(out)


# ----------------------------------------------------------------------
# The distribution
# ----------------------------------------------------------------------
class SequenceModel(Distribution):
    """Autoregressive distribution over EOS-terminated sequences (see module docstring).

    :param params: parameter dict (see :meth:`init`).
    :param encoder: ``"gru"``, ``"lstm"`` or ``"transformer"``.
    :param max_len: declared maximum length ``L`` (EOS included); event shape ``(L,)``.
    :param eos_id: index of the end symbol in ``[0, V)``.
    :param num_heads: attention heads (transformer only).
    :param context: optional context ``(..., C)``; leading axes are the batch shape.
    """

    arg_constraints = {}
    pytree_data_fields = ()
    pytree_aux_fields = ()
    has_enumerate_support = False

    def __init__(self, params, *, encoder: str = "gru", max_len: int, eos_id: int = 0,
                 num_heads: int = 1, context=None, validate_args=None):
        if encoder not in ENCODER_KINDS:
            raise ValueError(f"encoder must be one of {ENCODER_KINDS}, got {encoder!r}")
        if not isinstance(params, dict):
            raise TypeError(f"params must be a dict, got {type(params).__name__}")
        for k in ("embed", "encoder", "out_W", "out_b"):
            if k not in params:
                raise ValueError(f"params is missing the key {k!r}")
        if not is_int(max_len) or max_len < 1:
            raise ValueError(f"max_len must be a positive integer, got {max_len!r}")
        vocab_size = int(np.shape(params["out_b"])[0])
        if np.shape(params["embed"])[0] != vocab_size + 1:
            raise ValueError(
                f"params['embed'] must have V+1={vocab_size + 1} rows (row V is BOS), "
                f"got shape {np.shape(params['embed'])}"
            )
        if not is_int(eos_id) or not 0 <= eos_id < vocab_size:
            raise ValueError(f"eos_id must be an integer in [0, V={vocab_size}), got {eos_id!r}")
        if not is_int(num_heads) or num_heads < 1:
            raise ValueError(f"num_heads must be a positive integer, got {num_heads!r}")
        context_dim = int(np.shape(params["ctx_W"])[0]) if "ctx_W" in params else 0
        self._params = params
        self._kind = encoder
        self._vocab_size = vocab_size
        self._max_len = int(max_len)
        self._eos_id = int(eos_id)
        self._num_heads = int(num_heads)
        self._context_dim = context_dim
        self._context = self._check_context(context) if context is not None else None
        batch = () if self._context is None else tuple(self._context.shape[:-1])
        super().__init__(batch, (self._max_len,), validate_args=validate_args)

    # --------------------------------------------------------------- pytree
    def tree_flatten(self):
        aux = (self._kind, self._vocab_size, self._max_len, self._eos_id, self._num_heads,
               self._context_dim, tuple(self.batch_shape), self._validate_args)
        return (self._params, self._context), aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = cls.__new__(cls)
        obj._params, obj._context = children
        (obj._kind, obj._vocab_size, obj._max_len, obj._eos_id, obj._num_heads,
         obj._context_dim, batch, validate) = aux
        if obj._context is not None and hasattr(obj._context, "shape"):
            batch = tuple(obj._context.shape[:-1])
        Distribution.__init__(obj, batch, (obj._max_len,), validate_args=False)
        obj._validate_args = validate
        return obj

    # -------------------------------------------------------------- builder
    @classmethod
    def init(cls, key, vocab_size: int, max_len: int, *, encoder: str = "gru", eos_id: int = 0,
             embed_dim: int = 16, hidden_dim: int = 32, num_layers: int = 1, num_heads: int = 2,
             context_dim: int = 0, context=None, dtype=None) -> "SequenceModel":
        """Random parameters for a model over ``vocab_size`` symbols (EOS included).

        Recurrent encoders (``"gru"``, ``"lstm"``) have ``num_layers`` cells of width
        ``hidden_dim``; the ``"transformer"`` has ``num_layers`` pre-LN causal blocks of
        width ``embed_dim`` (divisible by ``num_heads``) with MLP width ``hidden_dim``.
        ``context_dim > 0`` makes the model conditional on a context vector.
        """
        for name, v in (("vocab_size", vocab_size), ("embed_dim", embed_dim),
                        ("hidden_dim", hidden_dim), ("num_layers", num_layers),
                        ("num_heads", num_heads), ("max_len", max_len)):
            if not is_int(v) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (EOS plus at least one symbol), got {vocab_size}")
        if not is_int(context_dim) or context_dim < 0:
            raise ValueError(f"context_dim must be a non-negative integer, got {context_dim!r}")
        if encoder not in ENCODER_KINDS:
            raise ValueError(f"encoder must be one of {ENCODER_KINDS}, got {encoder!r}")
        dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
        k = [jax.random.fold_in(key, i) for i in range(2)]
        if encoder == "transformer":
            enc_params = enc.init_causal_transformer(k[1], embed_dim, num_layers, num_heads,
                                                     hidden_dim, dtype)
            out_dim = embed_dim
        else:
            enc_params = enc.init_recurrent(k[1], encoder, embed_dim, hidden_dim, num_layers, dtype)
            out_dim = hidden_dim
        shapes = [(vocab_size + 1, embed_dim), (out_dim, vocab_size)]
        if context_dim:
            shapes.append((context_dim, embed_dim))
        draws = enc.standard_normals(k[0], shapes, dtype)
        params = {
            "embed": draws[0],
            "encoder": enc_params,
            "out_W": draws[1] / math.sqrt(out_dim),
            "out_b": np.zeros((vocab_size,), dtype),
        }
        if context_dim:
            params["ctx_W"] = draws[2] / math.sqrt(context_dim)
            params["ctx_b"] = np.zeros((embed_dim,), dtype)
        params = jax.tree.map(jnp.asarray, params)
        return cls(params, encoder=encoder, max_len=max_len, eos_id=eos_id,
                   num_heads=num_heads if encoder == "transformer" else 1, context=context)

    def _check_context(self, context):
        if not self._context_dim:
            raise ValueError("context was given but the model is unconditional (context_dim=0)")
        if not hasattr(context, "shape"):
            context = jnp.asarray(context)
        if context.ndim < 1 or context.shape[-1] != self._context_dim:
            raise ValueError(
                f"context must have shape (..., context_dim={self._context_dim}), "
                f"got {tuple(context.shape)}"
            )
        if not jnp.issubdtype(context.dtype, jnp.floating):
            context = jnp.asarray(context, self._params["out_b"].dtype)
        return context

    def condition(self, context) -> "SequenceModel":
        """The same parameters conditioned on ``context (..., C)``; batch shape ``context.shape[:-1]``."""
        context = self._check_context(context)
        children, aux = self.tree_flatten()
        aux = aux[:6] + (tuple(context.shape[:-1]),) + aux[7:]
        return type(self).tree_unflatten(aux, (self._params, context))

    def _with_context(self, context):
        if context is not None:
            return self.condition(context)
        if self._context_dim and self._context is None:
            raise ValueError(
                f"the model is conditional (context_dim={self._context_dim}) and needs a context: "
                f"call .condition(context) or pass context= with shape (..., {self._context_dim})"
            )
        return self

    # ----------------------------------------------------------- properties
    @property
    def params(self):
        return self._params

    @property
    def context(self):
        return self._context

    @property
    def encoder(self) -> str:
        return self._kind

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def max_len(self) -> int:
        return self._max_len

    @property
    def eos_id(self) -> int:
        return self._eos_id

    @property
    def bos_id(self) -> int:
        """Input-only BOS token index (row ``V`` of the embedding table)."""
        return self._vocab_size

    @property
    def context_dim(self) -> int:
        return self._context_dim

    @property
    def support(self):
        return eos_terminated(self._vocab_size, self._eos_id)

    # ------------------------------------------------------------ internals
    def _ctx_embedding(self, ctx):
        """Context ``(..., C)`` -> additive input term ``(..., D)`` (0 when unconditional)."""
        if ctx is None or not self._context_dim:
            return None
        return ctx @ self._params["ctx_W"] + self._params["ctx_b"]

    def _eos_logp(self, dtype):
        return jnp.where(jnp.arange(self._vocab_size) == self._eos_id, 0.0, -jnp.inf).astype(dtype)

    def _force_last(self, logp, t):
        """Point mass on EOS at the last position ``t == L-1`` (0-based)."""
        return jnp.where(t == self._max_len - 1, self._eos_logp(logp.dtype), logp)

    def _encode_full(self, inputs, ctx_emb):
        """Teacher-forced encoder outputs for input tokens ``(..., L)`` -> logits ``(..., L, V)``."""
        p = self._params
        x = p["embed"][inputs]
        if ctx_emb is not None:
            x = x + ctx_emb[..., None, :]
        if self._kind == "transformer":
            x = x + enc.sinusoidal_positions(inputs.shape[-1], x.shape[-1], x.dtype)
            h = enc.causal_transformer_apply(p["encoder"], x, self._num_heads)
        else:
            h, _ = enc.recurrent_apply(self._kind, p["encoder"], x)
        return h @ p["out_W"] + p["out_b"]

    def _init_state(self, lead_shape, dtype):
        if self._kind == "transformer":
            return jnp.full(tuple(lead_shape) + (self._max_len,), self.bos_id, dtype=jnp.int32)
        return enc.recurrent_initial_state(self._kind, self._params["encoder"], lead_shape, dtype)

    def _step(self, state, token, t, ctx_emb):
        """Feed input ``token (...)`` at position ``t``; return ``(state, logits (..., V))``
        of the conditional at position ``t`` (before forcing EOS at the end)."""
        p = self._params
        if self._kind == "transformer":
            buf = lax.dynamic_update_index_in_dim(state, token.astype(state.dtype), t, axis=-1)
            x = p["embed"][buf]
            if ctx_emb is not None:
                x = x + ctx_emb[..., None, :]
            x = x + enc.sinusoidal_positions(self._max_len, x.shape[-1], x.dtype)
            h = enc.causal_transformer_apply(p["encoder"], x, self._num_heads)
            h_t = lax.dynamic_index_in_dim(h, t, axis=-2, keepdims=False)
            return buf, h_t @ p["out_W"] + p["out_b"]
        x = p["embed"][token]
        if ctx_emb is not None:
            x = x + ctx_emb
        state, h_t = enc.recurrent_step(self._kind, p["encoder"], state, x)
        return state, h_t @ p["out_W"] + p["out_b"]

    def _dtype(self):
        return self._params["out_b"].dtype

    # ----------------------------------------------------------- validation
    def _check_value(self, value, lengths=None):
        """Validate (concrete) / cast value; return int array ``(..., L)`` padded with EOS."""
        L, V, eos = self._max_len, self._vocab_size, self._eos_id
        if is_concrete(value):
            arr = np.asarray(value)
            if arr.ndim < 1:
                raise ValueError(f"value must have shape (..., max_len={L}), got a scalar")
            if arr.shape[-1] > L:
                raise ValueError(
                    f"value has sequences of length {arr.shape[-1]}, longer than the declared "
                    f"maximum max_len={L}"
                )
            if not np.issubdtype(arr.dtype, np.integer):
                if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
                    arr = arr.astype(np.int64)
                else:
                    raise TypeError(f"value must hold integer tokens, got dtype {arr.dtype}")
            is_eos = arr == eos
            has_eos = is_eos.any(axis=-1)
            if arr.size and not has_eos.all():
                bad = np.argwhere(~has_eos)[:5].tolist()
                raise ValueError(
                    f"value: sequence(s) at batch index {bad} have no end-of-sequence symbol "
                    f"eos_id={eos} within max_len={L}; every sequence must end with EOS"
                )
            counted = (np.cumsum(is_eos, axis=-1) - is_eos) == 0
            if arr.size:
                vals = arr[counted]
                if vals.size and (vals.min() < 0 or vals.max() >= V):
                    raise ValueError(
                        f"value tokens must lie in [0, V={V}) up to the first EOS, got values in "
                        f"[{vals.min()}, {vals.max()}]"
                    )
            if lengths is not None and is_concrete(lengths):
                ln = np.asarray(lengths)
                if not np.issubdtype(ln.dtype, np.integer):
                    raise TypeError(f"lengths must be integers, got dtype {ln.dtype}")
                if ln.shape != arr.shape[:-1]:
                    raise ValueError(
                        f"lengths must have shape {arr.shape[:-1]} (the batch shape of value), "
                        f"got {ln.shape}"
                    )
                first = np.argmax(is_eos, axis=-1) + 1
                if np.any(ln != first):
                    idx = np.argwhere(ln != first)[:5].tolist()
                    raise ValueError(
                        f"lengths do not match the padded batch: lengths (EOS included) must equal "
                        f"1 + the index of the first EOS; mismatch at batch index {idx}"
                    )
            value = jnp.asarray(np.where(counted, arr, eos).astype(np.int32))
        else:
            if value.ndim < 1 or value.shape[-1] > L:
                raise ValueError(f"value must have shape (..., <= max_len={L}), got {value.shape}")
            if lengths is not None and jnp.shape(lengths) != value.shape[:-1]:
                raise ValueError(
                    f"lengths must have shape {value.shape[:-1]} (the batch shape of value), "
                    f"got {jnp.shape(lengths)}"
                )
            value = value.astype(jnp.int32)
            is_eos = value == eos
            counted = (jnp.cumsum(is_eos, axis=-1) - is_eos) == 0
            value = jnp.where(counted, value, eos)
        if value.shape[-1] < L:
            pad = jnp.full(value.shape[:-1] + (L - value.shape[-1],), eos, value.dtype)
            value = jnp.concatenate([value, pad], axis=-1)
        return value

    # ------------------------------------------------------------- density
    def conditional_log_probs(self, value, *, context=None):
        """Teacher-forced conditionals ``log p(y_j = v | y_<j, x)`` of shape
        ``(..., L, V)`` (the last position is the forced point mass on EOS)."""
        m = self._with_context(context)
        value = m._check_value(value)
        return _conditional_log_probs_jit(m, value)

    def _conditional_log_probs(self, value):
        batch = jnp.broadcast_shapes(value.shape[:-1], tuple(self.batch_shape))
        value = jnp.broadcast_to(value, batch + value.shape[-1:])
        ctx = None
        if self._context is not None:
            ctx = jnp.broadcast_to(self._context, batch + self._context.shape[-1:])
        inputs = jnp.concatenate(
            [jnp.full(batch + (1,), self.bos_id, value.dtype), value[..., :-1]], axis=-1
        )
        logits = self._encode_full(inputs, self._ctx_embedding(ctx))
        logp = jax.nn.log_softmax(logits, axis=-1)
        return logp.at[..., -1, :].set(self._eos_logp(logp.dtype))

    def log_prob(self, value, lengths=None, *, context=None):
        """Exact ``log p(y | x)`` in nats: sum of the teacher-forced conditionals
        up to and including the first EOS. ``lengths`` (optional, EOS included) must
        match the first EOS of each row."""
        m = self._with_context(context)
        value = m._check_value(value, lengths)
        return _log_prob_jit(m, value)

    def _log_prob_core(self, value):
        logp = self._conditional_log_probs(value)
        value = jnp.broadcast_to(value, logp.shape[:-1])
        picked = jnp.take_along_axis(logp, value[..., None], axis=-1)[..., 0]
        is_eos = value == self._eos_id
        counted = (jnp.cumsum(is_eos, axis=-1) - is_eos) == 0
        return jnp.sum(jnp.where(counted, picked, 0.0), axis=-1)

    def bits_per_dim(self, value, lengths=None, *, context=None):
        """``-log p(y | x) / (J ln 2)``: bits per token, ``J`` the length with EOS."""
        lp = self.log_prob(value, lengths, context=context)
        J = sequence_lengths(jnp.asarray(value), self._eos_id)
        return -lp / (J * math.log(2.0))

    # ------------------------------------------------------------ sampling
    def _flat_contexts(self, shape):
        """Context broadcast to ``shape + (C,)`` and flattened to ``(n, C)`` (or None)."""
        if self._context is None:
            return None
        ctx = jnp.broadcast_to(self._context, tuple(shape) + self._context.shape[-1:])
        return ctx.reshape((-1,) + self._context.shape[-1:])

    def _decode_one(self, key, ctx, mode, temperature, top_k, top_p):
        """Ancestral decoding of one sequence; mode 'sample' or 'greedy' (:func:`decoding.ancestral`).
        Returns ``(tokens (L,), log_prob ())`` with log_prob under the unfiltered model."""
        ctx_emb = self._ctx_embedding(ctx)
        return decoding.ancestral(lambda state, tok, t: self._step(state, tok, t, ctx_emb), self._force_last,
                                  self._init_state((), self._dtype()), key, bos_id=self.bos_id,
                                  eos_id=self._eos_id, max_len=self._max_len, greedy=mode == "greedy",
                                  temperature=temperature, top_k=top_k, top_p=top_p, dtype=self._dtype())

    def _decode(self, key, sample_shape, mode, temperature, top_k, top_p):
        shape = tuple(sample_shape) + tuple(self.batch_shape)
        n = int(np.prod(shape)) if shape else 1
        keys = jax.random.split(key, n)
        ctx = self._flat_contexts(shape)
        fn = lambda k, c: self._decode_one(k, c, mode, temperature, top_k, top_p)
        toks, lp = jax.vmap(fn, in_axes=(0, None if ctx is None else 0))(keys, ctx)
        return toks.reshape(shape + (self._max_len,)), lp.reshape(shape)

    def sample(self, key, sample_shape=(), *, temperature=1.0, top_k=None, top_p=None, context=None):
        """Ancestral samples ``sample_shape + batch_shape + (L,)`` padded with EOS.

        At each step the logits are divided by ``temperature`` (> 0), then
        restricted to the ``top_k`` largest, then to the top-p nucleus (smallest
        set with mass >= ``top_p`` in (0, 1]); the last position always emits EOS.
        With the defaults the draws are exact samples of the model.
        """
        m = self._with_context(context)
        _check_temperature(temperature)
        top_k = _check_top_k(top_k, self._vocab_size)
        top_p = _check_top_p(top_p)
        return _decode_jit(m, key, temperature, tuple(sample_shape), "sample", top_k, top_p)[0]

    def sample_with_log_prob(self, key, sample_shape=(), **kwargs):
        """Samples (as :meth:`sample`) and their log-probabilities under the unfiltered model."""
        m = self._with_context(kwargs.pop("context", None))
        temperature = _check_temperature(kwargs.pop("temperature", 1.0))
        top_k = _check_top_k(kwargs.pop("top_k", None), self._vocab_size)
        top_p = _check_top_p(kwargs.pop("top_p", None))
        if kwargs:
            raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}")
        return _decode_jit(m, key, temperature, tuple(sample_shape), "sample", top_k, top_p)

    def greedy(self, *, context=None):
        """Greedy decoding (argmax at each step): ``(tokens (..., L), log_prob (...))``."""
        m = self._with_context(context)
        return _decode_jit(m, jax.random.PRNGKey(0), 1.0, (), "greedy", None, None)

    # ---------------------------------------------------------- beam search
    def _beam_one(self, ctx, K):
        """Beam search of width ``K`` for one context (:func:`decoding.beam`)."""
        dtype = self._dtype()
        ctx_emb = self._ctx_embedding(ctx)
        if ctx_emb is not None:
            ctx_emb = jnp.broadcast_to(ctx_emb, (K,) + ctx_emb.shape)
        return decoding.beam(lambda state, tok, t: self._step(state, tok, t, ctx_emb), self._force_last,
                             self._init_state((K,), dtype), self._eos_logp(dtype), bos_id=self.bos_id,
                             eos_id=self._eos_id, max_len=self._max_len, vocab_size=self._vocab_size,
                             beam_width=K)

    def beam_search(self, beam_width: int, *, context=None):
        """Beam search without length normalisation.

        Keeps the ``beam_width`` highest-scoring hypotheses (live and finished together,
        a finished one extends only by EOS padding at no cost). Returns
        ``(tokens (..., K, L), log_probs (..., K))`` sorted best first; when fewer than
        ``K`` distinct sequences exist the extra rows have log-prob ``-inf``. With
        ``beam_width == 1`` this is greedy decoding; with ``beam_width`` at least the
        number of sequences the search is exact.
        """
        if not is_int(beam_width) or beam_width < 1:
            raise ValueError(f"beam_width must be an integer >= 1, got {beam_width!r}")
        m = self._with_context(context)
        return _beam_jit(m, int(beam_width))

    def _beam_search_core(self, K):
        m = self
        shape = tuple(m.batch_shape)
        ctx = m._flat_contexts(shape)
        fn = lambda c: m._beam_one(c, K)
        if ctx is None:
            toks, scores = fn(None)
        else:
            toks, scores = jax.vmap(fn)(ctx)
        return toks.reshape(shape + (K, self._max_len)), scores.reshape(shape + (K,))

    # ------------------------------------------------------------------ MBR
    def mbr_decode(self, key, utility: Callable, num_samples: int = 32, *, candidates=None,
                   vectorized: bool = True, temperature=1.0, top_k=None, top_p=None,
                   context=None) -> MBRResult:
        """Minimum-Bayes-risk decoding: ``argmax_{c in C} (1/S) sum_s u(c, y_s)`` over
        ``S = num_samples`` draws ``y_s`` of the model (with the given sampling options).

        ``utility(candidate, reference)`` takes two padded sequences ``(L,)`` and returns a
        scalar. With ``vectorized=True`` it must be a JAX function (it is vmapped);
        otherwise it is called in a Python loop on numpy arrays. ``candidates`` defaults
        to the samples themselves; a user set has shape ``(M, L)`` or ``(M,) + batch + (L,)``.
        """
        if not callable(utility):
            raise TypeError("utility must be callable as utility(candidate, reference) -> scalar")
        if not is_int(num_samples) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        m = self._with_context(context)
        batch = tuple(m.batch_shape)
        L = self._max_len
        samples = m.sample(key, (num_samples,), temperature=temperature, top_k=top_k, top_p=top_p)
        if candidates is None:
            cands = samples
        else:
            cands = jnp.asarray(candidates)
            if cands.ndim < 2 or cands.shape[-1] != L:
                raise ValueError(f"candidates must have shape (M, ..., max_len={L}), got {cands.shape}")
            cands = cands.astype(jnp.int32).reshape(cands.shape[:1] + (1,) * (len(batch) + 2 - cands.ndim)
                                                    + cands.shape[1:])
            cands = jnp.broadcast_to(cands, cands.shape[:1] + batch + (L,))
        return decoding.mbr_select(cands, samples, utility, vectorized=vectorized, dtype=self._dtype())

    def __repr__(self):
        cond = f", context_dim={self._context_dim}" if self._context_dim else ""
        return (f"SequenceModel(encoder={self._kind!r}, vocab_size={self._vocab_size}, "
                f"max_len={self._max_len}, eos_id={self._eos_id}, batch_shape={self.batch_shape}{cond})")

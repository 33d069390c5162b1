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

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpyro.distributions import Distribution

from .._checks import is_int
from . import encoders as enc
from .decoding import MBRResult, top_k_filter, top_p_filter  # noqa: F401  (re-exported)
from .sequence_data import check_sequence_value, eos_terminated, pad_sequences, sequence_lengths  # noqa: F401
from .sequence_decoding import SequenceDecoding

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


# ----------------------------------------------------------------------
# The distribution
# ----------------------------------------------------------------------
class SequenceModel(SequenceDecoding, Distribution):
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

    def _check_value(self, value, lengths=None):
        """Validate (concrete) / cast value; return int array ``(..., L)`` padded with EOS."""
        return check_sequence_value(value, lengths, max_len=self._max_len, vocab_size=self._vocab_size,
                                    eos_id=self._eos_id)

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

    def __repr__(self):
        cond = f", context_dim={self._context_dim}" if self._context_dim else ""
        return (f"SequenceModel(encoder={self._kind!r}, vocab_size={self._vocab_size}, "
                f"max_len={self._max_len}, eos_id={self._eos_id}, batch_shape={self.batch_shape}{cond})")

"""Decoding for :class:`~nf_ppl.models.sequence.SequenceModel`: ancestral sampling (temperature,
top-k, top-p), greedy, beam search and minimum-Bayes-risk decoding, as a mixin over the model's step
function (``_step``, ``_force_last``, ``_init_state``; the algorithms are in :mod:`.decoding`)."""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import is_int
from . import decoding
from .decoding import MBRResult, _check_temperature, _check_top_k, _check_top_p


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


class SequenceDecoding:
    """The decoders of :class:`~nf_ppl.models.sequence.SequenceModel` (a mixin; see the model's docstring)."""

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

"""Decoding algorithms for autoregressive sequence models, written against a step function.

A model supplies ``step(state, token, t) -> (state, logits)`` (one position of its causal
encoder, ``logits`` over the ``V`` tokens) and ``force_last(x, t)`` (its rule at the last position:
a point mass on EOS at ``t = L - 1``, identity before), and the algorithms here do the rest:

* :func:`ancestral`: one sequence by ancestral sampling (logits divided by ``temperature``, then
  restricted to the ``top_k`` largest and to the top-p nucleus) or greedy argmax; positions after
  the first EOS are EOS padding; the returned log-probability is under the unfiltered model.
* :func:`beam`: beam search without length normalisation, live and finished hypotheses ranked
  together (a finished one extends only by EOS at no cost).
* :func:`mbr_select`: minimum-Bayes-risk selection ``argmax_c (1/S) sum_s u(c, y_s)``.
* :func:`top_k_filter`, :func:`top_p_filter`: the token filters on their own.

:class:`nf_ppl.models.sequence.SequenceModel` uses them for ``sample``, ``greedy``,
``beam_search`` and ``mbr_decode``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._checks import is_concrete, is_int

__all__ = ["MBRResult", "ancestral", "beam", "mbr_select", "top_k_filter", "top_p_filter"]


def _check_top_k(top_k, vocab_size):
    if top_k is None:
        return None
    if not is_int(top_k) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    return int(min(top_k, vocab_size))


def _check_top_p(top_p):
    if top_p is None:
        return None
    if not isinstance(top_p, (int, float, np.floating, np.integer)) or isinstance(top_p, bool):
        raise TypeError(f"top_p must be a Python float in (0, 1], got {type(top_p).__name__}")
    if not (0.0 < float(top_p) <= 1.0):
        raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")
    return float(top_p)


def _check_temperature(temperature):
    if is_concrete(temperature):
        t = np.asarray(temperature)
        if t.shape != ():
            raise ValueError(f"temperature must be a scalar, got shape {t.shape}")
        if not t > 0:
            raise ValueError(f"temperature must be > 0, got {float(t)!r}")
    return temperature


def _top_k_mask(logits, k):
    """Keep logits >= the k-th largest (``k`` may be traced, 1 <= k <= V)."""
    v = logits.shape[-1]
    kth = jnp.take(jnp.sort(logits, axis=-1), v - k, axis=-1)[..., None]
    return jnp.where(logits >= kth, logits, -jnp.inf)


def _top_p_mask(logits, p):
    """Nucleus mask for ``p`` in (0, 1] (``p`` may be traced; ``p >= 1`` keeps all)."""
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = (mass_before < p) | (p >= 1.0)
    inv = jnp.argsort(order, axis=-1)
    keep = jnp.take_along_axis(keep_sorted, inv, axis=-1)
    return jnp.where(keep, logits, -jnp.inf)


def top_k_filter(logits, k: int):
    """Keep the ``k`` largest logits (ties at the k-th value are all kept), set the rest to -inf."""
    logits = jnp.asarray(logits)
    return _top_k_mask(logits, _check_top_k(k, logits.shape[-1]))


def top_p_filter(logits, p: float):
    """Nucleus filtering: keep the smallest set of most probable tokens whose total
    probability is ``>= p`` (token i is kept iff the mass of strictly more probable
    tokens, in sorted order, is ``< p``); the rest are set to -inf. ``p = 1`` keeps all."""
    return _top_p_mask(jnp.asarray(logits), _check_top_p(p))


class MBRResult(NamedTuple):
    """Result of :meth:`SequenceModel.mbr_decode`.

    ``sequence (..., L)``: the chosen candidate; ``expected_utility (...)``: its
    sample-average utility; ``candidates (M, ..., L)``; ``expected_utilities (M, ...)``;
    ``samples (S, ..., L)``: the model draws the utilities were averaged over.
    """

    sequence: jax.Array
    expected_utility: jax.Array
    candidates: jax.Array
    expected_utilities: jax.Array
    samples: jax.Array


def ancestral(step: Callable, force_last: Callable, state0, key, *, bos_id: int, eos_id: int, max_len: int,
              greedy: bool, temperature, top_k, top_p, dtype):
    """One sequence by ancestral sampling (or greedy argmax): ``(tokens (L,), log_prob ())``, the
    log-probability in ``dtype``."""
    keys = jax.random.split(key, max_len)

    def body(carry, inp):
        state, tok, done, lp = carry
        t, k = inp
        state, logits = step(state, tok, t)
        logp = force_last(jax.nn.log_softmax(logits, axis=-1), t)
        if greedy:
            new = jnp.argmax(logp, axis=-1)
        else:
            filt = force_last(_top_p_mask(_top_k_mask(logits / temperature, top_k), top_p), t)
            new = jax.random.categorical(k, filt, axis=-1)
        new = jnp.where(done, eos_id, new).astype(jnp.int32)
        lp = lp + jnp.where(done, 0.0, logp[new])
        done = done | (new == eos_id)
        return (state, new, done, lp), new

    init = (state0, jnp.asarray(bos_id, jnp.int32), jnp.asarray(False), jnp.zeros((), dtype))
    (_, _, _, lp), toks = lax.scan(body, init, (jnp.arange(max_len), keys))
    return toks, lp


def beam(step: Callable, force_last: Callable, state0, eos_row, *, bos_id: int, eos_id: int, max_len: int,
         vocab_size: int, beam_width: int):
    """Beam search from ``state0`` (batched over the ``beam_width`` hypotheses):
    ``(tokens (K, L), log_probs (K,))`` sorted best first; ``eos_row`` is the log-probability row
    a finished hypothesis extends by (0 at EOS, -inf elsewhere)."""
    K, V = beam_width, vocab_size
    scores0 = jnp.full((K,), -jnp.inf, eos_row.dtype).at[0].set(0.0)

    def body(carry, t):
        state, prev, done, scores, toks = carry
        state, logits = step(state, prev, t)
        logp = force_last(jax.nn.log_softmax(logits, axis=-1), t)
        logp = jnp.where(done[:, None], eos_row, logp)
        cand = (scores[:, None] + logp).reshape(-1)
        new_scores, idx = lax.top_k(cand, K)
        parent, tok = idx // V, (idx % V).astype(jnp.int32)
        state = jax.tree.map(lambda s: s[parent], state)
        toks = toks[parent].at[:, t].set(tok)
        done = done[parent] | (tok == eos_id)
        return (state, tok, done, new_scores, toks), None

    init = (state0, jnp.full((K,), bos_id, jnp.int32), jnp.zeros((K,), bool), scores0,
            jnp.full((K, max_len), eos_id, jnp.int32))
    (_, _, _, scores, toks), _ = lax.scan(body, init, jnp.arange(max_len))
    return toks, scores


def mbr_select(cands, samples, utility: Callable, *, vectorized: bool = True, dtype=None) -> MBRResult:
    """Minimum-Bayes-risk choice among ``cands (M, ..., L)`` against ``samples (S, ..., L)``.

    ``utility(candidate, reference)`` takes two padded sequences ``(L,)`` and returns a scalar;
    with ``vectorized=True`` it is vmapped (a JAX function), otherwise called in a Python loop on
    NumPy arrays.  Expected utilities are sample averages; the best candidate per batch entry wins.
    """
    batch, L = tuple(cands.shape[1:-1]), cands.shape[-1]
    M, num_samples = cands.shape[0], samples.shape[0]
    b = int(np.prod(batch)) if batch else 1
    cf = cands.reshape(M, b, L)
    sf = samples.reshape(num_samples, b, L)
    if vectorized:
        u_b = jax.vmap(utility, in_axes=(0, 0))              # over batch
        u_s = jax.vmap(u_b, in_axes=(None, 0))               # over samples
        u_c = jax.vmap(u_s, in_axes=(0, None))               # over candidates
        U = jnp.asarray(jax.jit(u_c)(cf, sf))                # (M, S, b)
    else:
        cn, sn = np.asarray(cf), np.asarray(sf)
        U = np.empty((M, num_samples, b))
        for i in range(M):
            for j in range(num_samples):
                for k in range(b):
                    U[i, j, k] = float(utility(cn[i, k], sn[j, k]))
        U = jnp.asarray(U, dtype=dtype)
    expected = jnp.mean(U, axis=1)                           # (M, b)
    best = jnp.argmax(expected, axis=0)                      # (b,)
    seq = cf[best, jnp.arange(b)]
    return MBRResult(
        sequence=seq.reshape(batch + (L,)),
        expected_utility=expected[best, jnp.arange(b)].reshape(batch),
        candidates=cands,
        expected_utilities=expected.reshape((M,) + batch),
        samples=samples,
    )

"""The linear-chain CRF's algorithms as pure functions of emission and transition scores (usable without
:class:`~nf_ppl.models.crf.LinearChainCRF`): the forward algorithm (log partition function, in log
space or as scaled matrix products), the score of a labelling, and Viterbi decoding.  The math is in
the docstring of :mod:`nf_ppl.models.crf`."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp

__all__ = ["FORWARD_METHODS", "crf_forward", "crf_score", "crf_viterbi"]


def _float_dtype_of(x):
    dt = jnp.asarray(x).dtype
    return dt if jnp.issubdtype(dt, jnp.floating) else jnp.result_type(float)


# ----------------------------------------------------------------------
# Pure functions on emission scores (usable without the Distribution)
# ----------------------------------------------------------------------
def _time_major(emissions, mask):
    """Broadcast emissions ``(..., N, V)`` and mask ``(..., N)``; move N to the front."""
    n = emissions.shape[-2]
    if mask is None:
        mask = jnp.ones(emissions.shape[:-1], dtype=emissions.dtype)
    batch = jnp.broadcast_shapes(emissions.shape[:-2], mask.shape[:-1])
    emissions = jnp.broadcast_to(emissions, batch + emissions.shape[-2:])
    mask = jnp.broadcast_to(mask, batch + (n,))
    return jnp.moveaxis(emissions, -2, 0), jnp.moveaxis(mask, -1, 0)


FORWARD_METHODS = ("logsumexp", "matmul")


@partial(jax.jit, static_argnames=("return_alphas", "method"))
def crf_forward(emissions, transitions, start, end, mask=None, return_alphas=False,
                method="matmul"):
    """Log-partition ``log Z`` by the forward algorithm (see module docstring).

    ``emissions (..., N, V)``, ``transitions (V, V)``, ``start (V,)``, ``end (V,)``,
    optional prefix ``mask (..., N)`` (1 = real position, the first must be 1).
    Returns ``log Z (...)`` and, with ``return_alphas``, also the forward
    messages ``alpha (N, ..., V)`` (time-major).

    ``method="logsumexp"`` evaluates ``logsumexp_i(alpha(i) + T[i, j])`` directly
    (O(V^2) exponentials per position). ``method="matmul"`` (the default) uses the
    identity ``logsumexp_i(alpha(i) + T[i, j]) = m + c_j +
    log sum_i exp(alpha(i) - m) exp(T[i, j] - c_j)`` with ``m = max_i alpha(i)``,
    ``c_j = max_i T[i, j]``: one ``(..., V) @ (V, V)`` matrix product and O(V)
    exponentials per position (about 10x faster at V = 32). If any of those sums
    falls below ``sqrt(finfo.tiny)`` (scores spanning more than ~40 nats in float32,
    where underflow could cost precision) that step is recomputed in the direct form
    (``lax.cond``), so both methods agree to floating-point precision.

    Hard constraints should use large finite negative scores (e.g. -1e4) rather
    than ``-inf``: a label that is unreachable with probability exactly 0 gives
    NaN gradients through ``logsumexp``.
    """
    if method not in FORWARD_METHODS:
        raise ValueError(f"method must be one of {FORWARD_METHODS}, got {method!r}")
    e, m = _time_major(emissions, mask)
    alpha0 = start + e[0]
    if method == "matmul":
        c = lax.stop_gradient(jnp.max(transitions, axis=0))
        c = jnp.where(jnp.isfinite(c), c, 0.0)
        trans_exp = jnp.exp(transitions - c)
        tiny = jnp.sqrt(jnp.finfo(alpha0.dtype).tiny).astype(alpha0.dtype)

    def step(alpha, inp):
        e_n, m_n = inp
        if method == "matmul":
            a_max = jnp.max(alpha, axis=-1, keepdims=True)
            a_max = lax.stop_gradient(jnp.where(jnp.isfinite(a_max), a_max, 0.0))
            s = jnp.exp(alpha - a_max) @ trans_exp
            # underflow guard: fall back to the direct form for this step if any sum is tiny
            new = lax.cond(
                jnp.any(s < tiny),
                lambda: logsumexp(alpha[..., :, None] + transitions, axis=-2),
                lambda: jnp.log(jnp.maximum(s, tiny)) + a_max + c,
            ) + e_n
        else:
            new = logsumexp(alpha[..., :, None] + transitions, axis=-2) + e_n
        new = jnp.where(m_n[..., None] > 0, new, alpha)
        return new, new

    if method == "matmul":  # remat: keeps the lax.cond residuals per step, not per sequence
        step = jax.checkpoint(step)
    alpha_last, alphas = lax.scan(step, alpha0, (e[1:], m[1:]))
    log_z = logsumexp(alpha_last + end, axis=-1)
    if return_alphas:
        return log_z, jnp.concatenate([alpha0[None], alphas], axis=0)
    return log_z


@jax.jit
def crf_score(labels, emissions, transitions, start, end, mask=None):
    """Unnormalised log score ``s(x, y)`` of labels ``(..., N)`` (ints in ``[0, V)``)."""
    labels = jnp.asarray(labels)
    n = emissions.shape[-2]
    if mask is None:
        mask = jnp.ones(emissions.shape[:-1], dtype=emissions.dtype)
    batch = jnp.broadcast_shapes(labels.shape[:-1], emissions.shape[:-2], mask.shape[:-1])
    labels = jnp.broadcast_to(labels, batch + (n,))
    emissions = jnp.broadcast_to(emissions, batch + emissions.shape[-2:])
    mask = jnp.broadcast_to(mask, batch + (n,)) > 0
    e_sel = jnp.take_along_axis(emissions, labels[..., None], axis=-1)[..., 0]
    pair = transitions[labels[..., :-1], labels[..., 1:]]
    inner = jnp.where(mask[..., 1:], pair + e_sel[..., 1:], 0.0)
    length = jnp.sum(mask, axis=-1).astype(jnp.int32)
    y_last = jnp.take_along_axis(labels, (length - 1)[..., None], axis=-1)[..., 0]
    return start[labels[..., 0]] + e_sel[..., 0] + jnp.sum(inner, axis=-1) + end[y_last]


@jax.jit
def crf_viterbi(emissions, transitions, start, end, mask=None, pad_value=0):
    """Max-product (Viterbi) decoding.

    ``delta_1(j) = a_j + e_1(j)``, ``delta_n(j) = max_i(delta_{n-1}(i) + T[i, j]) + e_n(j)``,
    back-pointers ``psi_n(j) = argmax_i(...)``; ``y_N = argmax_j(delta_N(j) + b_j)``,
    ``y_{n-1} = psi_n(y_n)``. Returns ``(labels (..., N), score (...))`` where ``score``
    is the unnormalised log score ``s(x, y*)``; positions past the length hold ``pad_value``.
    """
    e, m = _time_major(emissions, mask)
    v = transitions.shape[-1]
    ident = jnp.arange(v)

    def step(delta, inp):
        e_n, m_n = inp
        scores = delta[..., :, None] + transitions
        bp = jnp.argmax(scores, axis=-2)
        new = jnp.max(scores, axis=-2) + e_n
        keep = m_n[..., None] > 0
        return jnp.where(keep, new, delta), jnp.where(keep, bp, ident)

    delta_last, bps = lax.scan(step, start + e[0], (e[1:], m[1:]))
    final = delta_last + end
    y_last = jnp.argmax(final, axis=-1)
    best = jnp.max(final, axis=-1)

    def back(y_next, bp):
        y = jnp.take_along_axis(bp, y_next[..., None], axis=-1)[..., 0]
        return y, y

    _, ys = lax.scan(back, y_last, bps, reverse=True)
    labels = jnp.concatenate([jnp.moveaxis(ys, 0, -1), y_last[..., None]], axis=-1)
    valid = jnp.moveaxis(m, 0, -1) > 0
    return jnp.where(valid, labels, pad_value), best

"""Pareto smoothed importance sampling (PSIS), computed here without ArviZ.

Vehtari, Simpson, Gelman, Yao and Gabry, "Pareto smoothed importance sampling" (JMLR 2024).
From ``S`` log importance weights ``log w_s``:

1. the ``M`` largest weights form the tail, ``M = floor(3 sqrt(S))`` for ``S > 225`` and
   ``floor(S / 5)`` otherwise (``r_eff = 1``: independent draws, as from a guide; ArviZ 1.x
   rounds the same way, ArviZ 0.x and R's loo take the ceiling, which moves k-hat by a few
   hundredths);
2. a generalized Pareto distribution with shape ``k`` and scale ``sigma`` is fitted to the
   tail's exceedances ``w - w_cut`` over the largest non-tail weight ``w_cut``, by the
   empirical-Bayes estimate of Zhang and Stephens (2009) with the paper's weakly informative
   prior ``k <- (M k + 10 * 0.5) / (M + 10)``;
3. the tail weights are replaced, in rank order, by the fitted quantiles at
   ``(i - 1/2) / M``, capped at the largest raw weight.

``k`` (k-hat) says how heavy the weights' right tail is.  With ``S`` draws the estimates are
reliable for ``k < min(1 - 1 / log10(S), 0.7)`` (the paper's sample-size-aware threshold,
:func:`khat_threshold`); above it the guide misses mass the target has.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

__all__ = ["psis", "psis_khat", "khat_threshold", "psis_expectation"]

_PRIOR_K_WEIGHT = 10  # pseudo-draws of the prior on k, centred at 0.5


def khat_threshold(num_samples: int) -> float:
    """``min(1 - 1 / log10(S), 0.7)``: the largest k-hat at which ``S`` draws give reliable estimates."""
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2 for a k-hat threshold; got {num_samples}")
    return float(min(1.0 - 1.0 / math.log10(num_samples), 0.7))


def _tail_length(num_samples: int) -> int:
    return int(math.floor(3 * math.sqrt(num_samples) if num_samples > 225 else num_samples / 5))


def gpd_fit(exceedances: np.ndarray) -> tuple[float, float]:
    """Zhang-Stephens estimate ``(k, sigma)`` of a generalized Pareto fit to sorted positive values."""
    x = np.asarray(exceedances, np.float64)
    n = x.size
    m = 30 + int(math.sqrt(n))
    first_quartile = x[int(n / 4 + 0.5) - 1]
    if not first_quartile > 0:
        # a quarter of the tail ties the cutoff: weights rounded to a few values (a near-exact guide's log
        # weights in float32 span 1e-4).  The quartile only scales the prior grid of b (ties above zero are
        # fine, as in ArviZ), so take the first value above zero
        positive = x[x > 0]
        if positive.size == 0:
            return math.nan, math.nan  # every exceedance zero: no Pareto shape to fit
        first_quartile = positive[0]
    b = 1 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))
    b = b / (3 * first_quartile) + 1 / x[-1]
    k = np.mean(np.log1p(-b[:, None] * x), axis=1)
    log_lik = n * (np.log(-b / k) - k - 1)
    weight = np.exp(log_lik - logsumexp(log_lik))
    keep = weight >= 10 * np.finfo(float).eps
    b_post = float(np.sum(b[keep] * weight[keep]) / np.sum(weight[keep]))
    k_post = float(np.mean(np.log1p(-b_post * x)))
    sigma = -k_post / b_post
    k_post = (n * k_post + _PRIOR_K_WEIGHT * 0.5) / (n + _PRIOR_K_WEIGHT)
    return k_post, sigma


def _gpd_quantile(p: np.ndarray, k: float, sigma: float) -> np.ndarray:
    if abs(k) < 1e-12:
        return -sigma * np.log1p(-p)
    return sigma * np.expm1(-k * np.log1p(-p)) / k


def psis(log_w) -> tuple[np.ndarray, float]:
    """Pareto-smoothed, normalised log weights (``logsumexp == 0``) and k-hat.

    Non-finite entries are refused: drop (and count) them first.  Fewer than 5 tail draws
    (``S < 25``) give ``k = inf``, with the raw weights normalised.  The tail is the largest fifth (or
    ``3 sqrt(S)``) of the weights above the cutoff; values tied with the cutoff are left out, as ArviZ
    does (weights rounded to a few values, a near-exact guide's in float32); a tail that ties the cutoff
    but for fewer than 5 values within 1e-3 nats of it is flat, ``k = 0``.
    """
    log_w = np.asarray(log_w, np.float64).ravel()
    if log_w.size == 0 or not np.all(np.isfinite(log_w)):
        raise ValueError("log_w must be a non-empty array of finite log weights")
    out = log_w - log_w.max()
    tail_len = _tail_length(log_w.size)
    if tail_len < 5:
        return out - logsumexp(out), math.inf
    order = np.argsort(out)
    cutoff = out[order[-tail_len - 1]]
    tail_idx = order[-tail_len:]
    tail_idx = tail_idx[out[tail_idx] > cutoff]  # values tied with the cutoff are not the tail (as in ArviZ)
    tail = out[tail_idx]
    if tail.size < 5:  # the largest fifth ties the cutoff but for a few: flat unless those few stand out
        flat = tail.size == 0 or tail.max() - cutoff < 1e-3
        return out - logsumexp(out), 0.0 if flat else math.inf
    if tail.max() - tail.min() < np.finfo(float).tiny:
        return out - logsumexp(out), 0.0  # equal weights in the tail: nothing heavy to smooth
    k, sigma = gpd_fit(np.exp(tail) - np.exp(cutoff))
    if not math.isfinite(k):
        return out - logsumexp(out), math.inf
    tail_len = tail.size
    p = (np.arange(1, tail_len + 1) - 0.5) / tail_len
    smoothed = np.log(np.exp(cutoff) + _gpd_quantile(p, k, sigma))
    out[tail_idx] = np.minimum(smoothed, tail.max())
    return out - logsumexp(out), float(k)


def psis_khat(log_w) -> float:
    """Pareto k-hat of importance weights (see :func:`khat_threshold` for when it is small enough)."""
    return psis(log_w)[1]


def psis_expectation(values, log_w) -> np.ndarray:
    """PSIS estimate of ``E_p[f]`` from ``f`` evaluated at draws ``z_s ~ q`` with log weights ``log p - log q``.

    ``values`` has the draws on axis 0 (any trailing shape).  The estimate is
    ``sum_s wbar_s f(z_s)`` with the Pareto-smoothed, self-normalised weights ``wbar``; it removes
    most of the bias of plain guide averages when k-hat is below :func:`khat_threshold`.
    """
    values = np.asarray(values, np.float64)
    log_w = np.asarray(log_w, np.float64).ravel()
    if values.shape[:1] != log_w.shape:
        raise ValueError(f"values must have the draws on axis 0 ({log_w.size} of them); got shape {values.shape}")
    smoothed, _ = psis(log_w)
    return np.tensordot(np.exp(smoothed), values, axes=(0, 0))

"""Rational-quadratic spline transformer (neural spline flows, Durkan et al. 2019).

The scalar map: on ``[-B, B]`` a monotone rational-quadratic spline with ``K`` bins, the
identity outside (linear tails).  Knots ``(x_k, y_k)``, ``k = 0..K``, with ``x_0 = y_0 = -B``,
``x_K = y_K = B``; bin widths ``w_k`` and heights ``h_k`` come from a softmax (each at least
``min_bin_width``/``min_bin_height`` times ``2B``), the derivatives ``d_1..d_{K-1}`` at the inner
knots from ``min_derivative + softplus(.)`` (a raw value 0 gives derivative 1), and
``d_0 = d_K = 1`` so the spline joins the identity tails with a continuous derivative.
In bin ``k`` with ``s = h_k / w_k`` and ``theta = (x - x_k) / w_k``::

    y = y_k + h_k (s theta^2 + d_k theta (1 - theta)) / (s + (d_k + d_{k+1} - 2 s) theta (1 - theta))
    dy/dx = s^2 (d_{k+1} theta^2 + 2 s theta (1 - theta) + d_k (1 - theta)^2) / (s + (...) theta (1 - theta))^2

The inverse solves a quadratic ``a theta^2 + b theta + c = 0`` in the bin of ``y``; the root in
``[0, 1]`` is taken in the cancellation-free form ``theta = 2 c / (-b - sqrt(b^2 - 4 a c))``.
Both directions are closed form (one pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .base import Transformer


# -----------------------------------------------------------------------------------------
# option checks
# -----------------------------------------------------------------------------------------
def check_num_bins(num_bins, name: str = "num_bins") -> int:
    """``num_bins`` (number of spline bins, i.e. knots - 1) must be a positive int."""
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(f"{name} must be a positive int (number of spline bins); got {num_bins!r}")
    return int(num_bins)


def check_tail_bound(tail_bound, name: str = "tail_bound") -> float:
    """The spline interval ``[-tail_bound, tail_bound]`` needs a positive finite bound."""
    if isinstance(tail_bound, bool) or not isinstance(tail_bound, (int, float, np.floating, np.integer)) \
            or not np.isfinite(tail_bound) or tail_bound <= 0:
        raise ValueError(f"{name} must be a positive finite number (spline on [-{name}, {name}]); got {tail_bound!r}")
    return float(tail_bound)


def check_spline_minima(num_bins: int, min_bin_width: float, min_bin_height: float, min_derivative: float):
    for name, value in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
        if not (0 <= value and value * num_bins < 1):
            raise ValueError(f"{name} must be in [0, 1/num_bins) = [0, {1 / num_bins:.3g}); got {value!r}")
    if not min_derivative > 0:
        raise ValueError(f"min_derivative must be positive; got {min_derivative!r}")
    return float(min_bin_width), float(min_bin_height), float(min_derivative)


# -----------------------------------------------------------------------------------------
# the scalar spline
# -----------------------------------------------------------------------------------------
def _knots(raw, bound, min_size):
    """Knot positions ``(..., K+1)`` from unnormalised bin sizes ``(..., K)``; ends exactly +-bound."""
    k = raw.shape[-1]
    frac = min_size + (1.0 - min_size * k) * jax.nn.softmax(raw, axis=-1)
    cum = jnp.cumsum(frac, axis=-1)
    knots = bound * (2.0 * cum - 1.0)
    lo = jnp.full(raw.shape[:-1] + (1,), -bound, raw.dtype)
    hi = jnp.full(raw.shape[:-1] + (1,), bound, raw.dtype)
    return jnp.concatenate([lo, knots[..., :-1], hi], axis=-1)


def _derivatives(raw, min_derivative):
    """Knot derivatives ``(..., K+1)``: 1 at both ends, ``min_d + softplus(raw + c)`` inside (raw 0 -> 1)."""
    shift = math.log(math.expm1(1.0 - min_derivative))
    inner = min_derivative + jax.nn.softplus(raw + shift)
    one = jnp.ones(raw.shape[:-1] + (1,), raw.dtype)
    return jnp.concatenate([one, inner, one], axis=-1)


def _unit_clip(t):
    """Clip rounding overshoots to [0, 1] without halving the gradient at the ends."""
    return jnp.where((t >= 0) & (t <= 1), t, jnp.clip(t, 0.0, 1.0))


def rational_quadratic_spline(v, raw_widths, raw_heights, raw_derivatives, *, tail_bound: float,
                              inverse: bool = False, min_bin_width: float = 1e-3,
                              min_bin_height: float = 1e-3, min_derivative: float = 1e-3):
    """Monotone rational-quadratic spline on ``[-B, B]``, identity outside; elementwise.

    ``v`` has shape ``S``; ``raw_widths``/``raw_heights`` shape ``S + (K,)`` and
    ``raw_derivatives`` shape ``S + (K - 1,)`` (any broadcastable batch).  Returns ``(out,
    log_det)`` where ``out = f(v)`` (``inverse=False``) or ``f^{-1}(v)`` (``inverse=True``) and
    ``log_det = log f'(x)`` at the *base-side* point ``x`` (``x = v`` forward, ``x = out``
    inverse), each of the broadcast shape.
    """
    bound = float(tail_bound)
    batch = jnp.broadcast_shapes(jnp.shape(v), raw_widths.shape[:-1], raw_heights.shape[:-1],
                                 raw_derivatives.shape[:-1])
    dtype = jnp.result_type(v, raw_widths, raw_heights, raw_derivatives, float)
    v = jnp.broadcast_to(jnp.asarray(v, dtype), batch)
    bc = lambda a: jnp.broadcast_to(a.astype(dtype), batch + a.shape[-1:])
    xk = _knots(bc(raw_widths), bound, min_bin_width)
    yk = _knots(bc(raw_heights), bound, min_bin_height)
    dk = _derivatives(bc(raw_derivatives), min_derivative)

    inside = (v >= -bound) & (v <= bound)
    # the unused spline branch sees 0 outside (finite values and gradients); a ``where`` rather
    # than ``clip`` so that the derivative at exactly +-B is the full one, not half of it
    vc = jnp.where(inside, v, jnp.zeros_like(v))
    grid = yk if inverse else xk
    idx = jnp.sum(vc[..., None] >= grid[..., 1:-1], axis=-1)  # bin index in 0..K-1
    # one gather of both ends of the bin from the stacked (x, y, d) knot table
    ends = jnp.stack([idx, idx + 1], axis=-1)[..., None, :]
    (x_lo, x_hi), (y_lo, y_hi), (d0, d1) = jnp.moveaxis(
        jnp.take_along_axis(jnp.stack([xk, yk, dk], axis=-2), ends, axis=-1), (-2, -1), (0, 1))
    w, h = x_hi - x_lo, y_hi - y_lo
    s = h / w
    curv = d0 + d1 - 2.0 * s

    if inverse:
        dy = vc - y_lo
        a = h * (s - d0) + dy * curv
        b = h * d0 - dy * curv
        c = -s * dy
        disc = jnp.maximum(b * b - 4.0 * a * c, 0.0)
        theta = _unit_clip(2.0 * c / (-b - jnp.sqrt(disc)))
        spline_out = x_lo + theta * w
    else:
        theta = _unit_clip((vc - x_lo) / w)
        t1m = theta * (1.0 - theta)
        spline_out = y_lo + h * (s * theta * theta + d0 * t1m) / (s + curv * t1m)

    t1m = theta * (1.0 - theta)
    denom = s + curv * t1m
    numer = d1 * theta * theta + 2.0 * s * t1m + d0 * (1.0 - theta) ** 2
    log_det = 2.0 * jnp.log(s) + jnp.log(numer) - 2.0 * jnp.log(denom)
    out = jnp.where(inside, spline_out, v)
    return out, jnp.where(inside, log_det, jnp.zeros_like(log_det))


def split_spline_params(params, num_bins):
    """``(..., 3K-1, n)`` conditioner output -> widths, heights ``(..., n, K)`` and derivatives ``(..., n, K-1)``."""
    params = jnp.swapaxes(params, -1, -2)  # (..., n, 3K-1)
    k = num_bins
    return params[..., :k], params[..., k:2 * k], params[..., 2 * k:]


@dataclass(frozen=True)
class RQSpline(Transformer):
    """Monotone rational-quadratic spline on ``[-tail_bound, tail_bound]``, identity outside; ``3K - 1``
    parameters per coordinate (``K`` widths, ``K`` heights, ``K - 1`` inner derivatives).  All-zero
    parameters give the identity."""

    num_bins: int = 8
    tail_bound: float = 3.0
    min_bin_width: float = 1e-3
    min_bin_height: float = 1e-3
    min_derivative: float = 1e-3

    def __post_init__(self):
        k = check_num_bins(self.num_bins)
        object.__setattr__(self, "num_bins", k)
        object.__setattr__(self, "tail_bound", check_tail_bound(self.tail_bound))
        minima = check_spline_minima(k, self.min_bin_width, self.min_bin_height, self.min_derivative)
        for name, value in zip(("min_bin_width", "min_bin_height", "min_derivative"), minima):
            object.__setattr__(self, name, value)

    @property
    def num_params(self) -> int:
        return 3 * self.num_bins - 1

    def unpack(self, params):
        """``(raw_widths, raw_heights, raw_derivatives)``, shapes ``(..., n, K)``, ``(..., n, K)``, ``(..., n, K-1)``."""
        return split_spline_params(params, self.num_bins)

    def spline(self, v, widths, heights, derivatives, inverse):
        return rational_quadratic_spline(
            v, widths, heights, derivatives, tail_bound=self.tail_bound, inverse=inverse,
            min_bin_width=self.min_bin_width, min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative)

    def forward_with_info(self, x, params):
        return (*self.spline(x, *self.unpack(params), False), None)

    def inverse_with_info(self, y, params):
        return (*self.spline(y, *self.unpack(params), True), None)

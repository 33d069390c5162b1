"""Rational-quadratic spline layers (neural spline flows, Durkan et al. 2019).

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

Layers here: :class:`RationalQuadraticSpline` (elementwise, learned per-dimension parameters),
:class:`SplineCoupling` (coupling layer, parameters from an MLP of the other half) and
:class:`MaskedSplineAutoregressive` (MADE conditioner, MAF or IAF direction).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..nn import MADE
from ..roots import SolveInfo, raise_if_not_converged
from .base import Bijector
from .coupling import _Coupling, half_mask
from .._checks import check_mask

MODES = ("maf", "iaf")


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


def _split_spline_params(params, num_bins):
    """``(..., 3K-1, n)`` network output -> widths, heights ``(..., n, K)`` and derivatives ``(..., n, K-1)``."""
    params = jnp.swapaxes(params, -1, -2)  # (..., n, 3K-1)
    k = num_bins
    return params[..., :k], params[..., k:2 * k], params[..., 2 * k:]


class _SplineOptions:
    """Shared static options and their validation."""

    def _set_spline(self, num_bins, tail_bound, min_bin_width, min_bin_height, min_derivative):
        self.num_bins = check_num_bins(num_bins)
        self.tail_bound = check_tail_bound(tail_bound)
        self.min_bin_width, self.min_bin_height, self.min_derivative = check_spline_minima(
            self.num_bins, min_bin_width, min_bin_height, min_derivative)

    @property
    def num_params(self) -> int:
        return 3 * self.num_bins - 1

    def _spline(self, v, widths, heights, derivatives, inverse):
        return rational_quadratic_spline(
            v, widths, heights, derivatives, tail_bound=self.tail_bound, inverse=inverse,
            min_bin_width=self.min_bin_width, min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative)


_SPLINE_STATICS = ("num_bins", "tail_bound", "min_bin_width", "min_bin_height", "min_derivative")


# -----------------------------------------------------------------------------------------
# elementwise layer
# -----------------------------------------------------------------------------------------
class RationalQuadraticSpline(_SplineOptions, Bijector):
    """Elementwise rational-quadratic spline with learned per-dimension knots (``event_dim = 0``).

    forward:  ``y_i = f_i(x_i)``   (spline on ``[-B, B]``, identity outside; one pass)
    inverse:  ``x_i = f_i^{-1}(y_i)``  (root of a quadratic in the bin of ``y_i``; one pass)
    log|det J| = ``log f_i'(x_i)`` per element (0 in the tails).

    ``RationalQuadraticSpline(raw_widths, raw_heights, raw_derivatives, tail_bound=3.0)`` with
    shapes ``(dim, K)``, ``(dim, K)``, ``(dim, K - 1)``, or ``RationalQuadraticSpline.init(dim,
    num_bins=8, tail_bound=3.0)`` (the identity: uniform bins, unit derivatives).
    """

    param_names = ("raw_widths", "raw_heights", "raw_derivatives")
    static_names = _SPLINE_STATICS
    event_dim = 0

    def __init__(self, raw_widths, raw_heights, raw_derivatives, tail_bound: float = 3.0, *,
                 min_bin_width: float = 1e-3, min_bin_height: float = 1e-3, min_derivative: float = 1e-3):
        raw_widths, raw_heights = jnp.asarray(raw_widths), jnp.asarray(raw_heights)
        raw_derivatives = jnp.asarray(raw_derivatives)
        if raw_widths.ndim != 2:
            raise ValueError(f"raw_widths must have shape (dim, num_bins); got shape {raw_widths.shape}")
        dim, k = raw_widths.shape
        if raw_heights.shape != (dim, k):
            raise ValueError(f"raw_heights must have shape ({dim}, {k}) like raw_widths; got {raw_heights.shape}")
        if raw_derivatives.shape != (dim, k - 1):
            raise ValueError(f"raw_derivatives must have shape ({dim}, {k - 1}) (num_bins - 1 inner knots); "
                             f"got {raw_derivatives.shape}")
        self._set_spline(k, tail_bound, min_bin_width, min_bin_height, min_derivative)
        self.raw_widths, self.raw_heights, self.raw_derivatives = raw_widths, raw_heights, raw_derivatives

    @classmethod
    def init(cls, dim: int, num_bins: int = 8, tail_bound: float = 3.0, dtype=None, **options):
        """The identity spline (equal bins, unit derivatives) for vectors of length ``dim``."""
        num_bins = check_num_bins(num_bins)
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive int; got {dim!r}")
        z = lambda n: jnp.zeros((dim, n), dtype)
        return cls(z(num_bins), z(num_bins), z(num_bins - 1), tail_bound, **options)

    @property
    def sign(self):
        return 1.0

    @property
    def event_size(self):
        return self.raw_widths.shape[-2]

    def forward_and_log_det(self, x):
        self._check_input(x)
        return self._spline(x, self.raw_widths, self.raw_heights, self.raw_derivatives, False)

    def inverse_and_log_det(self, y):
        self._check_input(y, "y")
        return self._spline(y, self.raw_widths, self.raw_heights, self.raw_derivatives, True)


# -----------------------------------------------------------------------------------------
# coupling layer
# -----------------------------------------------------------------------------------------
class SplineCoupling(_SplineOptions, _Coupling):
    """Coupling layer with a rational-quadratic spline transformer (Durkan et al. 2019).

    With ``theta = NN(x_A, context)`` (``3K - 1`` raw spline parameters per transformed coordinate):

    forward:  ``y_A = x_A``,  ``y_B = f_theta(x_B)``         (one pass)
    inverse:  ``x_A = y_A``,  ``x_B = f_theta^{-1}(y_B)``    (one pass, quadratic root)
    log|det J| = ``sum_B log f_theta'(x_B)``

    ``SplineCoupling(key, dim, mask=None, hidden_dims=(64, 64), num_bins=8, tail_bound=3.0,
    context_dim=0)``; the default mask conditions on the first half.  The network's last layer
    starts small, so the layer starts near the identity.
    """

    static_names = _Coupling.static_names + _SPLINE_STATICS

    def __init__(self, key, dim: int, mask=None, hidden_dims: Sequence[int] = (64, 64), *,
                 num_bins: int = 8, tail_bound: float = 3.0, context_dim: int = 0, activation: str = "elu",
                 min_bin_width: float = 1e-3, min_bin_height: float = 1e-3, min_derivative: float = 1e-3,
                 dtype=None):
        self._set_spline(num_bins, tail_bound, min_bin_width, min_bin_height, min_derivative)
        mask = half_mask(dim) if mask is None else check_mask(mask, dim, "mask")
        self._setup(key, mask, hidden_dims, context_dim, activation, dtype)

    def _elementwise(self, x_change, params, inverse):
        widths, heights, derivatives = _split_spline_params(params, self.num_bins)
        z, log_det = self._spline(x_change, widths, heights, derivatives, inverse)
        return z, jnp.sum(log_det, axis=-1)


# -----------------------------------------------------------------------------------------
# autoregressive layers: a shared MADE mechanism (MAF / IAF directions)
# -----------------------------------------------------------------------------------------
class _MaskedAutoregressive(Bijector):
    """MADE-conditioned autoregressive layer with any elementwise transformer.

    Subclasses implement ``_elementwise(v, params, inverse) -> (out, log_det_per_vector, info)``
    where ``params`` is the MADE output ``(..., num_params, dim)``, ``inverse=False`` maps
    base -> data and ``log_det`` is always the forward log-det at the base-side point; ``info``
    is a :class:`~nf_ppl.roots.SolveInfo` for numerical transformers, else ``None``.

    ``mode="iaf"``: conditioner reads ``x``: forward one pass, inverse ``d`` sweeps.
    ``mode="maf"``: conditioner reads ``y``: inverse (density) one pass, forward ``d`` sweeps.
    A sweep recomputes the conditioner from the current estimate and re-solves every
    coordinate; after sweep ``k`` the first ``k`` coordinates in the ordering are exact.
    """

    param_names = ("made",)
    static_names = ("mode", "context_dim")

    def _set_made(self, made, mode):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if made.num_params != self.num_params:
            raise ValueError(f"made must output num_params={self.num_params} parameters per dimension; "
                             f"got {made.num_params}")
        self.made, self.mode, self.context_dim = made, mode, made.context_dim

    @property
    def event_size(self):
        return self.made.dim

    def _conditioner(self, v):
        ctx = self._context() if self.context_dim else None
        if ctx is not None:
            batch = jnp.broadcast_shapes(v.shape[:-1], ctx.shape[:-1])
            v = jnp.broadcast_to(v, batch + v.shape[-1:])
            ctx = jnp.broadcast_to(ctx, batch + ctx.shape[-1:])
        return self.made(v, ctx)

    def _one_pass(self, v, target, inverse):
        params = self._conditioner(v)
        target = jnp.broadcast_to(target, params.shape[:-2] + target.shape[-1:])
        return self._elementwise(target, params, inverse)

    def _sequential(self, target, inverse):
        init = self._one_pass(jnp.zeros_like(target), target, inverse)

        def sweep(_, carry):
            return self._one_pass(carry[0], target, inverse)

        return jax.lax.fori_loop(1, self.event_size, sweep, init)

    def _compute(self, v, inverse):
        """``(out, log_det, info)`` of the forward (``inverse=False``) or inverse map."""
        one_pass = (self.mode == "iaf") != inverse
        return self._one_pass(v, v, inverse) if one_pass else self._sequential(v, inverse)

    def _run(self, v, inverse):
        return self._finish(*self._compute(v, inverse))

    def _finish(self, out, log_det, info):
        """Numerical transformers: raise eagerly on failure, NaN for failed rows under jit."""
        if info is None:
            return out, log_det
        raise_if_not_converged(info, type(self).__name__, getattr(self, "max_iter", 0))
        ok = info.converged
        nan = jnp.asarray(jnp.nan, out.dtype)
        return jnp.where(ok[..., None], out, nan), jnp.where(ok, log_det, nan)

    def forward_and_log_det(self, x):
        self._check_input(x)
        return self._run(x, inverse=False)

    def inverse_and_log_det(self, y):
        self._check_input(y, "y")
        return self._run(y, inverse=True)

    def forward_with_info(self, x):
        """``(y, log_det, info)``; ``info`` is a :class:`~nf_ppl.roots.SolveInfo` (trivial if analytic)."""
        return self._with_info(x, inverse=False)

    def inverse_with_info(self, y):
        """``(x, log_det, info)``; ``info`` is a :class:`~nf_ppl.roots.SolveInfo` (trivial if analytic).

        Unlike ``inverse_and_log_det`` this never raises and never replaces values by NaN.
        """
        return self._with_info(y, inverse=True)

    def _with_info(self, v, inverse):
        self._check_input(v, "y" if inverse else "x")
        out, log_det, info = self._compute(v, inverse)
        if info is None:
            info = SolveInfo(jnp.ones(log_det.shape, bool), jnp.zeros(log_det.shape, jnp.int32),
                             jnp.zeros(log_det.shape, log_det.dtype))
        return out, log_det, info

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        if intermediates is not None:
            return intermediates
        # the one-pass direction gives the log-det without solving anything
        if self.mode == "iaf":
            return self._finish(*self._one_pass(x, x, False))[1]
        return self._finish(*self._one_pass(y, y, True))[1]


class MaskedSplineAutoregressive(_SplineOptions, _MaskedAutoregressive):
    """Autoregressive rational-quadratic spline layer (neural spline flow, Durkan et al. 2019).

    A MADE gives, for coordinate ``i``, the ``3K - 1`` raw parameters of a spline ``f_i`` that
    depend only on coordinates before ``i`` in its ordering (and a context).

    ``mode="maf"`` (conditioner reads ``y``; default):
        forward:  ``y_i = f_i(x_i; y_<i)``        ``d`` sequential passes (sampling)
        inverse:  ``x_i = f_i^{-1}(y_i; y_<i)``   one pass (density)
    ``mode="iaf"`` (conditioner reads ``x``):
        forward:  ``y_i = f_i(x_i; x_<i)``        one pass (sampling)
        inverse:  ``x_i = f_i^{-1}(y_i; x_<i)``   ``d`` sequential passes
    log|det J| = ``sum_i log f_i'(x_i)``.  Spline inverses are closed form (quadratic roots).

    ``MaskedSplineAutoregressive(key, dim, hidden_dims=(64, 64), num_bins=8, tail_bound=3.0,
    mode="maf", ordering="natural", context_dim=0)`` or ``.from_made(made, ...)`` with a MADE of
    ``num_params = 3 * num_bins - 1``.
    """

    static_names = _MaskedAutoregressive.static_names + _SPLINE_STATICS

    def __init__(self, key, dim: int, hidden_dims: Sequence[int] = (64, 64), *, num_bins: int = 8,
                 tail_bound: float = 3.0, mode: str = "maf", ordering="natural", context_dim: int = 0,
                 activation: str = "elu", min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
                 min_derivative: float = 1e-3, dtype=None):
        self._set_spline(num_bins, tail_bound, min_bin_width, min_bin_height, min_derivative)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        made = MADE.init(key, dim, hidden_dims, self.num_params, ordering=ordering, context_dim=context_dim,
                         activation=activation, dtype=dtype)
        self._set_made(made, mode)

    @classmethod
    def from_made(cls, made: MADE, *, num_bins: int = 8, tail_bound: float = 3.0, mode: str = "maf",
                  min_bin_width: float = 1e-3, min_bin_height: float = 1e-3, min_derivative: float = 1e-3):
        obj = cls.__new__(cls)
        obj._set_spline(num_bins, tail_bound, min_bin_width, min_bin_height, min_derivative)
        obj._set_made(made, mode)
        return obj

    def _elementwise(self, v, params, inverse):
        widths, heights, derivatives = _split_spline_params(params, self.num_bins)
        out, log_det = self._spline(v, widths, heights, derivatives, inverse)
        return out, jnp.sum(log_det, axis=-1), None

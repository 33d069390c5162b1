"""Rational-quadratic spline layers (neural spline flows, Durkan et al. 2019).

The scalar map (knots, derivatives, the closed-form inverse) is the
:class:`~nf_ppl.layers.transformers.RQSpline` transformer; its docstring has the formulas.  On
``[-B, B]`` a monotone rational-quadratic spline with ``K`` bins, the identity outside; both
directions closed form (one pass).

Layers here: :class:`RationalQuadraticSpline` (elementwise, learned per-dimension parameters),
:class:`SplineCoupling` (:class:`~nf_ppl.layers.Coupling` with the spline) and
:class:`MaskedSplineAutoregressive` (:class:`~nf_ppl.layers.MaskedAutoregressive` with the spline,
MAF or IAF direction).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from .._checks import check_mask
from ..nn import MADE
from .autoregressive import MaskedAutoregressive, check_mode, made_for
from .base import Bijector, KeyedInit
from .coupling import Coupling, half_mask
from .transformers import Inverse, RQSpline
from .transformers.spline import (check_num_bins, check_spline_minima, check_tail_bound,  # noqa: F401
                                  rational_quadratic_spline, split_spline_params)

_SPLINE_STATICS = ("num_bins", "tail_bound", "min_bin_width", "min_bin_height", "min_derivative")


class _SplineOptions:
    """The spline's static options as attributes (kept in the layers' pytree data) and the transformer
    built from them."""

    def _set_spline(self, num_bins, tail_bound, min_bin_width, min_bin_height, min_derivative):
        spline = RQSpline(num_bins, tail_bound, min_bin_width, min_bin_height, min_derivative)
        for name in _SPLINE_STATICS:
            setattr(self, name, getattr(spline, name))

    @property
    def spline(self) -> RQSpline:
        return RQSpline(*(getattr(self, name) for name in _SPLINE_STATICS))

    @property
    def num_params(self) -> int:
        return 3 * self.num_bins - 1


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
        return self.spline.spline(x, self.raw_widths, self.raw_heights, self.raw_derivatives, False)

    def inverse_and_log_det(self, y):
        self._check_input(y, "y")
        return self.spline.spline(y, self.raw_widths, self.raw_heights, self.raw_derivatives, True)


# -----------------------------------------------------------------------------------------
# coupling layer
# -----------------------------------------------------------------------------------------
class SplineCoupling(KeyedInit, _SplineOptions, Coupling):
    """Coupling layer with a rational-quadratic spline transformer (Durkan et al. 2019).

    With ``theta = NN(x_A, context)`` (``3K - 1`` raw spline parameters per transformed coordinate):

    forward:  ``y_A = x_A``,  ``y_B = f_theta(x_B)``         (one pass)
    inverse:  ``x_A = y_A``,  ``x_B = f_theta^{-1}(y_B)``    (one pass, quadratic root)
    log|det J| = ``sum_B log f_theta'(x_B)``

    ``SplineCoupling(key, dim, mask=None, hidden_dims=(64, 64), num_bins=8, tail_bound=3.0,
    context_dim=0)``; the default mask conditions on the first half.  The network's last layer
    starts small, so the layer starts near the identity.  The transformer is ``RQSpline(...)``.
    """

    static_names = ("mask", "context_dim") + _SPLINE_STATICS

    def __init__(self, key, dim: int, mask=None, hidden_dims: Sequence[int] = (64, 64), *,
                 num_bins: int = 8, tail_bound: float = 3.0, context_dim: int = 0, activation: str = "elu",
                 min_bin_width: float = 1e-3, min_bin_height: float = 1e-3, min_derivative: float = 1e-3,
                 dtype=None):
        self._set_spline(num_bins, tail_bound, min_bin_width, min_bin_height, min_derivative)
        mask = half_mask(dim) if mask is None else check_mask(mask, dim, "mask")
        self._setup(key, mask, hidden_dims, context_dim, activation, dtype)

    @property
    def transformer(self):
        return self.spline


# -----------------------------------------------------------------------------------------
# autoregressive layer
# -----------------------------------------------------------------------------------------
class MaskedSplineAutoregressive(KeyedInit, _SplineOptions, MaskedAutoregressive):
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

    In :class:`~nf_ppl.layers.MaskedAutoregressive`'s terms the transformer is ``RQSpline(...)``
    for IAF and ``Inverse(RQSpline(...))`` for MAF: the spline always maps the base side to the data
    side, so its density direction runs the spline's inverse (the parametrisation the ``nsf``
    figures in bench/RESULTS.md were measured with).

    ``MaskedSplineAutoregressive(key, dim, hidden_dims=(64, 64), num_bins=8, tail_bound=3.0,
    mode="maf", ordering="natural", context_dim=0)`` or ``.from_made(made, ...)`` with a MADE of
    ``num_params = 3 * num_bins - 1``.
    """

    static_names = ("mode", "context_dim") + _SPLINE_STATICS

    def __init__(self, key, dim: int, hidden_dims: Sequence[int] = (64, 64), *, num_bins: int = 8,
                 tail_bound: float = 3.0, mode: str = "maf", ordering="natural", context_dim: int = 0,
                 activation: str = "elu", min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
                 min_derivative: float = 1e-3, dtype=None):
        self._set_spline(num_bins, tail_bound, min_bin_width, min_bin_height, min_derivative)
        check_mode(mode)
        self.mode = mode
        made = made_for(key, dim, self.transformer, hidden_dims, ordering, context_dim, activation, dtype)
        self._set_made(made, mode)

    @classmethod
    def from_made(cls, made: MADE, *, num_bins: int = 8, tail_bound: float = 3.0, mode: str = "maf",
                  min_bin_width: float = 1e-3, min_bin_height: float = 1e-3, min_derivative: float = 1e-3):
        obj = cls.__new__(cls)
        obj._set_spline(num_bins, tail_bound, min_bin_width, min_bin_height, min_derivative)
        obj._set_made(made, mode)
        return obj

    @property
    def transformer(self):
        return Inverse(self.spline) if self.mode == "maf" else self.spline

"""Elementwise layers: ``y_i = sigma(x_i)`` for a smooth, strictly increasing scalar map.

The Jacobian of an elementwise map is diagonal, so ``log|det J| = sum_i log sigma'(x_i)``;
each layer here reports the per-element terms (``event_dim = 0``) and flows sum them.
Forward and inverse are both one pass.  All maps are increasing, so ``sign = +1``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from numpyro.distributions import constraints

from .._checks import check_positive
from .base import Bijector
from .transformers.sinh_arcsinh import sinh_arcsinh, sinh_arcsinh_inverse


class _Elementwise(Bijector):
    event_dim = 0

    @property
    def sign(self):
        return 1.0


class ElementwiseAffine(_Elementwise):
    """Per-dimension affine map with learned location and log-scale.

    forward:  ``y = loc + exp(log_scale) * x``
    inverse:  ``x = (y - loc) * exp(-log_scale)``
    log|det J| = ``sum_i log_scale_i`` (constant in x).  Both directions are one pass.

    Construct with ``ElementwiseAffine(loc, log_scale)``, ``ElementwiseAffine.from_scale(loc,
    scale)`` (scale must be > 0) or ``ElementwiseAffine.init(dim)`` (identity).
    """

    param_names = ("loc", "log_scale")

    def __init__(self, loc, log_scale):
        loc, log_scale = jnp.asarray(loc), jnp.asarray(log_scale)
        if loc.ndim != 1 or log_scale.shape != loc.shape:
            raise ValueError(
                f"loc and log_scale must be 1-D of equal length; got shapes {loc.shape} and {log_scale.shape}"
            )
        self.loc, self.log_scale = loc, log_scale

    @classmethod
    def from_scale(cls, loc, scale):
        check_positive(scale, "scale")
        return cls(loc, jnp.log(jnp.asarray(scale)))

    @classmethod
    def init(cls, dim: int, dtype=None):
        return cls(jnp.zeros(dim, dtype), jnp.zeros(dim, dtype))

    @property
    def event_size(self):
        return self.loc.shape[-1]

    def forward_and_log_det(self, x):
        self._check_input(x)
        return self.loc + jnp.exp(self.log_scale) * x, jnp.broadcast_to(self.log_scale, jnp.shape(x))

    def inverse_and_log_det(self, y):
        self._check_input(y, "y")
        return (y - self.loc) * jnp.exp(-self.log_scale), jnp.broadcast_to(self.log_scale, jnp.shape(y))


class LeakyReLU(_Elementwise):
    """Leaky ReLU with fixed negative slope ``a > 0``.

    forward:  ``y = x`` for ``x >= 0``, ``y = a x`` otherwise
    inverse:  ``x = y`` for ``y >= 0``, ``x = y / a`` otherwise
    log|det J| = ``sum_i [x_i < 0] log a``.  Both directions are one pass.
    """

    static_names = ("negative_slope",)

    def __init__(self, negative_slope: float = 0.01):
        check_positive(negative_slope, "negative_slope")
        self.negative_slope = float(negative_slope)

    def forward_and_log_det(self, x):
        neg = x < 0
        log_det = jnp.where(neg, math.log(self.negative_slope), 0.0).astype(jnp.result_type(x, float))
        return jnp.where(neg, self.negative_slope * x, x), log_det

    def inverse_and_log_det(self, y):
        neg = y < 0
        log_det = jnp.where(neg, math.log(self.negative_slope), 0.0).astype(jnp.result_type(y, float))
        return jnp.where(neg, y / self.negative_slope, y), log_det


class ELU(_Elementwise):
    """Invertible exponential linear unit with fixed ``alpha > 0``; codomain ``(-alpha, inf)``.

    forward:  ``y = x`` for ``x > 0``, ``y = alpha (exp(x) - 1)`` otherwise
    inverse:  ``x = y`` for ``y > 0``, ``x = log(1 + y / alpha)`` otherwise
    log|det J| = ``sum_i [x_i <= 0] (log alpha + x_i)``.  Both directions are one pass.
    """

    static_names = ("alpha",)

    def __init__(self, alpha: float = 1.0):
        check_positive(alpha, "alpha")
        self.alpha = float(alpha)

    @property
    def codomain(self):
        return constraints.greater_than(-self.alpha)

    def forward_and_log_det(self, x):
        neg_part = jnp.minimum(x, 0.0)  # keeps exp() and its gradient finite for large x
        y = jnp.where(x > 0, x, self.alpha * jnp.expm1(neg_part))
        return y, jnp.where(x > 0, 0.0, math.log(self.alpha) + neg_part)

    def inverse_and_log_det(self, y):
        neg_part = jnp.minimum(y, 0.0)
        x_neg = jnp.log1p(neg_part / self.alpha)
        x = jnp.where(y > 0, y, x_neg)
        return x, jnp.where(y > 0, 0.0, math.log(self.alpha) + x_neg)


class Softplus(_Elementwise):
    """Softplus map onto the positive half-line.

    forward:  ``y = log(1 + exp(x))``
    inverse:  ``x = y + log(1 - exp(-y))``
    log|det J| = ``sum_i log sigmoid(x_i) = -sum_i softplus(-x_i)``.  Both directions one pass.
    """

    @property
    def codomain(self):
        return constraints.positive

    def forward_and_log_det(self, x):
        return jax.nn.softplus(x), -jax.nn.softplus(-x)

    def inverse_and_log_det(self, y):
        x = y + jnp.log(-jnp.expm1(-y))
        return x, -jax.nn.softplus(-x)


class Tanh(_Elementwise):
    """Hyperbolic tangent onto ``(-1, 1)``.

    forward:  ``y = tanh(x)``
    inverse:  ``x = atanh(y)``
    log|det J| = ``sum_i log(1 - tanh(x_i)^2) = sum_i 2 (log 2 - x_i - softplus(-2 x_i))``.
    Both directions are one pass.
    """

    @property
    def codomain(self):
        return constraints.open_interval(-1.0, 1.0)

    @staticmethod
    def _log_det(x):
        return 2.0 * (math.log(2.0) - x - jax.nn.softplus(-2.0 * x))

    def forward_and_log_det(self, x):
        return jnp.tanh(x), self._log_det(x)

    def inverse_and_log_det(self, y):
        x = jnp.arctanh(y)
        return x, self._log_det(x)


class SinhArcsinh(_Elementwise):
    """Sinh-arcsinh map (Jones and Pewsey) with learned skew ``e`` and tail weight ``d = exp(log_tailweight)``.

    forward:  ``y = sinh(d * asinh(x) - e)``
    inverse:  ``x = sinh((asinh(y) + e) / d)``
    log|det J| = ``sum_i log d + log cosh(d asinh x - e) - 0.5 log(1 + x^2)``.
    Both directions are one pass.  ``d > 1`` makes tails heavier, ``d < 1`` lighter.
    """

    param_names = ("skew", "log_tailweight")

    def __init__(self, skew, log_tailweight):
        skew, log_tailweight = jnp.asarray(skew), jnp.asarray(log_tailweight)
        if skew.ndim != 1 or log_tailweight.shape != skew.shape:
            raise ValueError(
                f"skew and log_tailweight must be 1-D of equal length; got {skew.shape} and {log_tailweight.shape}"
            )
        self.skew, self.log_tailweight = skew, log_tailweight

    @classmethod
    def init(cls, dim: int, dtype=None):
        return cls(jnp.zeros(dim, dtype), jnp.zeros(dim, dtype))

    @property
    def event_size(self):
        return self.skew.shape[-1]

    def forward_and_log_det(self, x):
        self._check_input(x)
        return sinh_arcsinh(x, self.skew, self.log_tailweight)

    def inverse_and_log_det(self, y):
        self._check_input(y, "y")
        return sinh_arcsinh_inverse(y, self.skew, self.log_tailweight)

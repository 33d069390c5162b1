"""Sinh-arcsinh transformer (Jones and Pewsey 2009): skew and tail weight, closed form both ways.

With skew ``e`` and tail weight ``d = exp(l)``:

    forward:  ``tau(x) = sinh(d asinh(x) - e)``
    inverse:  ``x = sinh((asinh(y) + e) / d)``
    log tau'(x) = ``l + log cosh(d asinh x - e) - 0.5 log(1 + x^2)``

``d > 1`` makes tails heavier, ``d < 1`` lighter.  The elementwise layer
:class:`~nf_ppl.layers.SinhArcsinh` (learned per-dimension ``e``, ``l``) uses the same functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp

from .affine import soft_clamp
from .base import Transformer


def log_cosh(u):
    """``log cosh(u)`` without overflow for any ``|u|``."""
    a = jnp.abs(u)
    return a + jnp.log1p(jnp.exp(-2.0 * a)) - math.log(2.0)


def sinh_arcsinh(x, skew, log_tailweight):
    """``(sinh(exp(l) asinh(x) - e), log tau'(x))``."""
    u = jnp.exp(log_tailweight) * jnp.arcsinh(x) - skew
    return jnp.sinh(u), log_tailweight + log_cosh(u) - 0.5 * jnp.log1p(x * x)


def sinh_arcsinh_inverse(y, skew, log_tailweight):
    """``(sinh((asinh(y) + e) exp(-l)), log tau'(x))`` at the returned ``x``."""
    u = jnp.arcsinh(y)
    x = jnp.sinh((u + skew) * jnp.exp(-log_tailweight))
    return x, log_tailweight + log_cosh(u) - 0.5 * jnp.log1p(x * x)


@dataclass(frozen=True)
class SinhArcsinhTransformer(Transformer):
    """Sinh-arcsinh map with conditioner-given skew and log tail weight (2 parameters), soft-clamped
    to ``(-skew_bound, skew_bound)`` and ``(-log_tailweight_bound, log_tailweight_bound)`` so that
    extreme conditioner inputs cannot overflow the ``sinh``.  Zeros give the identity."""

    skew_bound: float = 5.0
    log_tailweight_bound: float = 2.0

    def __post_init__(self):
        for name in ("skew_bound", "log_tailweight_bound"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number; got {value!r}")
            object.__setattr__(self, name, float(value))

    @property
    def num_params(self) -> int:
        return 2

    def unpack(self, params):
        """``(skew, log_tailweight)``."""
        return (soft_clamp(params[..., 0, :], self.skew_bound),
                soft_clamp(params[..., 1, :], self.log_tailweight_bound))

    def forward_with_info(self, x, params):
        return (*sinh_arcsinh(x, *self.unpack(params)), None)

    def inverse_with_info(self, y, params):
        return (*sinh_arcsinh_inverse(y, *self.unpack(params)), None)

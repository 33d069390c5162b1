"""Affine and shift transformers (closed form both ways).

``Affine``:  ``tau(x) = x * exp(s) + mu``, ``log tau'(x) = s``, inverse ``(y - mu) * exp(-s)``.
The conditioner gives ``(mu, r)`` per coordinate; the log-scale ``s`` comes from the raw ``r`` by
``scale=``:

- ``"exp"``: ``s = B tanh(r / B)`` (``B = log_scale_bound``), scale ``exp(s)`` in ``(e^-B, e^B)``;
- ``"softplus"``: ``s = B tanh(log softplus(r + log(e - 1)) / B)``: scale 1 at ``r = 0`` and
  ``~ softplus`` near it (growing linearly in ``r``, not exponentially), bounded the same way.

``Shift``: ``tau(x) = x + mu``, ``log tau'(x) = 0`` (NICE's additive coupling).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from .base import Transformer

SCALES = ("exp", "softplus")
_SOFTPLUS_ONE = 0.5413248546129181  # log(e - 1): softplus(r + _SOFTPLUS_ONE) = 1 at r = 0


def soft_clamp(raw, bound: float):
    """Smoothly bound a log-scale to ``(-bound, bound)``: ``bound * tanh(raw / bound)``."""
    return bound * jnp.tanh(raw / bound)


def log_softplus_scale(raw):
    """``log softplus(raw + log(e - 1))`` (0 at ``raw = 0``), without underflow for very negative raw.

    Below ``-20`` it uses ``log softplus(r) = r + O(e^r)``, exact in float32 and float64 alike.
    """
    r = raw + _SOFTPLUS_ONE
    return jnp.where(r > -20.0, jnp.log(jax.nn.softplus(jnp.maximum(r, -20.0))), r)


@dataclass(frozen=True)
class Affine(Transformer):
    """``tau(x) = x exp(s) + mu`` with a bounded log-scale (see the module docstring); 2 parameters."""

    scale: str = "exp"
    log_scale_bound: float = 5.0

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES} or None; got {self.scale!r}")
        if isinstance(self.log_scale_bound, bool) or not self.log_scale_bound > 0:
            raise ValueError(f"log_scale_bound must be positive; got {self.log_scale_bound}")
        object.__setattr__(self, "log_scale_bound", float(self.log_scale_bound))

    @property
    def num_params(self) -> int:
        return 2

    def unpack(self, params):
        """``(mu, s)``: the shift and the bounded log-scale."""
        raw = params[..., 1, :]
        raw = log_softplus_scale(raw) if self.scale == "softplus" else raw
        return params[..., 0, :], soft_clamp(raw, self.log_scale_bound)

    def forward_with_info(self, x, params):
        shift, log_scale = self.unpack(params)
        return x * jnp.exp(log_scale) + shift, log_scale, None

    def inverse_with_info(self, y, params):
        shift, log_scale = self.unpack(params)
        return (jnp.broadcast_to(y, shift.shape) - shift) * jnp.exp(-log_scale), log_scale, None


@dataclass(frozen=True)
class Shift(Transformer):
    """``tau(x) = x + mu``: volume preserving; 1 parameter."""

    @property
    def num_params(self) -> int:
        return 1

    def forward_with_info(self, x, params):
        y = x + params[..., 0, :]
        return y, jnp.zeros_like(y), None

    def inverse_with_info(self, y, params):
        x = y - params[..., 0, :]
        return x, jnp.zeros_like(x), None

"""Deep sigmoidal transformer (NAF-DSF, Huang et al. 2018): one pass forward, numerical inverse.

    ``tau(v) = logit(sum_k w_k sigmoid(a_k v + b_k))``

with ``a = 1e-3 + softplus(raw_slope + c)`` (raw 0 gives ``a ~ 1``) and ``w = softmax(raw_weight)``;
``3 K`` parameters per coordinate (``K`` slopes, ``K`` offsets ``b``, ``K`` weights).  ``tau`` is
strictly increasing and onto ``R`` with tail slopes ``min_k a_k``.  The inverse is a bracketed,
safeguarded Newton solve (:func:`~nf_ppl.roots.solve_increasing`) to ``atol + rtol |x|`` with
implicit-function gradients (:func:`~nf_ppl.roots.newton_correction`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from ..._checks import is_int
from ...roots import SolveInfo, check_solver_options, newton_correction, solve_increasing
from .base import Transformer

_SLOPE_SHIFT = math.log(math.expm1(1.0))  # softplus(0 + shift) = 1
_MIN_SLOPE = 1e-3


def sigmoidal_map(v, raw_slope, shift, raw_weight):
    """Deep sigmoidal map ``tau(v) = logit(sum_k w_k sigmoid(a_k v + b_k))`` and ``log tau'(v)``.

    Parameters have shape ``v.shape + (K,)``.  Computed in log space:
    ``log p = logsumexp(log w + log sigmoid(u))``, ``log(1 - p) = logsumexp(log w + log sigmoid(-u))``,
    ``tau = log p - log(1 - p)``, ``log tau' = logsumexp(log w + log a + log sigmoid(u) +
    log sigmoid(-u)) - log p - log(1 - p)``; finite for any ``|v|``.
    """
    a = _MIN_SLOPE + jax.nn.softplus(raw_slope + _SLOPE_SHIFT)
    log_w = jax.nn.log_softmax(raw_weight, axis=-1)
    u = a * v[..., None] + shift
    ls_pos, ls_neg = jax.nn.log_sigmoid(u), jax.nn.log_sigmoid(-u)
    log_p = jax.nn.logsumexp(log_w + ls_pos, axis=-1)
    log_q = jax.nn.logsumexp(log_w + ls_neg, axis=-1)
    log_dp = jax.nn.logsumexp(log_w + jnp.log(a) + ls_pos + ls_neg, axis=-1)
    return log_p - log_q, log_dp - log_p - log_q


def solve_monotone(fn, target, args, transformer):
    """``(x, f(x) at x, info)`` for ``fn(x, args) = (f(x), f'(x))`` increasing, solved with the
    transformer's solver options; exact gradients by one differentiable Newton step."""
    res = solve_increasing(fn, target, args, atol=transformer.atol, rtol=transformer.rtol,
                           max_iter=transformer.max_iter, max_expand=transformer.max_expand)
    return newton_correction(lambda t: fn(t, args), res.x, target)[0], res


@dataclass(frozen=True)
class DeepSigmoid(Transformer):
    """The deep sigmoidal map with ``num_components`` sigmoids (``3 K`` parameters); the inverse is
    numerical with solver options ``atol``, ``rtol`` (None: the dtype's default), ``max_iter`` and
    ``max_expand`` (see :mod:`nf_ppl.roots`).

    ``init_bias`` spreads the offsets ``b_k`` over ``[-1, 1]`` (so the components differ from the
    start) and starts the slopes where ``tau'(0) = 1``, so a layer starts near the identity in scale.
    """

    num_components: int = 8
    atol: float | None = None
    rtol: float | None = None
    max_iter: int = 100
    max_expand: int = 64

    inverse_is_numerical = True

    def __post_init__(self):
        k = self.num_components
        if not is_int(k) or k < 1:
            raise ValueError(f"num_components must be a positive int; got {k!r}")
        check_solver_options(self.atol, self.rtol, self.max_iter, self.max_expand)
        object.__setattr__(self, "num_components", int(k))
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else float(value))
        object.__setattr__(self, "max_iter", int(self.max_iter))
        object.__setattr__(self, "max_expand", int(self.max_expand))

    @property
    def num_params(self) -> int:
        return 3 * self.num_components

    def unpack(self, params):
        """``(raw_slope, shift, raw_weight)``, each ``(..., n, K)``."""
        k = self.num_components
        p = params.reshape(params.shape[:-2] + (3, k, params.shape[-1]))
        p = jnp.moveaxis(p, -1, -2)  # (..., 3, n, K)
        return p[..., 0, :, :], p[..., 1, :, :], p[..., 2, :, :]

    def init_bias(self, dtype):
        k = self.num_components
        offsets = jnp.linspace(-1.0, 1.0, k, dtype=dtype) if k > 1 else jnp.zeros(1, dtype)
        zero = jnp.zeros(k, dtype)
        log_slope0 = sigmoidal_map(jnp.zeros((), dtype), zero, offsets, zero)[1]
        a = (_MIN_SLOPE + jax.nn.softplus(_SLOPE_SHIFT)) * jnp.exp(-log_slope0)
        raw_slope = jnp.log(jnp.expm1(a - _MIN_SLOPE)) - _SLOPE_SHIFT
        return jnp.concatenate([jnp.full(k, raw_slope, dtype), offsets, zero])

    def forward_with_info(self, x, params):
        return (*sigmoidal_map(x, *self.unpack(params)), None)

    def inverse_with_info(self, y, params):
        args = self.unpack(params)

        def fn(t, a):
            value, log_d = sigmoidal_map(t, *a)
            return value, jnp.exp(log_d)

        x, res = solve_monotone(fn, y, args, self)
        value, log_d = sigmoidal_map(x, *args)
        residual = jnp.abs(value - y)
        info = SolveInfo(jnp.all(res.converged & jnp.isfinite(residual), axis=-1),
                         jnp.max(res.iterations, axis=-1), jnp.max(residual, axis=-1))
        return x, log_d, info

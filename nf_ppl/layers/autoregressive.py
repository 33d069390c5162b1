"""Masked affine autoregressive layers: MAF and IAF from one mechanism.

A MADE network gives, for each coordinate ``i``, a shift ``mu_i`` and a log-scale ``s_i`` that
depend only on the coordinates before ``i`` in its ordering of some vector ``v``.  The Jacobian
of the affine map below is triangular (in that ordering) with diagonal ``exp(s_i)``.

``mode="iaf"`` (inverse autoregressive flow, Kingma et al. 2016), conditioner reads the input:

    forward:  ``y_i = x_i * exp(s_i(x_<i)) + mu_i(x_<i)``          one pass
    inverse:  ``x_i = (y_i - mu_i(x_<i)) * exp(-s_i(x_<i))``       d sequential passes
    log|det J| = ``sum_i s_i(x_<i)``

``mode="maf"`` (masked autoregressive flow, Papamakarios et al. 2017), conditioner reads the output:

    forward:  ``y_i = x_i * exp(s_i(y_<i)) + mu_i(y_<i)``          d sequential passes
    inverse:  ``x_i = (y_i - mu_i(y_<i)) * exp(-s_i(y_<i))``       one pass
    log|det J| = ``sum_i s_i(y_<i)``                                one pass from y

So MAF evaluates densities (data -> noise) in one pass and samples in d passes, IAF samples in
one pass and scores its own samples from the forward pass's intermediates (the log-det).
The sequential direction runs ``d`` fixed-point sweeps ``v <- solve(target, MADE(v))``: after
sweep ``k`` the first ``k`` coordinates (in the ordering) are exact, so ``d`` sweeps are exact.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from ..nn import MADE
from .base import Bijector
from .coupling import soft_clamp

MODES = ("maf", "iaf")


class MaskedAffineAutoregressive(Bijector):
    """Affine autoregressive layer with a MADE conditioner; ``mode`` is ``"maf"`` or ``"iaf"``.

    ``MaskedAffineAutoregressive(key, dim, hidden_dims=(64, 64), mode="maf", ordering="natural",
    context_dim=0, log_scale_bound=5.0)`` or ``MaskedAffineAutoregressive.from_made(made, mode)``.
    The log-scale is soft-clamped to ``(-log_scale_bound, log_scale_bound)``.
    """

    param_names = ("made",)
    static_names = ("mode", "log_scale_bound", "context_dim")

    def __init__(self, key, dim: int, hidden_dims: Sequence[int] = (64, 64), *, mode: str = "maf",
                 ordering="natural", context_dim: int = 0, activation: str = "elu",
                 log_scale_bound: float = 5.0, dtype=None):
        made = MADE.init(key, dim, hidden_dims, 2, ordering=ordering, context_dim=context_dim,
                         activation=activation, dtype=dtype)
        self._set(made, mode, log_scale_bound)

    @classmethod
    def from_made(cls, made: MADE, mode: str = "maf", log_scale_bound: float = 5.0):
        if made.num_params != 2:
            raise ValueError(f"made must output 2 parameters per dimension (shift, log-scale); got {made.num_params}")
        obj = cls.__new__(cls)
        obj._set(made, mode, log_scale_bound)
        return obj

    def _set(self, made, mode, log_scale_bound):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if log_scale_bound <= 0:
            raise ValueError(f"log_scale_bound must be positive; got {log_scale_bound}")
        self.made, self.mode, self.log_scale_bound = made, mode, float(log_scale_bound)
        self.context_dim = made.context_dim

    @property
    def event_size(self):
        return self.made.dim

    def _shift_log_scale(self, v):
        ctx = self._context() if self.context_dim else None
        if ctx is not None:
            batch = jnp.broadcast_shapes(v.shape[:-1], ctx.shape[:-1])
            v = jnp.broadcast_to(v, batch + v.shape[-1:])
            ctx = jnp.broadcast_to(ctx, batch + ctx.shape[-1:])
        out = self.made(v, ctx)
        return out[..., 0, :], soft_clamp(out[..., 1, :], self.log_scale_bound)

    def _one_pass(self, v, target, solve_for_x):
        """Affine step using conditioner values computed from ``v``."""
        shift, log_scale = self._shift_log_scale(v)
        target = jnp.broadcast_to(target, shift.shape)
        if solve_for_x:
            return (target - shift) * jnp.exp(-log_scale), jnp.sum(log_scale, axis=-1)
        return target * jnp.exp(log_scale) + shift, jnp.sum(log_scale, axis=-1)

    def _sequential(self, target, solve_for_x):
        """Fixed point of ``v = step(target, MADE(v))`` by ``d`` sweeps (exact after d)."""
        init = self._one_pass(jnp.zeros_like(target), target, solve_for_x)

        def sweep(_, carry):
            return self._one_pass(carry[0], target, solve_for_x)

        return jax.lax.fori_loop(1, self.event_size, sweep, init)

    def forward_and_log_det(self, x):
        self._check_input(x)
        if self.mode == "iaf":
            return self._one_pass(x, x, solve_for_x=False)
        return self._sequential(x, solve_for_x=False)

    def inverse_and_log_det(self, y):
        self._check_input(y, "y")
        if self.mode == "iaf":
            return self._sequential(y, solve_for_x=True)
        return self._one_pass(y, y, solve_for_x=True)

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        if intermediates is not None:
            return intermediates
        v = x if self.mode == "iaf" else y
        return jnp.sum(self._shift_log_scale(v)[1], axis=-1)

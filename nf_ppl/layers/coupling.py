"""Coupling layers (NICE, RealNVP): transform one part of the vector conditioned on the other.

Split ``x`` by a binary mask into the conditioning part ``x_A`` (mask 1, copied unchanged) and
the transformed part ``x_B`` (mask 0).  A network reads ``x_A`` (and an optional context) and
outputs the parameters of an elementwise map of ``x_B``.  The Jacobian is block-triangular
with identity on ``A``, so ``log|det J|`` is the log-det of the elementwise map of ``B``, and
both directions are one pass.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from .._checks import check_mask
from ..nn import MLP
from .base import Bijector


def half_mask(dim: int) -> tuple[bool, ...]:
    """The default split: the first ``dim // 2`` coordinates condition the rest."""
    return tuple(i < dim // 2 for i in range(dim))


def soft_clamp(raw, bound: float):
    """Smoothly bound a log-scale to ``(-bound, bound)``: ``bound * tanh(raw / bound)``."""
    return bound * jnp.tanh(raw / bound)


class _Coupling(Bijector):
    """Shared split/merge logic; subclasses define how ``x_B`` is transformed."""

    param_names = ("net",)
    static_names = ("mask", "context_dim")
    num_params: int = 1

    def _setup(self, key, mask, hidden_dims, context_dim, activation, dtype):
        self.mask = check_mask(mask, None, "mask")
        self.context_dim = int(context_dim)
        n_in, n_out = sum(self.mask), len(self.mask) - sum(self.mask)
        self.net = MLP.init(key, n_in + self.context_dim, hidden_dims, self.num_params * n_out,
                            activation=activation, dtype=dtype)

    @property
    def event_size(self):
        return len(self.mask)

    @property
    def partition(self):
        """``(A, B)``: index arrays of the coordinates kept (mask True, the conditioner's input) and
        transformed (mask False)."""
        keep = np.flatnonzero(np.asarray(self.mask))
        change = np.flatnonzero(~np.asarray(self.mask))
        return keep, change

    def transformer_params(self, x):
        """The elementwise transformer's parameters for input ``x`` (full vectors, ``(..., dim)``),
        as the layer uses them: a tuple of ``(..., |B|)`` arrays (``(t, s)`` with ``s`` already
        soft-clamped for ``AffineCoupling``, ``(t,)`` for ``AdditiveCoupling``).  They depend on
        ``x_A`` only, so forward and inverse give the same values."""
        keep, _ = self.partition
        return self._transformer_params(self._params_for(jnp.asarray(x)[..., keep]))

    def _params_for(self, x_keep):
        inp = x_keep
        if self.context_dim:
            ctx = self._context()
            ctx = jnp.broadcast_to(ctx, x_keep.shape[:-1] + ctx.shape[-1:]) if ctx.ndim < x_keep.ndim else ctx
            x_keep = jnp.broadcast_to(x_keep, ctx.shape[:-1] + x_keep.shape[-1:])
            inp = jnp.concatenate([x_keep, ctx], axis=-1)
        out = self.net(inp)
        return out.reshape(out.shape[:-1] + (self.num_params, -1))

    def _merge(self, x_keep, z_change, keep, change):
        """Reassemble ``(x_A, z_B)`` into one vector: one concatenation and (unless the mask is a
        prefix split) one gather, cheaper than scattering into a zero vector."""
        batch = jnp.broadcast_shapes(x_keep.shape[:-1], z_change.shape[:-1])
        x_keep = jnp.broadcast_to(x_keep, batch + x_keep.shape[-1:])
        joined = jnp.concatenate([x_keep, z_change.astype(jnp.result_type(x_keep, z_change))], axis=-1)
        order = np.concatenate([keep, change])
        if np.array_equal(order, np.arange(len(order))):
            return joined
        return joined[..., np.argsort(order)]

    def _apply(self, x, inverse: bool):
        self._check_input(x, "y" if inverse else "x")
        keep, change = self.partition
        x_keep, x_change = x[..., keep], x[..., change]
        params = self._params_for(x_keep)
        x_change = jnp.broadcast_to(x_change, params.shape[:-2] + x_change.shape[-1:])
        z_change, log_det = self._elementwise(x_change, params, inverse)
        return self._merge(x_keep, z_change, keep, change), log_det

    def forward_and_log_det(self, x):
        return self._apply(x, inverse=False)

    def inverse_and_log_det(self, y):
        return self._apply(y, inverse=True)


class AffineCoupling(_Coupling):
    """Affine coupling layer (RealNVP, Dinh et al. 2017) with any binary mask.

    With ``(s, t) = NN(x_A, context)`` and ``s`` soft-clamped to ``(-B, B)``:

    forward:  ``y_A = x_A``,  ``y_B = x_B * exp(s) + t``          (one pass)
    inverse:  ``x_A = y_A``,  ``x_B = (y_B - t) * exp(-s)``       (one pass; ``s, t`` from ``y_A = x_A``)
    log|det J| = ``sum_B s(x_A)``

    ``AffineCoupling(key, dim, mask=None, hidden_dims=(64, 64), context_dim=0,
    log_scale_bound=5.0)``; the default mask conditions on the first half.
    """

    static_names = _Coupling.static_names + ("log_scale_bound",)
    num_params = 2

    def __init__(self, key, dim: int, mask=None, hidden_dims: Sequence[int] = (64, 64), *,
                 context_dim: int = 0, activation: str = "elu", log_scale_bound: float = 5.0, dtype=None):
        if log_scale_bound <= 0:
            raise ValueError(f"log_scale_bound must be positive; got {log_scale_bound}")
        self.log_scale_bound = float(log_scale_bound)
        mask = half_mask(dim) if mask is None else check_mask(mask, dim, "mask")
        self._setup(key, mask, hidden_dims, context_dim, activation, dtype)

    def _transformer_params(self, params):
        return params[..., 0, :], soft_clamp(params[..., 1, :], self.log_scale_bound)

    def _elementwise(self, x_change, params, inverse):
        shift, log_scale = self._transformer_params(params)
        if inverse:
            z = (x_change - shift) * jnp.exp(-log_scale)
        else:
            z = x_change * jnp.exp(log_scale) + shift
        return z, jnp.sum(log_scale, axis=-1)


class AdditiveCoupling(_Coupling):
    """Additive coupling layer (NICE, Dinh et al. 2015): volume preserving.

    forward:  ``y_A = x_A``,  ``y_B = x_B + t(x_A)``     (one pass)
    inverse:  ``x_B = y_B - t(y_A)``                      (one pass)
    log|det J| = 0
    """

    num_params = 1

    def __init__(self, key, dim: int, mask=None, hidden_dims: Sequence[int] = (64, 64), *,
                 context_dim: int = 0, activation: str = "elu", dtype=None):
        mask = half_mask(dim) if mask is None else check_mask(mask, dim, "mask")
        self._setup(key, mask, hidden_dims, context_dim, activation, dtype)

    def _transformer_params(self, params):
        return (params[..., 0, :],)

    def _elementwise(self, x_change, params, inverse):
        (shift,) = self._transformer_params(params)
        z = x_change - shift if inverse else x_change + shift
        return z, jnp.zeros(z.shape[:-1], z.dtype)

"""Coupling layers (NICE, RealNVP, spline couplings): transform one part of the vector conditioned on the other.

Split ``x`` by a binary mask into the conditioning part ``x_A`` (mask 1, copied unchanged) and
the transformed part ``x_B`` (mask 0).  A network reads ``x_A`` (and an optional context) and
outputs the unconstrained parameters ``theta(x_A)`` of an elementwise transformer ``tau`` (any
:class:`~nf_ppl.layers.transformers.Transformer`) applied to each coordinate of ``x_B``:

    forward:  ``y_A = x_A``,  ``y_B = tau(x_B; theta(x_A))``          one pass
    inverse:  ``x_A = y_A``,  ``x_B = tau^{-1}(y_B; theta(y_A))``     one pass (numerical if tau's inverse is)
    log|det J| = ``sum_B log tau'(x_B; theta(x_A))``

The Jacobian is block-triangular with identity on ``A``.  :class:`Coupling` is the layer for any
transformer; :class:`AffineCoupling` (``Affine``), :class:`AdditiveCoupling` (``Shift``) and
:class:`~nf_ppl.layers.SplineCoupling` (``RQSpline``) are it with their transformer fixed and their
own constructors.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from .._checks import check_mask
from ..nn import MLP
from .base import KeyedInit
from .conditioned import TransformerLayer, with_init_bias
from .transformers import Affine, Shift, check_transformer
from .transformers.affine import soft_clamp  # noqa: F401  (re-exported: nf_ppl.layers.coupling.soft_clamp)


def half_mask(dim: int) -> tuple[bool, ...]:
    """The default split: the first ``dim // 2`` coordinates condition the rest."""
    return tuple(i < dim // 2 for i in range(dim))


def coupling_net(key, mask, transformer, hidden_dims, context_dim, activation, dtype, out_scale=0.01,
                 weight_init="normal"):
    """The conditioner MLP of a coupling: ``|A| + context_dim`` inputs, ``num_params * |B|`` outputs
    (parameter-major), its last bias offset by the transformer's ``init_bias``; ``weight_init`` is
    ``"normal"`` or ``"uniform"`` (:meth:`nf_ppl.nn.MLP.init`)."""
    n_in, n_out = sum(mask), len(mask) - sum(mask)
    net = MLP.init(key, n_in + int(context_dim), hidden_dims, transformer.num_params * n_out,
                   activation=activation, out_scale=out_scale, weight_init=weight_init, dtype=dtype)
    net.biases[-1] = with_init_bias(net.biases[-1], transformer, n_out)
    return net


class Coupling(TransformerLayer):
    """Coupling layer with any binary mask, MLP conditioner and elementwise transformer (module docstring).

    ``Coupling(mask, net, transformer, context_dim=0)`` with an :class:`~nf_ppl.nn.MLP` from
    ``|A| + context_dim`` inputs to ``transformer.num_params * |B|`` outputs, or
    ``Coupling.init(key, dim, transformer, mask=None, hidden_dims=(64, 64), context_dim=0,
    activation="elu", out_scale=0.01, weight_init="normal")`` (the default mask conditions on the first
    half; a small ``out_scale`` starts the layer near the transformer at its ``init_bias``;
    ``weight_init="uniform"`` draws the weights uniformly in ``+-1/sqrt(fan_in)``).
    """

    param_names = ("net",)
    static_names = ("mask", "transformer", "context_dim")

    def __init__(self, mask, net: MLP, transformer, context_dim: int = 0):
        self.transformer = check_transformer(transformer)
        self.mask = check_mask(mask, None, "mask")
        self.context_dim = int(context_dim)
        self.net = net

    @classmethod
    def init(cls, key, dim: int, transformer, mask=None, hidden_dims: Sequence[int] = (64, 64), *,
             context_dim: int = 0, activation: str = "elu", out_scale: float = 0.01, weight_init: str = "normal",
             dtype=None):
        transformer = check_transformer(transformer)
        mask = half_mask(dim) if mask is None else check_mask(mask, dim, "mask")
        net = coupling_net(key, mask, transformer, hidden_dims, context_dim, activation, dtype, out_scale,
                           weight_init)
        return cls(mask, net, transformer, context_dim)

    def _setup(self, key, mask, hidden_dims, context_dim, activation, dtype):
        """For the fixed-transformer subclasses: mask, context size and network."""
        self.mask = check_mask(mask, None, "mask")
        self.context_dim = int(context_dim)
        self.net = coupling_net(key, self.mask, self.transformer, hidden_dims, context_dim, activation, dtype)

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

    def conditioner(self, x):
        """The network's raw output ``(..., num_params, |B|)`` for full vectors ``x``; it reads ``x_A`` only,
        so forward and inverse give the same values."""
        return self._params_for(x[..., self.partition[0]])

    def _params_for(self, x_keep):
        out = self.net(*self._with_context(x_keep))
        return out.reshape(out.shape[:-1] + (self.transformer.num_params, -1))

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

    def _is_numerical(self, inverse):
        return self.transformer.inverse_is_numerical if inverse else self.transformer.forward_is_numerical

    def _compute(self, x, inverse):
        keep, change = self.partition
        x_keep, x_change = x[..., keep], x[..., change]
        params = self._params_for(x_keep)
        x_change = jnp.broadcast_to(x_change, params.shape[:-2] + x_change.shape[-1:])
        apply = self.transformer.inverse_with_info if inverse else self.transformer.forward_with_info
        z_change, log_d, info = apply(x_change, params)
        return self._merge(x_keep, z_change, keep, change), jnp.sum(log_d, axis=-1), info


class AffineCoupling(KeyedInit, Coupling):
    """Affine coupling layer (RealNVP, Dinh et al. 2017) with any binary mask.

    With ``(s, t) = NN(x_A, context)`` and ``s`` soft-clamped to ``(-B, B)``:

    forward:  ``y_A = x_A``,  ``y_B = x_B * exp(s) + t``          (one pass)
    inverse:  ``x_A = y_A``,  ``x_B = (y_B - t) * exp(-s)``       (one pass; ``s, t`` from ``y_A = x_A``)
    log|det J| = ``sum_B s(x_A)``

    ``AffineCoupling(key, dim, mask=None, hidden_dims=(64, 64), context_dim=0,
    log_scale_bound=5.0)``; the default mask conditions on the first half.  The transformer is
    ``Affine("exp", log_scale_bound)``.
    """

    static_names = ("mask", "context_dim", "log_scale_bound")

    def __init__(self, key, dim: int, mask=None, hidden_dims: Sequence[int] = (64, 64), *,
                 context_dim: int = 0, activation: str = "elu", log_scale_bound: float = 5.0, dtype=None):
        self.log_scale_bound = Affine("exp", log_scale_bound).log_scale_bound
        mask = half_mask(dim) if mask is None else check_mask(mask, dim, "mask")
        self._setup(key, mask, hidden_dims, context_dim, activation, dtype)

    @property
    def transformer(self):
        return Affine("exp", self.log_scale_bound)


class AdditiveCoupling(KeyedInit, Coupling):
    """Additive coupling layer (NICE, Dinh et al. 2015): volume preserving.

    forward:  ``y_A = x_A``,  ``y_B = x_B + t(x_A)``     (one pass)
    inverse:  ``x_B = y_B - t(y_A)``                      (one pass)
    log|det J| = 0.  The transformer is ``Shift()``.
    """

    static_names = ("mask", "context_dim")

    def __init__(self, key, dim: int, mask=None, hidden_dims: Sequence[int] = (64, 64), *,
                 context_dim: int = 0, activation: str = "elu", dtype=None):
        mask = half_mask(dim) if mask is None else check_mask(mask, dim, "mask")
        self._setup(key, mask, hidden_dims, context_dim, activation, dtype)

    @property
    def transformer(self):
        return Shift()

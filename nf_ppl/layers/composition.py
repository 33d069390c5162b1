"""Composition of layers: a Python-level ``Chain`` and a ``lax.scan`` ``Stack``.

For ``f = f_L o ... o f_1`` the chain rule gives ``log|det J_f(x)| = sum_l log|det J_{f_l}(x_{l-1})|``
with ``x_l = f_l(x_{l-1})``.  Forward runs the layers in order, inverse in reverse order; each
direction is one pass or sequential exactly when its layers are.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints

from .._checks import check_permutation
from .base import Bijector, _ev, data_init, forward_and_log_det, inverse_and_log_det


def _vector_constraint(constraint):
    """Constraints of composite layers are at least per vector (elementwise layers are lifted)."""
    return constraint if constraint.event_dim >= 1 else constraints.independent(constraint, 1)


def _bind(layer, context):
    """Give a conditional child layer the context of its parent."""
    if context is not None and getattr(layer, "context_dim", 0):
        return layer.condition(context)
    return layer


class Chain(Bijector):
    """Composition of any NumPyro transforms acting on vectors, applied first to last.

    ``Chain([f1, f2, f3])(x) == f3(f2(f1(x)))``; the log-det sums the layers' log-dets (per
    vector).  A context bound to the chain is passed to every conditional layer.
    """

    param_names = ("layers",)

    def __init__(self, layers: Sequence):
        layers = list(layers)
        if not layers:
            raise ValueError("Chain needs at least one layer")
        self.layers = layers

    @property
    def context_dim(self):
        return max((getattr(l, "context_dim", 0) for l in self.layers), default=0)

    @property
    def event_dim(self):
        """Rank of one event: 1 for vectors (elementwise layers are summed), 3 for images."""
        return max(1, *(_ev(l) for l in self.layers))

    @property
    def domain(self):
        return _vector_constraint(self.layers[0].domain)

    @property
    def codomain(self):
        return _vector_constraint(self.layers[-1].codomain)

    @property
    def event_size(self):
        for layer in self.layers:
            size = getattr(layer, "event_size", None)
            if size is not None:
                return size
        return None

    def _bound(self):
        return [_bind(l, self.context) for l in self.layers]

    def forward_and_log_det(self, x):
        total = 0.0
        for layer in self._bound():
            x, log_det = forward_and_log_det(layer, x)
            total = total + log_det
        return x, total

    def inverse_and_log_det(self, y):
        total = 0.0
        for layer in reversed(self._bound()):
            y, log_det = inverse_and_log_det(layer, y)
            total = total + log_det
        return y, total

    def data_init(self, y):
        """Initialise the layers from the data side (last to first), each from what reaches it."""
        layers = list(self.layers)
        for i in reversed(range(len(layers))):
            layers[i], y = data_init(layers[i], y)
        return self.replace(layers=layers), y


class Stack(Bijector):
    """``num_layers`` copies of one layer structure with stacked parameters, run by ``lax.scan``.

    ``Stack.from_layers([f_1, ..., f_L], permutations=None)`` stacks the leaves of layers that
    share a pytree structure (same type and static configuration).  Layer ``l`` is followed by
    the static permutation ``permutations[l]`` (``y <- y[perm]``) if given, e.g. reversals between
    autoregressive layers.  Compile time does not grow with ``L``.  The math is that of
    :class:`Chain`: forward applies ``perm_l o f_l`` for ``l = 1..L``, inverse undoes them in
    reverse, ``log|det J|`` is the sum of the layers' log-dets (permutations add zero).
    """

    param_names = ("layer",)
    static_names = ("num_layers", "permutations")

    def __init__(self, layer, num_layers: int, permutations=None):
        self.layer, self.num_layers = layer, int(num_layers)
        if permutations is not None:
            permutations = tuple(check_permutation(p, None, "permutations[l]") for p in permutations)
            if len(permutations) != self.num_layers:
                raise ValueError(f"permutations must have one entry per layer ({self.num_layers}); got {len(permutations)}")
        self.permutations = permutations

    @classmethod
    def from_layers(cls, layers: Sequence, permutations=None):
        layers = list(layers)
        structures = {jax.tree_util.tree_structure(l) for l in layers}
        if len(structures) != 1:
            raise ValueError("Stack.from_layers needs layers of one pytree structure (same type and settings)")
        stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *layers)
        return cls(stacked, len(layers), permutations)

    def unstack(self) -> list:
        """The individual layers (without the permutations)."""
        return [jax.tree_util.tree_map(lambda a: a[i], self.layer) for i in range(self.num_layers)]

    @property
    def context_dim(self):
        return getattr(self.layer, "context_dim", 0)

    @property
    def event_dim(self):
        return max(1, _ev(self.layer))

    @property
    def event_size(self):
        if self.permutations is not None:
            return len(self.permutations[0])
        return getattr(self.layer, "event_size", None)

    @property
    def domain(self):
        return _vector_constraint(self.layer.domain)

    @property
    def codomain(self):
        return _vector_constraint(self.layer.codomain)

    def _scan_inputs(self):
        """Leaves, treedef and ``(permute, unpermute)``: functions of ``(z, perm)`` and, when the layers'
        permutations differ, the stacked ``(perms, inverses)`` to scan over (else None).

        When every layer has the same permutation (the builders' reversals) it is applied as a
        constant: a reversal is ``jnp.flip``, cheaper than a gather with scanned indices (about a
        quarter of a 5-layer MAF's ``log_prob`` at d = 64 on a CPU).
        """
        leaves, treedef = jax.tree_util.tree_flatten(self.layer)
        if self.permutations is None:
            return leaves, treedef, (None, None), None
        if len(set(self.permutations)) == 1:
            perm = np.asarray(self.permutations[0])
            inv = np.argsort(perm)
            return leaves, treedef, (_static_permutation(perm), _static_permutation(inv)), None
        perms = jnp.asarray(self.permutations, dtype=jnp.int32)
        scanned = (lambda z, p: jnp.take(z, p[0], axis=-1), lambda z, p: jnp.take(z, p[1], axis=-1))
        return leaves, treedef, scanned, (perms, jnp.argsort(perms, axis=-1))

    def forward_and_log_det(self, x):
        self._check_input(x)
        leaves, treedef, (permute, _), perms = self._scan_inputs()

        def body(carry, xs):
            z, total = carry
            layer_leaves, perm = xs
            layer = _bind(jax.tree_util.tree_unflatten(treedef, layer_leaves), self.context)
            z, log_det = forward_and_log_det(layer, z)
            if permute is not None:
                z = permute(z, perm)
            return (z, total + log_det), None

        x0, ld0 = self._initial(x, leaves)
        (y, total), _ = jax.lax.scan(body, (x0, ld0), (leaves, perms))
        return y, total

    def inverse_and_log_det(self, y):
        self._check_input(y, "y")
        leaves, treedef, (_, unpermute), perms = self._scan_inputs()

        def body(carry, xs):
            z, total = carry
            layer_leaves, perm = xs
            if unpermute is not None:
                z = unpermute(z, perm)
            layer = _bind(jax.tree_util.tree_unflatten(treedef, layer_leaves), self.context)
            z, log_det = inverse_and_log_det(layer, z)
            return (z, total + log_det), None

        y0, ld0 = self._initial(y, leaves)
        (x, total), _ = jax.lax.scan(body, (y0, ld0), (leaves, perms), reverse=True)
        return x, total

    def data_init(self, y):
        """Initialise the stacked layers from the data side (last to first), undoing each layer's
        permutation before it, then stack them again."""
        layers = self.unstack()
        for i in reversed(range(len(layers))):
            if self.permutations is not None:
                y = y[..., np.argsort(np.asarray(self.permutations[i]))]
            layers[i], y = data_init(layers[i], y)
        return type(self).from_layers(layers, self.permutations), y

    def _initial(self, v, leaves):
        """Scan carries need their final shape and dtype up front (a context may add batch axes)."""
        batch = v.shape[: v.ndim - self.event_dim]
        if self.context is not None and self.context_dim:
            batch = jnp.broadcast_shapes(batch, self.context.shape[:-1])
        floats = [leaf for leaf in leaves if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)]
        dtype = jnp.result_type(v, *floats) if floats else jnp.result_type(v, float)
        v = jnp.broadcast_to(v, batch + v.shape[v.ndim - self.event_dim:]).astype(dtype)
        return v, jnp.zeros(batch, dtype)


def _static_permutation(perm: np.ndarray):
    """``z -> z[..., perm]`` for a constant permutation (``jnp.flip`` for a reversal); ignores its second argument."""
    if np.array_equal(perm, np.arange(len(perm))[::-1]):
        return lambda z, _: jnp.flip(z, axis=-1)
    return lambda z, _: jnp.take(z, jnp.asarray(perm), axis=-1)

"""Conditioner networks in plain JAX: a dense MLP and MADE (masked autoencoder for density estimation).

Both are pytrees whose leaves are the weight and bias arrays; structure (sizes, degrees,
activation) is static auxiliary data, so ``jit``/``grad``/``vmap`` see them as plain values.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import register_pytree_node_class

from .host_random import host_rng, on_device

ACTIVATIONS = {
    "elu": jax.nn.elu,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
}


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {name!r}")
    return ACTIVATIONS[name]


WEIGHT_INITS = ("normal", "uniform")


def check_weight_init(weight_init) -> str:
    """``"normal"`` or ``"uniform"``, or a ValueError naming ``weight_init``."""
    if weight_init not in WEIGHT_INITS:
        raise ValueError(f"weight_init must be one of {WEIGHT_INITS}; got {weight_init!r}")
    return weight_init


def _dense_init(key, fan_in: int, fan_out: int, dtype, out_scale: float | None = None, weight_init: str = "normal"):
    """Weights ``N(0, 1/fan_in)`` (``weight_init="normal"``) or ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    (``"uniform"``, variance ``1/(3 fan_in)``: PyTorch's, equinox's and so flowjax's); biases
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

    Random hidden biases spread the kinks of ReLU-like units: with zero biases every unit of a
    conditioner that reads one coordinate bends at the same point, which measurably slowed
    maximum-likelihood fits.  The output layer (``out_scale`` given) has its weights scaled by
    ``out_scale`` and zero biases, so a layer starts close to a chosen map (the identity).
    """
    lim = float(1.0 / np.sqrt(max(fan_in, 1)))  # a Python float keeps the requested dtype
    rng = host_rng(key)  # drawn on the host where the key is concrete (nf_ppl/host_random.py)
    if rng is None:
        return _dense_init_traced(key, fan_in, fan_out, dtype, out_scale, weight_init, lim)
    w = rng.uniform(-lim, lim, (fan_out, fan_in)) if weight_init == "uniform" else lim * rng.standard_normal((fan_out, fan_in))
    b = rng.uniform(-lim, lim, fan_out)
    if out_scale is not None:
        w, b = float(out_scale) * w, np.zeros(fan_out)
    return on_device(w, dtype), on_device(b, dtype)


def _dense_init_traced(key, fan_in, fan_out, dtype, out_scale, weight_init, lim):
    """:func:`_dense_init` for a traced key: the same distributions, drawn by ``jax.random``."""
    k_w, k_b = jax.random.split(key)
    if weight_init == "uniform":  # checked by MLP.init / MADE.init, the callers
        w = jax.random.uniform(k_w, (fan_out, fan_in), dtype, -lim, lim)
    else:
        w = lim * jax.random.normal(k_w, (fan_out, fan_in), dtype)
    if out_scale is not None:
        return float(out_scale) * w, jnp.zeros(fan_out, dtype)
    return w, jax.random.uniform(k_b, (fan_out,), dtype, -lim, lim)


def _default_dtype(dtype):
    return dtype or jnp.zeros(()).dtype


def check_input_bound(bound, name: str = "input_bound"):
    """``None`` or a positive finite float, or a ValueError naming ``name``."""
    if bound is None:
        return None
    if isinstance(bound, bool) or not isinstance(bound, (int, float, np.integer, np.floating)) \
            or not np.isfinite(bound) or bound <= 0:
        raise ValueError(f"{name} must be a positive number or None; got {bound!r}")
    return float(bound)


def bound_inputs(x, bound):
    """``B tanh(x / B)`` for ``bound = B`` (``x`` itself for None): about ``x`` where ``|x|`` is well
    below ``B``, never beyond ``+-B``."""
    return x if bound is None else bound * jnp.tanh(x / bound)


@register_pytree_node_class
class MLP:
    """Dense network ``h -> act(W h + b)`` with a linear last layer.

    ``MLP.init(key, in_dim, hidden_dims, out_dim)``; ``mlp(x)`` maps (..., in_dim) to (..., out_dim),
    ``mlp(x, context)`` reads ``concat(x, context)``.  The last layer starts small (``out_scale``) so a
    conditioner starts near a constant map.  With ``input_bound = B`` (static; ``with_input_bound``)
    the network reads ``B tanh(x / B)`` instead of ``x`` (the context is read as it is): its outputs
    stay within what it gives on the box ``[-B, B]``, however far ``x`` lies outside the data it was
    trained on.
    """

    def __init__(self, weights, biases, activation: str = "elu", input_bound: float | None = None):
        self.weights, self.biases, self.activation = list(weights), list(biases), activation
        self.input_bound = check_input_bound(input_bound)

    @classmethod
    def init(cls, key, in_dim: int, hidden_dims: Sequence[int], out_dim: int, *,
             activation: str = "elu", out_scale: float = 0.01, weight_init: str = "normal", dtype=None):
        _activation(activation)
        check_weight_init(weight_init)
        dtype = _default_dtype(dtype)
        sizes = [in_dim, *hidden_dims, out_dim]
        keys = jax.random.split(key, len(sizes) - 1)
        layers = [
            _dense_init(k, a, b, dtype, out_scale if i == len(sizes) - 2 else None, weight_init)
            for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:]))
        ]
        return cls([w for w, _ in layers], [b for _, b in layers], activation)

    def with_input_bound(self, bound: float | None) -> "MLP":
        """The same network reading ``bound * tanh(x / bound)`` (``None``: ``x``)."""
        return type(self)(self.weights, self.biases, self.activation, bound)

    def __call__(self, x, context=None):
        act = _activation(self.activation)
        h = bound_inputs(x, self.input_bound)
        if context is not None:
            h = jnp.concatenate([h, context], axis=-1)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            if i < len(self.weights) - 1:
                h = act(h)
        return h

    child_names = ("weights", "biases")  # pytree children, for messages

    def tree_flatten(self):  # a bound joins the static data only when set, so unbounded structures are unchanged
        aux = self.activation if self.input_bound is None else (self.activation, self.input_bound)
        return (self.weights, self.biases), aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        activation, bound = (aux, None) if isinstance(aux, str) else aux
        return cls(children[0], children[1], activation, bound)


def made_degrees(dim: int, hidden_dims: Sequence[int], ordering, conditional: bool = False) -> tuple[tuple[int, ...], ...]:
    """Degrees of the input and hidden units of a MADE.

    Input ``i`` gets degree ``ordering.index(i) + 1`` (its position in the autoregressive order).
    Hidden units cycle through degrees ``1..dim-1``, or ``0..dim-1`` for a conditional MADE (a
    unit of degree 0 sees only the context and biases, so even the first output in the ordering
    depends non-linearly on the context).  Output ``i`` may see hidden units of degree
    ``< degree(i)``, so it depends exactly on the inputs that precede ``i`` in the ordering.
    """
    position = np.empty(dim, dtype=int)
    position[np.asarray(ordering)] = np.arange(dim)
    degrees = [tuple(int(p) + 1 for p in position)]
    low = 0 if conditional or dim == 1 else 1
    span = dim - low
    for size in hidden_dims:
        degrees.append(tuple(int(low + k % span) for k in range(size)))
    return tuple(degrees)


def resolve_ordering(ordering, dim: int, key=None) -> tuple[int, ...]:
    """Turn ``"natural" | "reversed" | "random" | sequence`` into a tuple permutation of 0..dim-1."""
    from ._checks import check_permutation

    if isinstance(ordering, str):
        if ordering == "natural":
            return tuple(range(dim))
        if ordering in ("reversed", "reverse"):
            return tuple(range(dim - 1, -1, -1))
        if ordering == "random":
            if key is None:
                raise ValueError("ordering='random' needs a PRNG key")
            return tuple(int(i) for i in jax.random.permutation(key, dim))
        raise ValueError(f"ordering must be 'natural', 'reversed', 'random' or a permutation; got {ordering!r}")
    return check_permutation(ordering, dim, "ordering")


@register_pytree_node_class
class MADE:
    """Masked autoencoder for distribution estimation (Germain et al., 2015).

    Maps ``x`` of shape (..., dim) (and an optional context of shape (..., context_dim)) to
    outputs of shape (..., num_params, dim) such that ``out[..., k, i]`` depends only on the
    inputs ``x_j`` with ``j`` before ``i`` in ``ordering`` (and on the context).  The
    autoregressive property is enforced by binary masks built from unit degrees
    (:func:`made_degrees`); the masks are recomputed from the static degrees, never trained.

    Build with ``MADE.init(key, dim, hidden_dims, num_params=2, ordering="natural", context_dim=0)``.
    Every hidden layer needs at least ``dim - 1`` units (``dim`` with a context), otherwise some
    output could not see all of its predecessors (a ``ValueError`` says so).  ``input_bound`` as in
    :class:`MLP`: the network reads ``B tanh(x / B)`` (elementwise, so the masks still hold), the
    context as it is.
    """

    def __init__(self, weights, biases, context_weight, degrees, num_params: int, activation: str,
                 input_bound: float | None = None):
        self.weights, self.biases = list(weights), list(biases)
        self.context_weight = context_weight
        self.degrees, self.num_params, self.activation = degrees, num_params, activation
        self.input_bound = check_input_bound(input_bound)

    @classmethod
    def init(cls, key, dim: int, hidden_dims: Sequence[int] = (64, 64), num_params: int = 2, *,
             ordering="natural", context_dim: int = 0, activation: str = "elu",
             out_scale: float = 0.01, weight_init: str = "normal", dtype=None):
        _activation(activation)
        check_weight_init(weight_init)
        hidden_dims = tuple(int(h) for h in hidden_dims)
        if dim < 1:
            raise ValueError(f"dim must be >= 1; got {dim}")
        if num_params < 1:
            raise ValueError(f"num_params must be >= 1; got {num_params}")
        needed = dim if context_dim else dim - 1
        if any(h < needed for h in hidden_dims):
            what = "dim = " if context_dim else "dim - 1 = "
            raise ValueError(
                f"hidden_dims={hidden_dims} too small for dim={dim}: every hidden layer needs at least "
                f"{what}{needed} units so each output can depend on all its predecessors"
                + (" and on the context" if context_dim else "")
            )
        dtype = _default_dtype(dtype)
        k_order, k_ctx, *keys = jax.random.split(key, len(hidden_dims) + 3)
        degrees = made_degrees(dim, hidden_dims, resolve_ordering(ordering, dim, k_order), bool(context_dim))
        sizes = [dim, *hidden_dims, dim * num_params]
        layers = [
            _dense_init(k, a, b, dtype, out_scale if i == len(sizes) - 2 else None, weight_init)
            for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:]))
        ]
        first_out = sizes[1]
        ctx_w = None
        if context_dim:
            ctx_w = _dense_init(k_ctx, context_dim, first_out, dtype, weight_init=weight_init)[0]
        return cls([w for w, _ in layers], [b for _, b in layers], ctx_w, degrees, num_params, activation)

    @property
    def dim(self) -> int:
        return len(self.degrees[0])

    @property
    def context_dim(self) -> int:
        return 0 if self.context_weight is None else self.context_weight.shape[-1]

    @property
    def ordering(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.argsort(self.degrees[0]))

    def masks(self) -> list[np.ndarray]:
        """Binary masks, one per weight matrix, shaped like the weights (out, in)."""
        degs = [np.asarray(d) for d in self.degrees]
        masks = [(d_out[:, None] >= d_in[None, :]) for d_in, d_out in zip(degs[:-1], degs[1:])]
        out_deg = np.tile(degs[0], self.num_params)
        masks.append(out_deg[:, None] > degs[-1][None, :])
        return [m.astype(np.float32) for m in masks]

    def with_input_bound(self, bound: float | None) -> "MADE":
        """The same network reading ``bound * tanh(x / bound)`` (``None``: ``x``)."""
        return type(self)(self.weights, self.biases, self.context_weight, self.degrees, self.num_params,
                          self.activation, bound)

    def __call__(self, x, context=None):
        act = _activation(self.activation)
        h = bound_inputs(x, self.input_bound)
        n = len(self.weights)
        for i, (w, b, m) in enumerate(zip(self.weights, self.biases, self.masks())):
            h = h @ (w * m.astype(w.dtype)).T + b
            if i == 0 and self.context_weight is not None:
                h = h + context @ self.context_weight.T
            if i < n - 1:
                h = act(h)
        return h.reshape(h.shape[:-1] + (self.num_params, self.dim))

    child_names = ("weights", "biases", "context_weight")  # pytree children, for messages

    def tree_flatten(self):  # a bound joins the static data only when set, so unbounded structures are unchanged
        aux = (self.degrees, self.num_params, self.activation)
        return (self.weights, self.biases, self.context_weight), aux + (() if self.input_bound is None else (self.input_bound,))

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)

"""Glow (Kingma & Dhariwal, 2018): a multi-scale flow for images, plus dequantisation helpers.

``glow(key, (C, H, W), num_levels=L, num_steps=K)`` returns a :class:`~nf_ppl.flow.Flow` with
event shape ``(C, H, W)`` over a standard normal base of the same shape.  In the density
(data -> noise) direction, level ``l`` squeezes the image (``(C, H, W) -> (4C, H/2, W/2)``), runs
``K`` steps of flow (ActNorm, invertible 1x1 convolution, affine coupling), and, except at the
last level, factors out half of the channels straight to the base before the next level.  The
whole is one bijection of the ``(C, H, W)`` tensor (each level unsqueezes back), so the base
needs no bookkeeping of the factored-out pieces.  Sampling runs the same layers forward.

Discrete data (pixels in ``{0, ..., K-1}``) need dequantisation before a continuous density
applies: :func:`uniform_dequantize` gives ``y = (x + u) / K`` with ``u ~ U[0, 1)^D``;
:class:`VariationalDequantizer` learns ``q(u | x)`` (a small conditional flow).  With
``log p(y)`` from the flow, :func:`bits_per_dim` turns ``log p(y)`` (minus ``log q(u|x)`` for
variational dequantisation) into bits per dimension of the discrete data, which upper-bounds
``-log2 P(x) / D`` in expectation.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import register_pytree_node_class

from ._checks import is_concrete
from .flow import Flow
from .layers.base import forward_and_log_det
from .layers.image import (ImageActNorm, ImageAffineCoupling, ImageChain, ImageStack, InvConv1x1, FactorOut,
                           Squeeze, Unsqueeze, _positive_int, check_image, check_image_shape, host_rng, split_key)


def _level_perms(key, image_shape, num_levels, permutation):
    """Static channel permutations of the 1x1 convolutions, one per level (shared by its steps so
    they can be stacked), drawn on the host from the key."""
    c = image_shape[0]
    rng = host_rng(key)
    perms = []
    for _ in range(num_levels):
        c *= 4
        if permutation == "random":
            perms.append(tuple(int(i) for i in rng.permutation(c)))
        else:
            perms.append(permutation)
        c //= 2
    return tuple(perms)


def _level(key, shape, level, num_levels, num_steps, hidden_channels, perms, log_scale_bound, activation,
           scan, dtype):
    """Level ``level`` of ``num_levels`` acting on images of ``shape`` (forward = base -> data)."""
    c, h, w = shape
    sq = (4 * c, h // 2, w // 2)
    k_steps, k_inner = split_key(key, 2)
    level_perm = perms[level - 1]

    def step(k):
        k1, k2 = split_key(k, 2)
        # density direction: actnorm -> 1x1 conv -> coupling, so forward runs them in reverse
        return ImageChain([
            ImageAffineCoupling(k1, sq, hidden_channels, log_scale_bound=log_scale_bound, activation=activation,
                                dtype=dtype),
            InvConv1x1.init(k2, sq, perm=level_perm, dtype=dtype),
            ImageActNorm.init(sq, dtype),
        ])

    steps = [step(k) for k in split_key(k_steps, num_steps)]
    body = ImageStack.from_layers(steps) if scan else ImageChain(steps)
    layers = [Squeeze(shape)]
    if level < num_levels:
        inner = _level(k_inner, (sq[0] // 2,) + sq[1:], level + 1, num_levels, num_steps, hidden_channels, perms,
                       log_scale_bound, activation, scan, dtype)
        layers.append(FactorOut(inner, sq))
    layers += [body, Unsqueeze(sq)]
    return ImageChain(layers)


def glow(key, image_shape, *, num_levels: int = 3, num_steps: int = 8, hidden_channels: int = 64,
         permutation="random", log_scale_bound: float = 3.0, activation: str = "relu", scan: bool = True,
         data=None, dtype=None) -> Flow:
    """Glow flow over images of shape ``image_shape = (C, H, W)`` (channels first).

    Args:
        num_levels: number of scales ``L``; ``H`` and ``W`` must be divisible by ``2**L``.
        num_steps: steps of flow per level (ActNorm, 1x1 convolution, affine coupling).
        hidden_channels: width of each coupling's convolutional conditioner.
        permutation: fixed channel permutation inside each 1x1 convolution's ``P L U``:
            ``"random"`` (one per level), ``"reverse"`` or ``None``.
        log_scale_bound: soft bound on the couplings' log-scales.
        scan: run each level's steps with ``lax.scan`` (compile time flat in ``num_steps``).
        data: optional batch ``(n, C, H, W)`` of (dequantised) data for the data-dependent
            initialisation of every ActNorm (see :func:`glow_data_init`).
    """
    image_shape = check_image_shape(image_shape)
    num_levels = _positive_int(num_levels, "num_levels")
    num_steps = _positive_int(num_steps, "num_steps")
    hidden_channels = _positive_int(hidden_channels, "hidden_channels")
    _, h, w = image_shape
    f = 2 ** num_levels
    if h % f or w % f:
        raise ValueError(
            f"image_shape: height and width must be divisible by the squeeze factor 2 at each of the "
            f"num_levels={num_levels} levels, i.e. by {f}; got height {h} and width {w}"
        )
    if permutation not in ("random", "reverse", None):
        raise ValueError(f"permutation must be 'random', 'reverse' or None; got {permutation!r}")
    if not is_concrete(key):
        raise ValueError("glow needs a concrete PRNG key (its channel permutations are static)")
    k_perm, k_params = split_key(key, 2)
    perms = _level_perms(k_perm, image_shape, num_levels, permutation)
    transform = _level(k_params, image_shape, 1, num_levels, num_steps, hidden_channels, perms,
                       log_scale_bound, activation, scan, dtype)
    flow = Flow(transform, image_shape)
    return flow if data is None else glow_data_init(flow, data)


def glow_data_init(flow: Flow, data) -> Flow:
    """Initialise every image ActNorm of ``flow`` from a data batch ``(n, C, H, W)``.

    The batch is pushed from the data side towards the base; each ActNorm is set from the
    values arriving at it so that its inverse standardises them per channel.  Returns a new flow.
    """
    data = flow._check_value(data)
    if data.ndim < 4 or data.shape[0] < 2:
        raise ValueError(f"data must have shape (n, C, H, W) with n >= 2; got shape {data.shape}")
    transform = jax.jit(lambda t, y: t.data_init(y)[0])(flow.transform, data)
    return flow.replace(transform=transform)


# ---------------------------------------------------------------------------------------
def _check_levels(num_levels):
    if isinstance(num_levels, bool) or not isinstance(num_levels, (int, np.integer)) or num_levels < 2:
        raise ValueError(f"num_levels must be an int >= 2 (the number of discrete pixel values); got {num_levels!r}")
    return int(num_levels)


def uniform_dequantize(key, x, num_levels: int, dtype=None):
    """``(x + u) / num_levels`` with ``u ~ U[0, 1)`` per entry: discrete ``x`` in ``{0..K-1}`` -> ``[0, 1)``."""
    num_levels = _check_levels(num_levels)
    x = jnp.asarray(x)
    dtype = dtype or jnp.result_type(x, float)
    u = jax.random.uniform(key, x.shape, dtype)
    return (x.astype(dtype) + u) / num_levels


def bits_per_dim(log_prob, num_dims: int, num_levels: int):
    """Bits per dimension of discrete data from the log-density of its dequantised version.

    ``log_prob`` is ``log p(y)`` of ``y = (x + u) / num_levels`` in ``[0, 1)^D`` (for variational
    dequantisation pass ``log p(y) - log q(u | x)``).  The density of ``x + u`` is
    ``p(y) / num_levels^D``, so ``bpd = (D log(num_levels) - log_prob) / (D log 2)``; its mean
    over ``u`` upper-bounds ``-log2 P(x) / D``.
    """
    num_dims = _positive_int(num_dims, "num_dims")
    num_levels = _check_levels(num_levels)
    return (num_dims * math.log(num_levels) - log_prob) / (num_dims * math.log(2.0))


@register_pytree_node_class
class VariationalDequantizer:
    """Variational dequantisation (Ho et al., 2019): a conditional flow ``q(u | x)`` on ``(0, 1)^D``.

    ``v ~ N(0, I)`` of the image shape is pushed through ``num_steps`` checkerboard affine
    couplings whose conditioners also read the (rescaled) discrete image ``x``, then
    ``u = sigmoid(s)``.  ``log q(u | x) = log N(v) - log|det ds/dv| - sum log sigmoid'(s)``.

    ``deq = VariationalDequantizer.init(key, image_shape, num_levels, num_steps=2, hidden_channels=8)``;
    ``y, log_q = deq(key, x)`` gives ``y = (x + u) / num_levels`` and ``log q(u | x)`` per image;
    train jointly with the flow by maximising ``flow.log_prob(y) - log_q``.
    """

    def __init__(self, couplings, num_levels: int):
        self.couplings, self.num_levels = couplings, num_levels

    @classmethod
    def init(cls, key, image_shape, num_levels: int, *, num_steps: int = 2, hidden_channels: int = 8,
             log_scale_bound: float = 3.0, dtype=None):
        image_shape = check_image_shape(image_shape)
        num_levels = _check_levels(num_levels)
        num_steps = _positive_int(num_steps, "num_steps")
        couplings = ImageChain([
            ImageAffineCoupling(k, image_shape, hidden_channels, mask="checkerboard", parity=i % 2,
                                context_channels=image_shape[0], log_scale_bound=log_scale_bound, dtype=dtype)
            for i, k in enumerate(split_key(key, num_steps))
        ])
        return cls(couplings, num_levels)

    @property
    def image_shape(self):
        return self.couplings.image_shape

    def _bound(self, x):
        context = x / (self.num_levels - 1) - 0.5
        return ImageChain([layer.condition(context) for layer in self.couplings.layers])

    def __call__(self, key, x):
        """``(y, log q(u | x))`` with ``y = (x + u) / num_levels``; one ``u`` per image of ``x``."""
        x = jnp.asarray(x)
        check_image(x, self.image_shape, "x")
        leaves = [l for l in jax.tree_util.tree_leaves(self.couplings)]
        dtype = jnp.result_type(x, *leaves, float)
        x = x.astype(dtype)
        v = jax.random.normal(key, x.shape, dtype)
        s, log_det = forward_and_log_det(self._bound(x), v)
        num_dims = int(np.prod(self.image_shape))
        log_normal = -0.5 * jnp.sum(v * v, axis=(-3, -2, -1)) - 0.5 * num_dims * math.log(2 * math.pi)
        log_sigmoid_grad = jnp.sum(jax.nn.log_sigmoid(s) + jax.nn.log_sigmoid(-s), axis=(-3, -2, -1))
        u = jax.nn.sigmoid(s)
        return (x + u) / self.num_levels, log_normal - log_det - log_sigmoid_grad

    def tree_flatten(self):
        return (self.couplings,), self.num_levels

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], aux)

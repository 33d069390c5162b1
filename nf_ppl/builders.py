"""Builders of ready flows: ``maf``, ``iaf``, ``realnvp``.

Each is called as ``builder(key, dim, *, num_layers=..., hidden_dims=..., **options)`` and
returns a :class:`~nf_ppl.flow.Flow` with event shape ``(dim,)`` over a standard normal base.
Identical layers are stacked and run by ``lax.scan`` (``scan=True``), so compile time stays flat
as ``num_layers`` grows; layer ``l`` is followed by a permutation (reversal by default).

Common options:
    context_dim: size of a context vector for a conditional flow ``p(y | context)``.
    permutation: ``"reverse"`` (the autoregressive builders' default), ``"random"`` (a different
        fixed permutation per layer, drawn from ``key``), ``"auto"`` (the coupling builders'
        default: ``"reverse"`` for ``dim <= 2``, ``"random"`` above; with a half mask, reversal
        alone keeps the same two halves apart in every layer, so coordinates of one half never
        condition on each other) or ``None``.
    activation: conditioner activation (``"elu"``, ``"relu"``, ``"tanh"``, ``"gelu"``, ...).
    scale: (maf, iaf) how a layer's scale comes from its network: ``"softplus"`` (maf's default)
        or ``"exp"`` of a soft-clamped log-scale (iaf's default); see
        :class:`~nf_ppl.layers.MaskedAffineAutoregressive`.
    log_scale_bound: soft bound on each layer's log-scale (numerical safety) for ``"exp"`` scales.
    out_scale: (maf, iaf) scale of each MADE's initial output weights: None picks
        ``1/sqrt(num_layers)`` for maf (a random start, which maximum likelihood trains faster from,
        kept near the base at any depth; :func:`depth_scale`) and 0.01 for iaf (each layer starts
        near the identity, as a variational guide wants).
    trainable_base: also learn the base normal's location and log-scale.
    scan: ``False`` unrolls the layers in a ``Chain`` instead of a ``Stack``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from .flow import Flow
from .registry import register_builder
from .layers.autoregressive import MaskedAffineAutoregressive
from .layers.composition import Chain, Stack
from .layers.coupling import AffineCoupling, half_mask
from .layers.linear import Permutation


def _check_common(dim: int, num_layers: int) -> None:
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int (the event size); got {dim!r}")
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive int; got {num_layers!r}")


def _permutations(key, dim: int, num_layers: int, permutation):
    if permutation is None:
        return None
    if permutation == "auto":
        permutation = "reverse" if dim <= 2 else "random"
    if permutation == "reverse":
        return [tuple(range(dim - 1, -1, -1))] * num_layers
    if permutation == "random":
        return [Permutation.random(k, dim).perm for k in jax.random.split(key, num_layers)]
    raise ValueError(f"permutation must be 'reverse', 'random', 'auto' or None; got {permutation!r}")


def assemble(layers: Sequence, dim: int, *, permutations=None, scan: bool = True,
             context_dim: int = 0, trainable_base: bool = False, dtype=None) -> Flow:
    """Compose layers (each followed by ``permutations[l]``) into a ``Flow`` over ``N(0, I_dim)``."""
    if scan:
        transform = Stack.from_layers(layers, permutations)
    else:
        parts = []
        for i, layer in enumerate(layers):
            parts.append(layer)
            if permutations is not None:
                parts.append(Permutation(permutations[i]))
        transform = Chain(parts)
    base = {}
    if trainable_base:
        base = dict(base_loc=jnp.zeros(dim, dtype), base_log_scale=jnp.zeros(dim, dtype))
    return Flow(transform, (dim,), context_dim=context_dim, **base)


def _build(make_layer: Callable, key, dim, num_layers, permutation, scan, context_dim, trainable_base, dtype):
    _check_common(dim, num_layers)
    k_perm, *keys = jax.random.split(key, num_layers + 1)
    layers = [make_layer(k) for k in keys]
    perms = _permutations(k_perm, dim, num_layers, permutation)
    return assemble(layers, dim, permutations=perms, scan=scan, context_dim=context_dim,
                    trainable_base=trainable_base, dtype=dtype)


def depth_scale(num_layers) -> float:
    r"""``1/sqrt(num_layers)``: the initial scale on each layer's random part that keeps a stack of
    ``num_layers`` layers near its base at any depth (1.0 for a value that is not a positive int,
    which the builder then refuses with its own message).  Used for the MAF's output weights and
    BNAF's cross-coordinate weights.

    MAF: each layer starts as a random affine autoregressive map (full gradients for every hidden unit
    from the first step, which maximum likelihood wants); scaling its output weights by
    ``1/sqrt(L)`` keeps the composition of ``L`` of them near the base for any depth: at 1.0 per
    layer a 10-layer (64, 64) stack started with sample sd 1.6e7, at ``1/sqrt(L)`` every depth and
    width starts with sd in [0.5, 2] (tests/test_builder_init.py).  Fits gained too: two moons
    -1.352 -> -1.294 nats over 7 seeds, breast_cancer -3.0 -> +0.5 over 3 (bench/RESULTS.md).
    BNAF: ten layers of (32, 32) blocks started with a coordinate's sd 3.4 at 1.0, 0.96-1.08 at
    ``1/sqrt(10)``.
    """
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        return 1.0
    return 1.0 / math.sqrt(num_layers)


def _autoregressive(mode, key, dim, *, num_layers, hidden_dims, context_dim, permutation,
                    activation, scale, log_scale_bound, out_scale, trainable_base, scan, dtype):
    if out_scale is None and mode == "maf":
        out_scale = depth_scale(num_layers)

    def make(k):
        return MaskedAffineAutoregressive(
            k, dim, hidden_dims, mode=mode, context_dim=context_dim, activation=activation, scale=scale,
            log_scale_bound=log_scale_bound, out_scale=out_scale, dtype=dtype)

    return _build(make, key, dim, num_layers, permutation, scan, context_dim, trainable_base, dtype)


def maf(key, dim: int, *, num_layers: int = 8, hidden_dims: Sequence[int] = (64, 64), context_dim: int = 0,
        permutation="reverse", activation: str = "elu", scale: str | None = None, log_scale_bound: float = 5.0,
        out_scale: float | None = None, trainable_base: bool = False, scan: bool = True, dtype=None) -> Flow:
    """Masked autoregressive flow: one-pass log-density, ``dim`` sequential passes to sample.

    Layers are :class:`~nf_ppl.layers.MaskedAffineAutoregressive` in ``mode="maf"``.  Eight layers by
    default (flowjax's count too): an affine MAF on two moons then separates the moons on every seed
    tried (held-out -1.23 nats over 7 seeds, worst -1.31; with 5 layers -1.29 to -1.35 on average,
    with seeds stuck at -1.4 to -1.55 behind a bridge of mass between the moons; bench/RESULTS.md).
    """
    return _autoregressive("maf", key, dim, num_layers=num_layers, hidden_dims=hidden_dims,
                           context_dim=context_dim, permutation=permutation, activation=activation, scale=scale,
                           log_scale_bound=log_scale_bound, out_scale=out_scale, trainable_base=trainable_base,
                           scan=scan, dtype=dtype)


def iaf(key, dim: int, *, num_layers: int = 5, hidden_dims: Sequence[int] = (64, 64), context_dim: int = 0,
        permutation="reverse", activation: str = "elu", scale: str | None = None, log_scale_bound: float = 5.0,
        out_scale: float | None = None, trainable_base: bool = False, scan: bool = True, dtype=None) -> Flow:
    """Inverse autoregressive flow: one-pass sampling (with log-density of its own samples), sequential inverse.

    Layers are :class:`~nf_ppl.layers.MaskedAffineAutoregressive` in ``mode="iaf"``; the usual
    choice for variational posteriors (``flow.sample_and_log_prob``).
    """
    return _autoregressive("iaf", key, dim, num_layers=num_layers, hidden_dims=hidden_dims,
                           context_dim=context_dim, permutation=permutation, activation=activation, scale=scale,
                           log_scale_bound=log_scale_bound, out_scale=out_scale, trainable_base=trainable_base,
                           scan=scan, dtype=dtype)


def realnvp(key, dim: int, *, num_layers: int = 10, hidden_dims: Sequence[int] = (64, 64), context_dim: int = 0,
            mask=None, permutation="auto", activation: str = "elu", log_scale_bound: float = 3.0,
            trainable_base: bool = False, scan: bool = True, dtype=None) -> Flow:
    """RealNVP: affine coupling layers, one pass in both directions.

    ``mask`` (default: first half conditions the second) is used by every layer; the
    permutation after each layer changes which coordinates the next layer transforms.
    ``log_scale_bound`` defaults to 3.0 (each layer scales by at most ``e^3``): with 5.0 (the
    layer's own default, and this builder's before) held-out rows outside the training range were
    stretched so far that breast_cancer's test log-likelihood fell to -18.6 nats against -9.5 with
    3.0, while two moons improved too (-1.241 -> -1.193; ``bench/RESULTS.md``).  Files saved with
    the old default still load (``inference.load`` rebuilds them with it).

    Ten layers with ``permutation="auto"`` (random permutations between layers above two
    dimensions; before: six layers and reversal) measured better on every data set of the bench:
    dequantised digits -62.3 -> -58.4 nats (flowjax's affine MAF -59.5), breast_cancer -9.6 ->
    -5.7; with reversal the two halves of the coordinates never condition on each other.
    """
    mask = half_mask(dim) if mask is None else mask

    def make(k):
        return AffineCoupling(k, dim, mask, hidden_dims, context_dim=context_dim, activation=activation,
                              log_scale_bound=log_scale_bound, dtype=dtype)

    return _build(make, key, dim, num_layers, permutation, scan, context_dim, trainable_base, dtype)


for _name, _builder in (("maf", maf), ("iaf", iaf), ("realnvp", realnvp)):
    register_builder(_name, _builder)

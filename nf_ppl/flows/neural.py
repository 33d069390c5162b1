"""Neural autoregressive flows: ``bnaf`` (block neural autoregressive) and ``naf`` (deep sigmoidal
transformer), with :func:`numerical_info` to diagnose their numerical directions.

Numerical inverses: with the default ``mode="maf"`` the density direction is one pass and
sampling solves roots; ``mode="iaf"`` swaps the two.  Inside a scanned stack values are traced, so
a root solve that fails to converge gives NaN for that row instead of raising; use ``scan=False``
(layers run eagerly in a ``Chain`` and raise :class:`~nf_ppl.roots.NumericalInverseError`) or
:func:`numerical_info` to diagnose.  Options shared by every builder are described in
:mod:`nf_ppl.flows.common`.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp

from ..flow import Flow
from ..layers.base import forward_and_log_det, inverse_and_log_det
from ..layers.composition import Chain, Stack
from ..layers.neural import BlockNeuralAutoregressive, NeuralAutoregressive
from ..registry import register_builder
from .common import _build, checked_builder, depth_scale, MIXTURE_COMPONENTS


@checked_builder
def bnaf(key, dim: int, *, num_layers: int = 2, hidden_dims: Sequence[int] = (8, 8), context_dim: int = 0,
         mode: str = "maf", permutation="reverse", slope: float = 0.001, skip: float | None = None,
         cross_scale: float | None = None,
         atol=None, rtol=None, max_iter: int = 100, max_expand: int = 64, trainable_base: bool = False,
        base: str = "normal", base_components: int = MIXTURE_COMPONENTS,
         scan: bool = True, dtype=None) -> Flow:
    """Block neural autoregressive flow (De Cao et al. 2019).

    Each layer is a :class:`~nf_ppl.layers.neural.BlockNeuralAutoregressive` monotone network;
    ``hidden_dims`` are the hidden *block sizes* (units per coordinate, so a hidden layer has
    ``dim * h`` units); ``slope`` is the linear part of the leaky-tanh activation
    ``tanh(u) + slope * u``.  Each layer's output has a learned linear skip term
    ``exp(a_i) x_i``; ``skip`` is its initial share of the output (default ``None``:
    ``1 - 0.5 / sqrt(num_layers)``, so deep stacks start near their base too; ``skip=0``: no skip
    term, and then the derivative of each coordinate's map varies by at most ``(1 + slope) / slope``
    per hidden layer, a factor of 3 at the earlier default ``slope=0.5``, too little for a density
    with a gap between modes).  ``cross_scale`` (default ``None``: :func:`~nf_ppl.flows.common.depth_scale`, ``1 / sqrt(num_layers)``)
    scales each layer's initial cross-coordinate weights, so a flow of any depth starts near its
    base.  ``mode="maf"`` (default): the network maps data to noise (one-pass density, numerical
    sampling); ``mode="iaf"``: the reverse.  ``atol``/``rtol``/``max_iter``/
    ``max_expand`` configure the root solver (:func:`~nf_ppl.roots.solve_increasing`).
    """
    if cross_scale is None:
        cross_scale = depth_scale(num_layers)
    if skip is None:
        skip = 1.0 - 0.5 * depth_scale(num_layers)

    def make(k):
        return BlockNeuralAutoregressive(k, dim, hidden_dims, mode=mode, context_dim=context_dim, slope=slope,
                                         skip=skip, cross_scale=cross_scale, atol=atol, rtol=rtol, max_iter=max_iter,
                                         max_expand=max_expand, dtype=dtype)

    return _build(make, key, dim, num_layers, permutation, scan, context_dim, trainable_base, dtype, base, base_components)


@checked_builder
def naf(key, dim: int, *, num_layers: int = 3, hidden_dims: Sequence[int] = (64, 64), num_components: int = 8,
        context_dim: int = 0, mode: str = "maf", permutation="reverse", activation: str = "elu",
        atol=None, rtol=None, max_iter: int = 100, max_expand: int = 64, trainable_base: bool = False,
        base: str = "normal", base_components: int = MIXTURE_COMPONENTS, scan: bool = True, dtype=None) -> Flow:
    """Neural autoregressive flow with a deep sigmoidal transformer (Huang et al. 2018).

    Each layer is a :class:`~nf_ppl.layers.neural.NeuralAutoregressive`: a MADE gives, per
    coordinate, the ``3 * num_components`` parameters of a monotone sigmoidal map.  ``mode="maf"``
    (default): that map takes data to noise (one-pass density, sampling by at most ``dim`` sweeps
    of root solves); ``mode="iaf"``: the reverse.
    """
    def make(k):
        return NeuralAutoregressive(k, dim, hidden_dims, num_components=num_components, mode=mode,
                                    context_dim=context_dim, activation=activation, atol=atol, rtol=rtol,
                                    max_iter=max_iter, max_expand=max_expand, dtype=dtype)

    return _build(make, key, dim, num_layers, permutation, scan, context_dim, trainable_base, dtype, base, base_components)


def numerical_info(transform, v, *, inverse: bool = True):
    """Run ``transform`` (a layer, ``Chain``, ``Stack`` or a ``Flow``'s transform) layer by layer in Python.

    Returns ``(out, log_det, infos)``: ``infos`` is a list with one
    :class:`~nf_ppl.roots.SolveInfo` per layer that has a numerical direction (``None`` for the
    others), in the order the layers were applied.  Nothing raises and nothing is replaced by
    NaN, so this shows which rows of which layer failed.
    """
    if isinstance(transform, Flow):
        transform = transform.bound_transform()
    steps = _flatten(transform)
    if inverse:
        steps = list(reversed(steps))
    total, infos = 0.0, []
    for layer, perm in steps:
        if inverse and perm is not None:
            v = jnp.take(v, jnp.argsort(jnp.asarray(perm)), axis=-1)
        method = getattr(layer, "inverse_with_info" if inverse else "forward_with_info", None)
        if method is not None:
            v, log_det, info = method(v)
        else:
            v, log_det = (inverse_and_log_det if inverse else forward_and_log_det)(layer, v)
            info = None
        if getattr(layer, "event_dim", 1) == 0:
            log_det = jnp.sum(log_det, axis=-1)
        total = total + log_det
        infos.append(info)
        if not inverse and perm is not None:
            v = jnp.take(v, jnp.asarray(perm), axis=-1)
    return v, total, infos


def _flatten(transform):
    """``[(layer, permutation_after_or_None), ...]`` in forward order, contexts bound."""
    from ..layers.composition import _bind

    if isinstance(transform, Stack):
        layers = [_bind(l, transform.context) for l in transform.unstack()]
        perms = transform.permutations or [None] * len(layers)
        return list(zip(layers, perms))
    if isinstance(transform, Chain):
        out = []
        for layer in transform._bound():
            out.extend(_flatten(layer))
        return out
    return [(transform, None)]


for _name, _builder in (("bnaf", bnaf), ("naf", naf)):
    register_builder(_name, _builder)

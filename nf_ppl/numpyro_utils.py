"""Glue between flows and NumPyro's effect handlers."""

from __future__ import annotations

import jax
import numpyro

from .flow import Flow
from .layers.composition import Chain, Stack
from .layers.normalization import ActNorm


def flow_module(name: str, flow):
    """Register a flow's trainable parameters as one NumPyro param site and return the flow with the stored values.

    In the spirit of ``numpyro.contrib.module.flax_module``: inside a model or guide run by
    ``SVI``, the site ``f"{name}$params"`` holds the list of the flow's parameter leaves, the
    optimiser updates it, and this call returns a flow rebuilt from the current values.  A bound
    context is data, not a parameter: it is detached before registering and bound again after.

        def guide():
            q = flow_module("q", nf_ppl.iaf(key, 2))
            numpyro.sample("z", q)
    """
    context = getattr(flow, "context", None)
    if context is not None:
        flow = flow.replace(context=None)
    leaves, treedef = jax.tree_util.tree_flatten(flow)
    leaves = numpyro.param(f"{name}$params", leaves)
    flow = jax.tree_util.tree_unflatten(treedef, leaves)
    return flow if context is None else flow.condition(context)


def data_init(flow: Flow, data) -> Flow:
    """Data-dependent initialisation: set every ``ActNorm`` of ``flow`` from ``data``.

    The data is pushed from the data side towards the base (the inverse direction, the order in
    which a density evaluation meets the layers); each ActNorm is re-initialised from the values
    arriving at it so that its inverse standardises them.  Any layer with a ``data_init(y) ->
    (layer, x)`` method (e.g. the image layers of Glow) initialises itself the same way.
    Returns a new flow.
    """
    data = flow._check_value(data)
    if flow.context_dim:
        raise ValueError("data_init of a conditional flow needs a bound context: use flow.condition(context)")
    transform, _ = _init_transform(flow.transform, data)
    return flow.replace(transform=transform)


def _init_transform(t, y):
    if hasattr(t, "data_init"):  # layers with their own hook return (initialised layer, x)
        return t.data_init(y)
    if isinstance(t, ActNorm):
        t = t.initialize(y)
        return t, t.inv(y)
    if isinstance(t, Chain):
        layers = list(t.layers)
        for i in reversed(range(len(layers))):
            layers[i], y = _init_transform(layers[i], y)
        return t.replace(layers=layers), y
    if isinstance(t, Stack):
        layers = t.unstack()
        for i in reversed(range(len(layers))):
            if t.permutations is not None:
                y = y[..., list(_inverse(t.permutations[i]))]
            layers[i], y = _init_transform(layers[i], y)
        return Stack.from_layers(layers, t.permutations), y
    return t, t.inv(y)


def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv

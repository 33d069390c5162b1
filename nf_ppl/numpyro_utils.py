"""Glue between flows and NumPyro's effect handlers."""

from __future__ import annotations

import jax
import numpyro

from .flow import Flow
from .layers.base import data_init as layer_data_init


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
    """Data-dependent initialisation: set every ``ActNorm`` (and any layer with its own
    ``data_init``) of ``flow`` from ``data``.

    The data is pushed from the data side towards the base (the inverse direction, the order in
    which a density evaluation meets the layers) by the layers' ``data_init(y) -> (layer, x)``
    protocol (:meth:`nf_ppl.layers.Bijector.data_init`: identity by default; ActNorm and the image
    ActNorm set themselves so that their inverse standardises the values arriving at them;
    ``Chain``, ``Stack`` and the image compositions pass it on).  Returns a new flow.
    """
    data = flow._check_value(data)
    if flow.context_dim:
        raise ValueError("data_init of a conditional flow needs a bound context: use flow.condition(context)")
    transform, _ = layer_data_init(flow.transform, data)
    return flow.replace(transform=transform)

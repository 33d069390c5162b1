"""Glue between flows and NumPyro's effect handlers: :func:`flow_module`."""

from __future__ import annotations

import jax
import numpyro



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


# data_init lived here first; it is not NumPyro glue, so it moved to nf_ppl.initialization (same function)
from .initialization import data_init  # noqa: E402,F401

"""Flows in hand-written guides: :func:`flow_sample` samples a guide site from a trainable flow."""

from __future__ import annotations

import numpyro
import numpyro.distributions as dist
from numpyro.distributions import biject_to, constraints
from numpyro.distributions.transforms import ReshapeTransform

import nf_ppl

from .pathwise import pathwise


def flow_sample(name: str, flow, *, support=None, event_shape=None, param_name: str | None = None,
                stl: bool = False):
    """Inside a hand-written guide, sample site ``name`` from a trainable flow.

    The flow's leaves are registered as one param site (``param_name``, default
    ``f"{name}_flow"``, via ``nf_ppl.flow_module``); the flow's vector is reshaped to
    ``event_shape`` (if given) and pushed to ``support`` with ``biject_to(support)``, e.g.
    ``support=constraints.positive`` for a site with positive values.  ``stl=True`` gives
    sticking-the-landing gradients (:mod:`inference.pathwise`), as ``AutoFlow`` does by default.
    A flow's draws are vectors: for a scalar site (``numpyro.sample("sigma", dist.HalfNormal(1.0))``)
    pass ``event_shape=()``.

        def guide(x):
            flow_sample("theta", nf_ppl.iaf(key, 3, hidden_dims=(8,)))  # a site of shape (3,)
            flow_sample("sigma", nf_ppl.maf(key, 1, hidden_dims=(4,)), support=constraints.positive,
                        event_shape=())  # a scalar site
    """
    if not isinstance(flow, nf_ppl.Flow):
        raise TypeError(f"flow must be an nf_ppl.Flow; got {type(flow).__name__}")
    q = nf_ppl.flow_module(param_name or f"{name}_flow", flow)
    if stl:
        q = pathwise(q)
    transforms = []
    if event_shape is not None and tuple(event_shape) != tuple(q.flow_event_shape):
        transforms.append(ReshapeTransform(tuple(event_shape), tuple(q.flow_event_shape)))
    if support is not None and support is not constraints.real and support is not constraints.real_vector:
        transforms.append(biject_to(support))
    fn = dist.TransformedDistribution(q, transforms) if transforms else q
    return numpyro.sample(name, fn)

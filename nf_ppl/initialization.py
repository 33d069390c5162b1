"""Data-dependent initialisation of a flow: :func:`data_init` (the flow-level call of the layers'
``data_init(y) -> (layer, x)`` protocol, :meth:`nf_ppl.layers.Bijector.data_init`)."""

from __future__ import annotations

from .flow import Flow
from .layers.base import data_init as layer_data_init


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

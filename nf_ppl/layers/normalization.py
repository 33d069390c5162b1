"""ActNorm (Kingma and Dhariwal, 2018): a per-feature affine layer with data-dependent initialisation."""

from __future__ import annotations

import jax.numpy as jnp

from .._checks import check_event_size, check_finite
from .elementwise import ElementwiseAffine


class ActNorm(ElementwiseAffine):
    """Per-feature affine map initialised from data so its inverse standardises that data.

    forward:  ``y = loc + exp(log_scale) * x``      (one pass)
    inverse:  ``x = (y - loc) * exp(-log_scale)``   (one pass)
    log|det J| = ``sum_i log_scale_i``

    ``ActNorm.init(dim)`` is the identity; ``layer.initialize(y)`` (or ``ActNorm.from_data(y)``, or
    ``layer.data_init(y)``, which also returns the inverse image of ``y``)
    sets ``loc = mean(y)`` and ``log_scale = log std(y)`` over all leading axes of ``y``, the
    values arriving at this layer from the data side, so the layer's inverse maps them to zero
    mean and unit variance.  :func:`nf_ppl.data_init` does this for every ActNorm of a flow.
    """

    @classmethod
    def from_data(cls, y, eps: float = 1e-6):
        y = jnp.asarray(y)
        if y.ndim < 2:
            raise ValueError(f"data for ActNorm must have shape (n, dim) with n >= 2; got {y.shape}")
        check_finite(y, "data")
        flat = y.reshape(-1, y.shape[-1])
        return cls(flat.mean(0), jnp.log(flat.std(0) + eps))

    def initialize(self, y, eps: float = 1e-6) -> "ActNorm":
        check_event_size(y, self.event_size, name="data")
        return type(self).from_data(y, eps)

    def data_init(self, y):
        """``(ActNorm set from y, its inverse image of y)``: the layer's part of :func:`nf_ppl.data_init`."""
        layer = self.initialize(y)
        return layer, layer.inv(y)

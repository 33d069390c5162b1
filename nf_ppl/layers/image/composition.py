"""Composition of image layers: :class:`ImageChain` (``Chain``, unrolled) and :class:`ImageStack`
(``Stack``, ``lax.scan``), the vector compositions with image shapes and checks."""

from __future__ import annotations

from typing import Sequence

import jax


from ..composition import Chain, Stack
from .base import ImageShaped, _positive_int, _stack, check_image


class ImageChain(ImageShaped, Chain):
    """Composition of image layers applied first to last (the image analogue of :class:`Chain`).

    ``ImageChain([f1, f2, f3])(x) == f3(f2(f1(x)))``; log|det J| is the sum of the layers'
    per-image log-dets.  Consecutive layers must agree on image shapes (checked on construction).
    """

    def __init__(self, layers: Sequence):
        super().__init__(layers)
        for i, (a, b) in enumerate(zip(self.layers[:-1], self.layers[1:])):
            if tuple(a.output_shape) != tuple(b.image_shape):
                raise ValueError(f"layer {i} outputs images of shape {tuple(a.output_shape)} but layer {i + 1} "
                                 f"expects {tuple(b.image_shape)}")

    @property
    def image_shape(self):
        return tuple(self.layers[0].image_shape)

    @property
    def output_shape(self):
        return tuple(self.layers[-1].output_shape)

    def forward_and_log_det(self, x):
        check_image(x, self.image_shape, "x")
        return super().forward_and_log_det(x)

    def inverse_and_log_det(self, y):
        check_image(y, self.output_shape, "y")
        return super().inverse_and_log_det(y)


class ImageStack(ImageShaped, Stack):
    """:class:`~nf_ppl.layers.Stack` for images: ``num_layers`` image layers of one pytree structure with
    stacked parameters, run by ``lax.scan``.

    The math and the scan are ``Stack``'s (forward first to last, inverse last to first, the log-dets
    add; compile time does not grow with ``num_layers``); this class only adds the image shapes and
    their checks, and takes no permutations.  Every layer must preserve the image shape.  Build with
    ``ImageStack.from_layers([f_1, ..., f_L])``.
    """

    static_names = ("num_layers",)
    permutations = None

    def __init__(self, layer, num_layers: int):
        self.layer, self.num_layers = layer, _positive_int(num_layers, "num_layers")
        if tuple(layer.output_shape) != tuple(layer.image_shape):
            raise ValueError(f"ImageStack layers must preserve the image shape; got {layer.image_shape} -> {layer.output_shape}")

    @classmethod
    def from_layers(cls, layers: Sequence, permutations=None):
        layers = list(layers)
        if not layers:
            raise ValueError("ImageStack needs at least one layer")
        if permutations is not None:
            raise ValueError("ImageStack takes no permutations (image layers mix channels themselves)")
        if len({jax.tree_util.tree_structure(l) for l in layers}) != 1:
            raise ValueError("ImageStack.from_layers needs layers of one pytree structure (same type and settings)")
        return cls(jax.tree_util.tree_map(_stack, *layers), len(layers))

    @property
    def image_shape(self):
        return tuple(self.layer.image_shape)

    def _check_input(self, v, name: str = "x") -> None:
        check_image(v, self.image_shape, name)

"""Glow building blocks for images (Kingma & Dhariwal, 2018; Dinh et al., 2017), one module per family.

Images are channels-first arrays of shape ``(..., C, H, W)``; every layer here has
``event_dim = 3`` and reports one log-determinant per image.  Each layer is built for a fixed
input image shape (its ``image_shape``, on the forward/base side) and checks it before tracing.

* ``reshape``: :class:`Squeeze` / :class:`Unsqueeze` (space-to-depth by a factor ``f``, default 2)
  and :class:`FactorOut` (multi-scale factor-out: an inner flow on the first channels, the rest
  straight to the base);
* ``linear``: :class:`InvConv1x1` (invertible 1x1 convolution, an LU-parametrised channel-mixing
  matrix) and :class:`ImageActNorm` (per-channel affine map with data-dependent initialisation);
* ``coupling``: :class:`ImageAffineCoupling`, affine coupling whose conditioner is a small
  convolutional network (:class:`ConvNet`), channel-wise or checkerboard split, optional image
  context;
* ``composition``: :class:`ImageChain` / :class:`ImageStack` (unrolled, or ``lax.scan`` over
  stacked copies of one structure);
* ``base``: shape checks, random-number helpers and :class:`ImageBijector`.

Data-dependent initialisation: every layer has ``data_init(y) -> (layer, x)``, which takes the
values ``y`` arriving at it from the data side and returns the (re-)initialised layer and its
inverse image ``x``; only :class:`ImageActNorm` changes (see :func:`nf_ppl.glow.glow_data_init`).
"""

from .base import IMAGE, ImageBijector, _positive_int, check_image, check_image_shape, host_rng, split_key  # noqa: F401
from .composition import ImageChain, ImageStack
from .coupling import ConvNet, ImageAffineCoupling, ImageCoupling
from .linear import ImageActNorm, InvConv1x1
from .reshape import FactorOut, Squeeze, Unsqueeze, squeeze, unsqueeze

__all__ = ["IMAGE", "ConvNet", "FactorOut", "ImageActNorm", "ImageAffineCoupling", "ImageBijector", "ImageChain", "ImageCoupling",
           "ImageStack", "InvConv1x1", "Squeeze", "Unsqueeze", "check_image", "check_image_shape", "host_rng",
           "split_key", "squeeze", "unsqueeze"]

"""Image layers that move values between channels and space or out of the flow: :class:`Squeeze`,
:class:`Unsqueeze`, :class:`FactorOut`."""

from __future__ import annotations


import jax.numpy as jnp

from ..base import forward_and_log_det, inverse_and_log_det
from .base import ImageBijector, _check_divisible, _per_image, _positive_int, check_image_shape


def squeeze(x, factor: int = 2):
    """Space-to-depth: ``(..., C, H, W) -> (..., C f^2, H/f, W/f)``, ``out[c f^2 + f a + b, i, j] = x[c, f i + a, f j + b]``."""
    *batch, c, h, w = x.shape
    f = factor
    x = x.reshape(*batch, c, h // f, f, w // f, f)
    n = len(batch)
    x = jnp.transpose(x, tuple(range(n)) + (n, n + 2, n + 4, n + 1, n + 3))
    return x.reshape(*batch, c * f * f, h // f, w // f)


def unsqueeze(x, factor: int = 2):
    """Depth-to-space, the inverse of :func:`squeeze`."""
    *batch, c, h, w = x.shape
    f = factor
    x = x.reshape(*batch, c // (f * f), f, f, h, w)
    n = len(batch)
    x = jnp.transpose(x, tuple(range(n)) + (n, n + 3, n + 1, n + 4, n + 2))
    return x.reshape(*batch, c // (f * f), h * f, w * f)


class Squeeze(ImageBijector):
    """Space-to-depth reshuffle (RealNVP/Glow): ``(C, H, W) -> (C f^2, H/f, W/f)``.

    forward: each ``f x f`` spatial block becomes ``f^2`` channels; inverse: depth-to-space.
    Both one pass; a permutation of the entries, so log|det J| = 0.
    ``Squeeze(image_shape, factor=2)``; ``H`` and ``W`` must be divisible by ``factor``.
    """

    static_names = ("image_shape", "factor")

    def __init__(self, image_shape, factor: int = 2):
        self.factor = _positive_int(factor, "factor")
        self.image_shape = check_image_shape(image_shape)
        _check_divisible(self.image_shape, self.factor)

    @property
    def output_shape(self):
        c, h, w = self.image_shape
        f = self.factor
        return (c * f * f, h // f, w // f)

    def forward_and_log_det(self, x):
        self._check_x(x)
        return squeeze(x, self.factor), _per_image(0.0, x)

    def inverse_and_log_det(self, y):
        self._check_y(y)
        return unsqueeze(y, self.factor), _per_image(0.0, y)


class Unsqueeze(ImageBijector):
    """Depth-to-space reshuffle, the inverse of :class:`Squeeze`: ``(C f^2, H, W) -> (C, H f, W f)``.

    Both directions one pass; log|det J| = 0.  ``Unsqueeze(image_shape, factor=2)`` where
    ``image_shape`` is the (squeezed) input shape, whose channels must be divisible by ``f^2``.
    """

    static_names = ("image_shape", "factor")

    def __init__(self, image_shape, factor: int = 2):
        self.factor = _positive_int(factor, "factor")
        self.image_shape = check_image_shape(image_shape)
        if self.image_shape[0] % (self.factor ** 2):
            raise ValueError(
                f"image_shape: channels must be divisible by factor**2 = {self.factor ** 2} to unsqueeze; "
                f"got image_shape {self.image_shape}"
            )

    @property
    def output_shape(self):
        c, h, w = self.image_shape
        f = self.factor
        return (c // (f * f), h * f, w * f)

    def forward_and_log_det(self, x):
        self._check_x(x)
        return unsqueeze(x, self.factor), _per_image(0.0, x)

    def inverse_and_log_det(self, y):
        self._check_y(y)
        return squeeze(y, self.factor), _per_image(0.0, y)


# ---------------------------------------------------------------------------------------


class FactorOut(ImageBijector):
    """Multi-scale factor-out (RealNVP/Glow) as a bijection on the whole image.

    The first ``k`` channels (``k = inner.image_shape[0]``) go through the ``inner`` flow (the
    deeper levels); the remaining channels are passed through unchanged, i.e. in the density
    direction they are "factored out" straight to the (standard normal) base.

    forward:  ``y = [inner(x[:k]), x[k:]]``;  inverse: ``x = [inner^{-1}(y[:k]), y[k:]]``
    log|det J| = log|det J_inner(x[:k])|; each direction is as one-pass/sequential as ``inner``.

    ``FactorOut(inner, image_shape)``; ``inner`` must map ``(k, H, W)`` images to the same shape.
    """

    param_names = ("inner",)
    static_names = ("image_shape",)

    def __init__(self, inner, image_shape):
        self.image_shape = check_image_shape(image_shape)
        c, h, w = self.image_shape
        inner_shape = tuple(getattr(inner, "image_shape", ()))
        if len(inner_shape) != 3 or inner_shape[1:] != (h, w) or not 1 <= inner_shape[0] < c:
            raise ValueError(f"inner must be an image layer on (k, {h}, {w}) with 1 <= k < {c}; got image_shape {inner_shape}")
        if tuple(inner.output_shape) != inner_shape:
            raise ValueError(f"inner must preserve its image shape {inner_shape}; it maps to {tuple(inner.output_shape)}")
        self.inner = inner

    def _apply(self, v, inverse):
        k = self.inner.image_shape[0]
        fun = inverse_and_log_det if inverse else forward_and_log_det
        head, log_det = fun(self.inner, v[..., :k, :, :])
        tail = jnp.broadcast_to(v[..., k:, :, :], head.shape[:-3] + (v.shape[-3] - k,) + v.shape[-2:])
        return jnp.concatenate([head, tail.astype(head.dtype)], axis=-3), log_det

    def data_init(self, y):
        self._check_y(y)
        k = self.inner.image_shape[0]
        inner, head = self.inner.data_init(y[..., :k, :, :])
        layer = self.replace(inner=inner)
        return layer, jnp.concatenate([head, y[..., k:, :, :].astype(head.dtype)], axis=-3)


# ---------------------------------------------------------------------------------------

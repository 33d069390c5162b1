"""Shared pieces of the image layers: shape checks, random-number helpers and :class:`ImageBijector`."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints

from ..._checks import is_concrete
from ...host_random import host_rng, on_device
from ..base import Bijector


IMAGE = constraints.independent(constraints.real, 3)


def check_image_shape(image_shape, name: str = "image_shape") -> tuple[int, int, int]:
    """Return ``image_shape`` as a tuple ``(C, H, W)`` of positive ints, or raise ValueError."""
    try:
        shape = tuple(int(s) for s in image_shape)
        ok = len(shape) == 3 and all(s >= 1 for s in shape) and all(int(s) == s for s in image_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be (C, H, W), three positive ints (channels first); got {image_shape!r}")
    return shape


def check_image(x, image_shape, name: str = "x") -> None:
    """Raise ValueError unless ``x`` has shape ``(..., C, H, W)`` equal to ``image_shape``."""
    shape = tuple(np.shape(x))
    if len(shape) < 3 or shape[-3:] != tuple(image_shape):
        c, h, w = image_shape
        raise ValueError(
            f"{name} must have shape (..., C, H, W) = (..., {c}, {h}, {w}) (channels first); got shape {shape}"
        )


def _check_divisible(image_shape, factor: int, name: str = "image_shape") -> None:
    _, h, w = image_shape
    if h % factor or w % factor:
        raise ValueError(
            f"{name}: image height and width must be divisible by the squeeze factor {factor}; "
            f"got height {h} and width {w} (image_shape {tuple(image_shape)})"
        )


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def split_key(key, num: int):
    """``num`` independent keys from ``key`` (on the host when ``key`` is concrete)."""
    rng = host_rng(key)
    if rng is None:
        return jax.random.split(key, num)
    return jax.device_put(rng.integers(0, 2 ** 32, (num, 2), dtype=np.uint32))


def _float_dtype(dtype):
    return jnp.dtype(dtype or jnp.result_type(float))


def _normal(key, shape, dtype, scale: float = 1.0):
    rng = host_rng(key)
    dtype = _float_dtype(dtype)
    if rng is None:
        return scale * jax.random.normal(key, shape, dtype)
    return on_device(scale * rng.standard_normal(shape), dtype)


def _zeros(shape, dtype):
    return on_device(np.zeros(shape), _float_dtype(dtype))


def _stack(*arrays):
    if all(is_concrete(a) for a in arrays):
        return jax.device_put(np.stack([np.asarray(a) for a in arrays]))
    return jnp.stack(arrays)


def _per_image(value, x):
    """Broadcast a log-det to one value per image, in the input's float dtype."""
    return jnp.broadcast_to(value, jnp.shape(x)[:-3]).astype(jnp.result_type(x, value, float))


def _channel(v):
    """A per-channel vector (C,) shaped to broadcast against (..., C, H, W)."""
    return v[:, None, None]


class ImageShaped:
    """The shapes of a map of ``(C, H, W)`` images (a mixin of image layers and compositions): event
    rank 3, ``image_shape`` on the base side, ``output_shape`` on the data side."""

    event_dim = 3

    @property
    def event_size(self):
        return None

    @property
    def domain(self):
        return IMAGE

    @property
    def codomain(self):
        return IMAGE

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Image shape on the data side (the forward output)."""
        return self.image_shape

    def forward_shape(self, shape):
        return tuple(shape)[:-3] + tuple(self.output_shape)

    def inverse_shape(self, shape):
        return tuple(shape)[:-3] + tuple(self.image_shape)


class ImageBijector(ImageShaped, Bijector):
    """Base of the image layers: ``event_dim = 3``, a static forward-side ``image_shape``."""

    image_shape: tuple[int, int, int]

    def _check_x(self, x):
        check_image(x, self.image_shape, "x")

    def _check_y(self, y):
        check_image(y, self.output_shape, "y")

    def _apply(self, v, inverse: bool):
        """``(output, log|det J|)`` of one direction; a layer defines this, or overrides both directions."""
        raise NotImplementedError

    def forward_and_log_det(self, x):
        self._check_x(x)
        return self._apply(x, inverse=False)

    def inverse_and_log_det(self, y):
        self._check_y(y)
        return self._apply(y, inverse=True)


# ---------------------------------------------------------------------------------------

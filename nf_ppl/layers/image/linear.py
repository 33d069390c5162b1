"""Channel-wise linear image layers: :class:`InvConv1x1` (LU-parametrised 1x1 convolution) and
:class:`ImageActNorm` (per-channel affine map with data-dependent initialisation)."""

from __future__ import annotations


import jax.numpy as jnp

from ..._checks import check_finite
from ..linear import lu_factors, lu_solve
from .base import ImageBijector, _channel, _normal, _per_image, _zeros, check_image_shape, host_rng, split_key


def _resolve_perm(perm, channels: int, key=None) -> tuple[int, ...] | None:
    from ..._checks import check_permutation

    if perm is None:
        return None
    if isinstance(perm, str):
        if perm in ("reverse", "reversed"):
            return tuple(range(channels - 1, -1, -1))
        if perm == "random":
            if key is None:
                raise ValueError("perm='random' needs a PRNG key")
            rng = host_rng(key)
            if rng is None:
                raise ValueError("perm='random' needs a concrete PRNG key (the permutation is static)")
            return tuple(int(i) for i in rng.permutation(channels))
        raise ValueError(f"perm must be None, 'reverse', 'random' or a permutation; got {perm!r}")
    return check_permutation(perm, channels, "perm")


class InvConv1x1(ImageBijector):
    """Invertible 1x1 convolution (Glow): the same ``C x C`` matrix ``W`` mixes the channels of every pixel.

    ``W = P L U`` with ``P`` a fixed channel permutation (static), ``L`` unit lower triangular and
    ``U`` upper triangular with diagonal ``exp(log_diag)`` (entries of ``lower``/``upper`` outside
    their strict triangles are unused).

    forward:  ``y[:, h, w] = W x[:, h, w]``                    (one pass)
    inverse:  ``x[:, h, w] = U^{-1} L^{-1} P^T y[:, h, w]``     (one pass, triangular solves)
    log|det J| = ``H W sum_i log|U_ii| = H W sum(log_diag)``

    ``InvConv1x1(lower, upper, log_diag, image_shape, perm=None)`` or
    ``InvConv1x1.init(key, image_shape, perm="random", dtype=None)`` (near ``P``).
    """

    param_names = ("lower", "upper", "log_diag")
    static_names = ("image_shape", "perm")

    def __init__(self, lower, upper, log_diag, image_shape, perm=None):
        self.image_shape = check_image_shape(image_shape)
        c = self.image_shape[0]
        log_diag = jnp.asarray(log_diag)
        if log_diag.shape != (c,):
            raise ValueError(f"log_diag must have shape ({c},) for {c} channels; got {log_diag.shape}")
        for name, value in (("lower", lower), ("upper", upper)):
            if jnp.shape(value) != (c, c):
                raise ValueError(f"{name} must have shape ({c}, {c}) for {c} channels; got {jnp.shape(value)}")
        self.lower, self.upper, self.log_diag = jnp.asarray(lower), jnp.asarray(upper), log_diag
        self.perm = _resolve_perm(perm, c)

    @classmethod
    def init(cls, key, image_shape, perm="random", dtype=None):
        image_shape = check_image_shape(image_shape)
        c = image_shape[0]
        k1, k2, k3 = split_key(key, 3)
        noise = lambda k: _normal(k, (c, c), dtype, 0.01)
        return cls(noise(k1), noise(k2), _zeros(c, dtype), image_shape, _resolve_perm(perm, c, k3))

    def _factors(self):
        return lu_factors(self.lower, self.upper, self.log_diag)

    def matrix(self):
        """The ``C x C`` matrix ``W = P L U`` (``(P A)[i] = A[perm[i]]``)."""
        lower, upper = self._factors()
        w = lower @ upper
        return w if self.perm is None else w[jnp.asarray(self.perm)]

    def inverse_matrix(self):
        lower, upper = self._factors()
        a_inv = lu_solve(lower, upper, jnp.eye(self.image_shape[0], dtype=lower.dtype))
        return a_inv if self.perm is None else a_inv[:, jnp.asarray(self.perm)]

    def _log_det(self, x):
        _, h, w = self.image_shape
        return _per_image(h * w * jnp.sum(self.log_diag), x)

    def forward_and_log_det(self, x):
        self._check_x(x)
        return jnp.einsum("ij,...jhw->...ihw", self.matrix(), x), self._log_det(x)

    def inverse_and_log_det(self, y):
        self._check_y(y)
        return jnp.einsum("ij,...jhw->...ihw", self.inverse_matrix(), y), self._log_det(y)


# ---------------------------------------------------------------------------------------
class ImageActNorm(ImageBijector):
    """Per-channel ActNorm for images (Glow), with data-dependent initialisation.

    forward:  ``y[c] = loc[c] + exp(log_scale[c]) x[c]``     (one pass)
    inverse:  ``x[c] = (y[c] - loc[c]) exp(-log_scale[c])``   (one pass)
    log|det J| = ``H W sum_c log_scale[c]``

    ``ImageActNorm.init(image_shape)`` is the identity; ``layer.data_init(y)`` sets ``loc`` and
    ``log_scale`` to the per-channel mean and log standard deviation of ``y`` (over the batch
    and all pixels), so the inverse standardises the data arriving from the data side.
    """

    param_names = ("loc", "log_scale")
    static_names = ("image_shape",)

    def __init__(self, loc, log_scale, image_shape):
        self.image_shape = check_image_shape(image_shape)
        c = self.image_shape[0]
        loc, log_scale = jnp.asarray(loc), jnp.asarray(log_scale)
        if loc.shape != (c,) or log_scale.shape != (c,):
            raise ValueError(f"loc and log_scale must have shape ({c},) (one per channel); got {loc.shape}, {log_scale.shape}")
        self.loc, self.log_scale = loc, log_scale

    @classmethod
    def init(cls, image_shape, dtype=None):
        c = check_image_shape(image_shape)[0]
        return cls(_zeros(c, dtype), _zeros(c, dtype), image_shape)

    def forward_and_log_det(self, x):
        self._check_x(x)
        _, h, w = self.image_shape
        y = _channel(self.loc) + _channel(jnp.exp(self.log_scale)) * x
        return y, _per_image(h * w * jnp.sum(self.log_scale), x)

    def inverse_and_log_det(self, y):
        self._check_y(y)
        _, h, w = self.image_shape
        x = (y - _channel(self.loc)) * _channel(jnp.exp(-self.log_scale))
        return x, _per_image(h * w * jnp.sum(self.log_scale), y)

    def data_init(self, y, eps: float = 1e-6):
        self._check_y(y)
        if jnp.ndim(y) < 4:
            raise ValueError(f"data for ImageActNorm must have shape (n, C, H, W); got {jnp.shape(y)}")
        check_finite(y, "data")
        c = self.image_shape[0]
        flat = jnp.moveaxis(jnp.asarray(y), -3, -1).reshape(-1, c)
        dtype = self.loc.dtype
        layer = type(self)(flat.mean(0).astype(dtype), jnp.log(flat.std(0) + eps).astype(dtype), self.image_shape)
        return layer, layer.inv(y)


# ---------------------------------------------------------------------------------------

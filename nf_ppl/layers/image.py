"""Glow building blocks for images (Kingma & Dhariwal, 2018; Dinh et al., 2017).

Images are channels-first arrays of shape ``(..., C, H, W)``; every layer here has
``event_dim = 3`` and reports one log-determinant per image.  Each layer is built for a fixed
input image shape (its ``image_shape``, on the forward/base side) and checks it before tracing.

* :class:`Squeeze` / :class:`Unsqueeze`: space-to-depth by a factor ``f`` (default 2);
* :class:`InvConv1x1`: invertible 1x1 convolution, an LU-parametrised channel-mixing matrix;
* :class:`ImageActNorm`: per-channel affine map with data-dependent initialisation;
* :class:`ImageAffineCoupling`: affine coupling whose conditioner is a small convolutional
  network (:class:`ConvNet`), channel-wise or checkerboard split, optional image context;
* :class:`FactorOut`: multi-scale factor-out, applies an inner flow to the first channels and
  sends the rest straight to the base;
* :class:`ImageChain` / :class:`ImageStack`: composition (unrolled, or ``lax.scan`` over
  stacked copies of one structure).

Data-dependent initialisation: every layer has ``data_init(y) -> (layer, x)``, which takes the
values ``y`` arriving at it from the data side and returns the (re-)initialised layer and its
inverse image ``x``; only :class:`ImageActNorm` changes (see :func:`nf_ppl.glow.glow_data_init`).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from jax.tree_util import register_pytree_node_class
from numpyro.distributions import constraints

from .._checks import check_finite, is_concrete
from ..nn import _activation
from .base import Bijector, forward_and_log_det, inverse_and_log_det
from .composition import Chain
from .coupling import soft_clamp

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


def host_rng(key):
    """A NumPy generator seeded by the bits of a concrete JAX key (None for a traced key).

    Image layers draw their initial parameters on the host: a Glow has many differently shaped
    weights, and compiling one ``jax.random.normal`` program per shape costs seconds on CPU.
    """
    if not is_concrete(key):
        return None
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


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
    return jax.device_put((scale * rng.standard_normal(shape)).astype(dtype))


def _zeros(shape, dtype):
    return jax.device_put(np.zeros(shape, _float_dtype(dtype)))


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


class ImageBijector(Bijector):
    """Base of the image layers: ``event_dim = 3``, a static forward-side ``image_shape``."""

    event_dim = 3
    image_shape: tuple[int, int, int]

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

    def _check_x(self, x):
        check_image(x, self.image_shape, "x")

    def _check_y(self, y):
        check_image(y, self.output_shape, "y")

    def data_init(self, y):
        """Data-dependent initialisation hook: ``(initialised layer, inverse image of y)``."""
        return self, inverse_and_log_det(self, y)[0]


# ---------------------------------------------------------------------------------------
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
def _resolve_perm(perm, channels: int, key=None) -> tuple[int, ...] | None:
    from .._checks import check_permutation

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
        c = self.image_shape[0]
        lower = jnp.tril(self.lower, -1) + jnp.eye(c, dtype=self.lower.dtype)
        upper = jnp.triu(self.upper, 1) + jnp.diag(jnp.exp(self.log_diag))
        return lower, upper

    def matrix(self):
        """The ``C x C`` matrix ``W = P L U`` (``(P A)[i] = A[perm[i]]``)."""
        lower, upper = self._factors()
        w = lower @ upper
        return w if self.perm is None else w[jnp.asarray(self.perm)]

    def inverse_matrix(self):
        lower, upper = self._factors()
        eye = jnp.eye(self.image_shape[0], dtype=lower.dtype)
        a_inv = solve_triangular(upper, solve_triangular(lower, eye, lower=True, unit_diagonal=True), lower=False)
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
def _conv(x, w, b):
    """'SAME' 2-D convolution of ``(N, C, H, W)`` by ``(O, C, kh, kw)`` plus bias."""
    dtype = jnp.result_type(x, w)
    out = jax.lax.conv_general_dilated(x.astype(dtype), w.astype(dtype), (1, 1), "SAME",
                                       dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return out + _channel(b)


@register_pytree_node_class
class ConvNet:
    """Small convolutional conditioner: conv(k0) -> act -> conv(k1) -> act -> ... -> conv(k_last).

    ``ConvNet.init(key, in_channels, hidden_channels, out_channels, kernels=(3, 1, 3))`` maps
    ``(..., in_channels, H, W)`` to ``(..., out_channels, H, W)`` ('SAME' padding, stride 1).
    The last convolution starts at zero (weights and bias), so a coupling starts at the identity.
    """

    def __init__(self, weights, biases, activation: str = "relu"):
        self.weights, self.biases, self.activation = list(weights), list(biases), activation

    @classmethod
    def init(cls, key, in_channels: int, hidden_channels: int, out_channels: int, *,
             kernels: Sequence[int] = (3, 1, 3), activation: str = "relu", dtype=None):
        _activation(activation)
        sizes = [in_channels] + [hidden_channels] * (len(kernels) - 1) + [out_channels]
        keys = split_key(key, len(kernels))
        weights, biases = [], []
        for i, (k, kern) in enumerate(zip(keys, kernels)):
            fan_in = sizes[i] * kern * kern
            shape = (sizes[i + 1], sizes[i], kern, kern)
            last = i == len(kernels) - 1
            w = _zeros(shape, dtype) if last else _normal(k, shape, dtype, 1.0 / np.sqrt(fan_in))
            weights.append(w)
            biases.append(_zeros(sizes[i + 1], dtype))
        return cls(weights, biases, activation)

    def __call__(self, x):
        act = _activation(self.activation)
        batch = x.shape[:-3]
        h = x.reshape((-1,) + x.shape[-3:])
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = _conv(h, w, b)
            if i < len(self.weights) - 1:
                h = act(h)
        return h.reshape(batch + h.shape[-3:])

    def tree_flatten(self):
        return (self.weights, self.biases), self.activation

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], children[1], aux)


MASKS = ("channel", "checkerboard")


class ImageAffineCoupling(ImageBijector):
    """Affine coupling for images (RealNVP/Glow) with a convolutional conditioner.

    Split the image into a conditioning part ``x_A`` and a transformed part ``x_B``:
    ``mask="channel"``: ``A`` is the first ``C // 2`` channels (``parity=1``: the last ``C // 2``);
    ``mask="checkerboard"``: ``A`` is the pixels with ``(h + w + parity)`` even, in all channels.
    With ``(t, s_raw) = ConvNet([x_A, context])`` and ``s = log_scale_bound * tanh(s_raw / bound)``:

    forward:  ``y_A = x_A``, ``y_B = x_B exp(s) + t``             (one pass)
    inverse:  ``x_A = y_A``, ``x_B = (y_B - t) exp(-s)``          (one pass)
    log|det J| = ``sum_B s`` (one number per image)

    ``ImageAffineCoupling(key, image_shape, hidden_channels=32, mask="channel", parity=0,
    context_channels=0, log_scale_bound=3.0, activation="relu")``.  With ``context_channels > 0``
    the conditioner also reads a context image of shape ``(..., context_channels, H, W)`` bound
    by ``layer.condition(context)``.  The last convolution starts at zero: the layer starts as
    the identity.
    """

    param_names = ("net",)
    static_names = ("image_shape", "mask", "parity", "context_channels", "log_scale_bound")

    def __init__(self, key, image_shape, hidden_channels: int = 32, *, mask: str = "channel", parity: int = 0,
                 context_channels: int = 0, log_scale_bound: float = 3.0, activation: str = "relu",
                 kernels: Sequence[int] = (3, 1, 3), dtype=None):
        self.image_shape = check_image_shape(image_shape)
        c, h, w = self.image_shape
        hidden_channels = _positive_int(hidden_channels, "hidden_channels")
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}; got {mask!r}")
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1; got {parity!r}")
        if mask == "channel" and c < 2:
            raise ValueError(f"a channel-wise coupling needs at least 2 channels; got image_shape {self.image_shape} "
                             "(squeeze first or use mask='checkerboard')")
        if mask == "checkerboard" and h * w < 2:
            raise ValueError(f"a checkerboard coupling needs at least 2 pixels; got image_shape {self.image_shape}")
        if log_scale_bound <= 0:
            raise ValueError(f"log_scale_bound must be positive; got {log_scale_bound}")
        if isinstance(context_channels, bool) or not isinstance(context_channels, (int, np.integer)) or context_channels < 0:
            raise ValueError(f"context_channels must be a non-negative int; got {context_channels!r}")
        self.mask, self.parity = mask, int(parity)
        self.context_channels, self.log_scale_bound = int(context_channels), float(log_scale_bound)
        n_in, n_out = self._sizes()
        self.net = ConvNet.init(key, n_in + self.context_channels, hidden_channels, 2 * n_out,
                                kernels=kernels, activation=activation, dtype=dtype)

    def _sizes(self):
        c = self.image_shape[0]
        if self.mask == "checkerboard":
            return c, c
        k = c // 2
        return (k, c - k) if self.parity == 0 else (c - k, k)

    def _checker(self):
        _, h, w = self.image_shape
        grid = (np.arange(h)[:, None] + np.arange(w)[None, :] + self.parity) % 2 == 0
        return grid.astype(np.float64)  # 1 = conditioning pixel

    # -- context (an image) ------------------------------------------------------------
    def condition(self, context):
        if not self.context_channels:
            return self
        context = jnp.asarray(context)
        _, h, w = self.image_shape
        check_image(context, (self.context_channels, h, w), "context")
        return self.replace(context=context)

    def _with_context(self, inp):
        if not self.context_channels:
            if self.context is not None:
                raise ValueError("this coupling is not conditional (context_channels=0) but a context was bound")
            return inp
        if self.context is None:
            _, h, w = self.image_shape
            raise ValueError(f"this coupling is conditional (context_channels={self.context_channels}) and needs a "
                             f"context image: call .condition(context) with shape (..., {self.context_channels}, {h}, {w})")
        ctx = self.context
        batch = jnp.broadcast_shapes(inp.shape[:-3], ctx.shape[:-3])
        inp = jnp.broadcast_to(inp, batch + inp.shape[-3:])
        ctx = jnp.broadcast_to(ctx, batch + ctx.shape[-3:]).astype(inp.dtype)
        return jnp.concatenate([inp, ctx], axis=-3)

    def _params(self, x_cond):
        out = self.net(self._with_context(x_cond))
        n = out.shape[-3] // 2
        return out[..., :n, :, :], soft_clamp(out[..., n:, :, :], self.log_scale_bound)

    def _apply(self, v, inverse):
        if self.mask == "checkerboard":
            m = jnp.asarray(self._checker(), jnp.result_type(v, float))
            shift, log_scale = self._params(v * m)
            log_scale = log_scale * (1 - m)
            shift = shift * (1 - m)
            if inverse:
                out = m * v + (1 - m) * ((v - shift) * jnp.exp(-log_scale))
            else:
                out = m * v + (1 - m) * (v * jnp.exp(log_scale) + shift)
            return out, jnp.sum(log_scale, axis=(-3, -2, -1))
        c = self.image_shape[0]
        k = self._sizes()[0]
        if self.parity == 0:
            v_cond, v_change = v[..., :k, :, :], v[..., k:, :, :]
        else:
            v_change, v_cond = v[..., : c - k, :, :], v[..., c - k:, :, :]
        shift, log_scale = self._params(v_cond)
        v_change = jnp.broadcast_to(v_change, shift.shape)
        v_cond = jnp.broadcast_to(v_cond, shift.shape[:-3] + v_cond.shape[-3:])
        if inverse:
            changed = (v_change - shift) * jnp.exp(-log_scale)
        else:
            changed = v_change * jnp.exp(log_scale) + shift
        parts = [v_cond, changed] if self.parity == 0 else [changed, v_cond]
        return jnp.concatenate(parts, axis=-3), jnp.sum(log_scale, axis=(-3, -2, -1))

    def forward_and_log_det(self, x):
        self._check_x(x)
        return self._apply(x, inverse=False)

    def inverse_and_log_det(self, y):
        self._check_y(y)
        return self._apply(y, inverse=True)


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

    def forward_and_log_det(self, x):
        self._check_x(x)
        return self._apply(x, inverse=False)

    def inverse_and_log_det(self, y):
        self._check_y(y)
        return self._apply(y, inverse=True)

    def data_init(self, y):
        self._check_y(y)
        k = self.inner.image_shape[0]
        inner, head = self.inner.data_init(y[..., :k, :, :])
        layer = self.replace(inner=inner)
        return layer, jnp.concatenate([head, y[..., k:, :, :].astype(head.dtype)], axis=-3)


# ---------------------------------------------------------------------------------------
class ImageChain(Chain):
    """Composition of image layers applied first to last (the image analogue of :class:`Chain`).

    ``ImageChain([f1, f2, f3])(x) == f3(f2(f1(x)))``; log|det J| is the sum of the layers'
    per-image log-dets.  Consecutive layers must agree on image shapes (checked on construction).
    """

    event_dim = 3

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

    @property
    def event_size(self):
        return None

    def forward_shape(self, shape):
        return tuple(shape)[:-3] + self.output_shape

    def inverse_shape(self, shape):
        return tuple(shape)[:-3] + self.image_shape

    def forward_and_log_det(self, x):
        check_image(x, self.image_shape, "x")
        return super().forward_and_log_det(x)

    def inverse_and_log_det(self, y):
        check_image(y, self.output_shape, "y")
        return super().inverse_and_log_det(y)

    def data_init(self, y):
        layers = list(self.layers)
        for i in reversed(range(len(layers))):
            layers[i], y = layers[i].data_init(y)
        return self.replace(layers=layers), y


class ImageStack(ImageBijector):
    """``num_layers`` image layers of one pytree structure with stacked parameters, run by ``lax.scan``.

    The math is that of :class:`ImageChain` (forward first to last, inverse last to first, the
    log-dets add); compile time does not grow with ``num_layers``.  Every layer must preserve
    the image shape.  Build with ``ImageStack.from_layers([f_1, ..., f_L])``.
    """

    param_names = ("layer",)
    static_names = ("num_layers",)

    def __init__(self, layer, num_layers: int):
        self.layer, self.num_layers = layer, _positive_int(num_layers, "num_layers")
        if tuple(layer.output_shape) != tuple(layer.image_shape):
            raise ValueError(f"ImageStack layers must preserve the image shape; got {layer.image_shape} -> {layer.output_shape}")

    @classmethod
    def from_layers(cls, layers: Sequence):
        layers = list(layers)
        if not layers:
            raise ValueError("ImageStack needs at least one layer")
        if len({jax.tree_util.tree_structure(l) for l in layers}) != 1:
            raise ValueError("ImageStack.from_layers needs layers of one pytree structure (same type and settings)")
        return cls(jax.tree_util.tree_map(_stack, *layers), len(layers))

    def unstack(self) -> list:
        return [jax.tree_util.tree_map(lambda a: a[i], self.layer) for i in range(self.num_layers)]

    @property
    def image_shape(self):
        return tuple(self.layer.image_shape)

    def _run(self, v, inverse):
        leaves, treedef = jax.tree_util.tree_flatten(self.layer)
        floats = [leaf for leaf in leaves if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)]
        dtype = jnp.result_type(v, *floats) if floats else jnp.result_type(v, float)
        fun = inverse_and_log_det if inverse else forward_and_log_det

        def body(carry, layer_leaves):
            z, total = carry
            z, log_det = fun(jax.tree_util.tree_unflatten(treedef, layer_leaves), z)
            return (z, total + log_det), None

        init = (v.astype(dtype), jnp.zeros(v.shape[:-3], dtype))
        (out, total), _ = jax.lax.scan(body, init, leaves, reverse=inverse)
        return out, total

    def forward_and_log_det(self, x):
        self._check_x(x)
        return self._run(x, inverse=False)

    def inverse_and_log_det(self, y):
        self._check_y(y)
        return self._run(y, inverse=True)

    def data_init(self, y):
        layers = self.unstack()
        for i in reversed(range(len(layers))):
            layers[i], y = layers[i].data_init(y)
        return type(self).from_layers(layers), y

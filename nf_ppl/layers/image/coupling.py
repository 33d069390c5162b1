"""Affine coupling for images: :class:`ConvNet` conditioners and :class:`ImageAffineCoupling`."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import register_pytree_node_class

from ...nn import _activation
from ..base import KeyedInit
from ..conditioned import finish_numerical, with_init_bias
from ..transformers import Affine, check_transformer
from .base import ImageBijector, _channel, _normal, _positive_int, _zeros, check_image, check_image_shape, split_key


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


class ImageCoupling(KeyedInit, ImageBijector):
    """Coupling for images (RealNVP/Glow) with a convolutional conditioner and any elementwise transformer.

    Split the image into a conditioning part ``x_A`` and a transformed part ``x_B``:
    ``mask="channel"``: ``A`` is the first ``C // 2`` channels (``parity=1``: the last ``C // 2``);
    ``mask="checkerboard"``: ``A`` is the pixels with ``(h + w + parity)`` even, in all channels.
    A ConvNet reads ``[x_A, context]`` and gives the transformer's ``num_params`` raw parameters for
    every pixel of ``x_B`` (parameter-major channels), so ``tau`` is any
    :class:`~nf_ppl.layers.transformers.Transformer`, exactly as in the vector
    :class:`~nf_ppl.layers.Coupling`:

    forward:  ``y_A = x_A``, ``y_B = tau(x_B; theta(x_A))``             (one pass)
    inverse:  ``x_A = y_A``, ``x_B = tau^{-1}(y_B; theta(y_A))``        (one pass; numerical if tau's is)
    log|det J| = ``sum_B log tau'(x_B)`` (one number per image)

    ``ImageCoupling(key, image_shape, transformer, hidden_channels=32, mask="channel", parity=0,
    context_channels=0, activation="relu", kernels=(3, 1, 3))``.  With ``context_channels > 0`` the
    conditioner also reads a context image of shape ``(..., context_channels, H, W)`` bound by
    ``layer.condition(context)``.  The last convolution starts at zero (plus the transformer's
    ``init_bias``): the layer starts as the transformer at those parameters (the identity for the
    built-in transformers but ``DeepSigmoid``).
    """

    param_names = ("net",)
    static_names = ("image_shape", "mask", "parity", "context_channels", "transformer")

    def __init__(self, key, image_shape, transformer, hidden_channels: int = 32, *, mask: str = "channel",
                 parity: int = 0, context_channels: int = 0, activation: str = "relu",
                 kernels: Sequence[int] = (3, 1, 3), dtype=None):
        self.transformer = check_transformer(transformer)
        self._setup(key, image_shape, hidden_channels, mask, parity, context_channels, activation, kernels, dtype)

    def _setup(self, key, image_shape, hidden_channels, mask, parity, context_channels, activation, kernels, dtype):
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
        if isinstance(context_channels, bool) or not isinstance(context_channels, (int, np.integer)) or context_channels < 0:
            raise ValueError(f"context_channels must be a non-negative int; got {context_channels!r}")
        self.mask, self.parity, self.context_channels = mask, int(parity), int(context_channels)
        n_in, n_out = self._sizes()
        transformer = self.transformer
        self.net = ConvNet.init(key, n_in + self.context_channels, hidden_channels, transformer.num_params * n_out,
                                kernels=kernels, activation=activation, dtype=dtype)
        self.net.biases[-1] = with_init_bias(self.net.biases[-1], transformer, n_out)

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

    def _transform(self, v_change, x_cond, inverse):
        """``(tau or tau^{-1} of v_change, log tau' per pixel, info)`` with the parameters the ConvNet gives for
        ``x_cond``: images flattened to the ``(..., num_params, n)`` layout of the transformer protocol."""
        out = self.net(self._with_context(x_cond))
        batch = out.shape[:-3]
        params = out.reshape(batch + (self.transformer.num_params, -1))
        v_change = jnp.broadcast_to(v_change, batch + v_change.shape[-3:])
        pixels = v_change.shape[-3:]
        apply = self.transformer.inverse_with_info if inverse else self.transformer.forward_with_info
        z, log_d, info = apply(v_change.reshape(batch + (-1,)), params)
        return z.reshape(batch + pixels), log_d.reshape(batch + pixels), info

    def _apply(self, v, inverse):
        """One direction, with the layers' rule for numerical transformers (:func:`finish_numerical`)."""
        return finish_numerical(*self._apply_with_info(v, inverse), type(self).__name__, self.transformer.max_iter)

    def _apply_with_info(self, v, inverse):
        if self.mask == "checkerboard":
            keep = jnp.asarray(self._checker() > 0)
            m = jnp.asarray(self._checker(), jnp.result_type(v, float))
            z, log_d, info = self._transform(v, v * m, inverse)
            out = jnp.where(keep, v, z)
            return out, jnp.sum(jnp.where(keep, jnp.zeros_like(log_d), log_d), axis=(-3, -2, -1)), info
        c = self.image_shape[0]
        k = self._sizes()[0]
        if self.parity == 0:
            v_cond, v_change = v[..., :k, :, :], v[..., k:, :, :]
        else:
            v_change, v_cond = v[..., : c - k, :, :], v[..., c - k:, :, :]
        changed, log_d, info = self._transform(v_change, v_cond, inverse)
        v_cond = jnp.broadcast_to(v_cond, changed.shape[:-3] + v_cond.shape[-3:])
        parts = [v_cond, changed] if self.parity == 0 else [changed, v_cond]
        return jnp.concatenate(parts, axis=-3), jnp.sum(log_d, axis=(-3, -2, -1)), info


class ImageAffineCoupling(ImageCoupling):
    """Affine coupling for images (RealNVP/Glow): :class:`ImageCoupling` with the transformer
    ``Affine("exp", log_scale_bound)``.

    With ``(t, s_raw) = ConvNet([x_A, context])`` and ``s = log_scale_bound * tanh(s_raw / bound)``:

    forward:  ``y_A = x_A``, ``y_B = x_B exp(s) + t``             (one pass)
    inverse:  ``x_A = y_A``, ``x_B = (y_B - t) exp(-s)``          (one pass)
    log|det J| = ``sum_B s`` (one number per image)

    ``ImageAffineCoupling(key, image_shape, hidden_channels=32, mask="channel", parity=0,
    context_channels=0, log_scale_bound=3.0, activation="relu")``; masks and context as in
    :class:`ImageCoupling`.  The last convolution starts at zero: the layer starts as the identity.
    """

    static_names = ("image_shape", "mask", "parity", "context_channels", "log_scale_bound")

    def __init__(self, key, image_shape, hidden_channels: int = 32, *, mask: str = "channel", parity: int = 0,
                 context_channels: int = 0, log_scale_bound: float = 3.0, activation: str = "relu",
                 kernels: Sequence[int] = (3, 1, 3), dtype=None):
        self.log_scale_bound = Affine("exp", log_scale_bound).log_scale_bound
        self._setup(key, image_shape, hidden_channels, mask, parity, context_channels, activation, kernels, dtype)

    @property
    def transformer(self):
        return Affine("exp", self.log_scale_bound)


# ---------------------------------------------------------------------------------------

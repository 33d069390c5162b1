"""Neural autoregressive layers: monotone networks whose inverse is computed numerically.

* :class:`BlockNeuralAutoregressive` (BNAF, De Cao et al. 2019): one monotone, block
  lower-triangular network ``N: R^d -> R^d``.
* :class:`NeuralAutoregressive` (NAF with a deep sigmoidal transformer, Huang et al. 2018): a
  MADE conditioner gives per-coordinate parameters of a monotone scalar map.

Both have an analytic direction (one network pass) and a numerical one, computed with the
bracketed, safeguarded Newton solver of :mod:`nf_ppl.roots` to ``atol + rtol * |x|`` (defaults
``1e-10`` in float64, ``1e-5`` in float32; ``rtol = 4 eps``).  Gradients through the numerical
direction are exact: the root is found without gradients and one differentiable Newton step
(:func:`~nf_ppl.roots.newton_correction`) attaches the implicit-function derivative.

Non-convergence is never silent: outside ``jit`` (concrete values) the layer raises
:class:`~nf_ppl.roots.NumericalInverseError`; under ``jit``/``vmap``/``grad`` (or inside a scanned
``Stack``) the rows that did not converge come back as NaN (values and log-det).  The methods
``forward_with_info``/``inverse_with_info`` return ``(out, log_det, SolveInfo)`` with the
convergence flag, the iteration count and the largest residual per row, and never raise or mask.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_positive
from ..roots import (SolveInfo, check_solver_options, newton_correction, raise_if_not_converged,
                     solve_increasing)
from .autoregressive import MODES, MaskedAutoregressive, check_mode, made_for  # noqa: F401  (MODES re-exported)
from .base import Bijector, KeyedInit
from .transformers.sigmoid import DeepSigmoid, sigmoidal_map  # noqa: F401  (re-exported)

_SOLVER_STATICS = ("atol", "rtol", "max_iter", "max_expand")


class _SolverOptions:
    def _set_solver(self, atol, rtol, max_iter, max_expand):
        check_solver_options(atol, rtol, max_iter, max_expand)
        self.atol = None if atol is None else float(atol)
        self.rtol = None if rtol is None else float(rtol)
        self.max_iter, self.max_expand = int(max_iter), int(max_expand)

    def _solve(self, fn, target, args):
        return solve_increasing(fn, target, args, atol=self.atol, rtol=self.rtol, max_iter=self.max_iter,
                                max_expand=self.max_expand)


# -----------------------------------------------------------------------------------------
# leaky tanh: a strictly increasing activation onto R (linear tails)
# -----------------------------------------------------------------------------------------
def leaky_tanh(u, slope):
    """``tanh(u) + slope * u``: strictly increasing, onto the real line for ``slope > 0``."""
    return jnp.tanh(u) + slope * u


def log_leaky_tanh_derivative(u, slope):
    """``log(slope + sech(u)^2)`` computed without overflow for any ``|u|``."""
    a = jnp.abs(u)
    log_sech2 = 2.0 * (math.log(2.0) - a - jnp.log1p(jnp.exp(-2.0 * a)))
    return jnp.logaddexp(math.log(slope), log_sech2)


def _block_masks(dim: int, b_out: int, b_in: int):
    """Boolean (dim*b_out, dim*b_in) masks of the diagonal blocks and the strictly lower blocks."""
    row = np.repeat(np.arange(dim), b_out)[:, None]
    col = np.repeat(np.arange(dim), b_in)[None, :]
    return row == col, col < row


class BlockNeuralAutoregressive(KeyedInit, _SolverOptions, Bijector):
    """Block neural autoregressive layer (BNAF, De Cao et al. 2019).

    The network ``N`` has layers ``h_l = act(W_l h_{l-1} + b_l)`` (no activation on the last) of
    sizes ``d -> d*h_1 -> ... -> d*h_m -> d``.  Each ``W_l`` is block lower-triangular in
    ``d x d`` blocks: diagonal blocks ``exp(V)`` (positive), lower blocks free, upper blocks zero,
    then row-wise weight-normalised, ``W = exp(g) * W~ / ||W~_row||``.  With the strictly
    increasing leaky tanh ``act(u) = tanh(u) + slope * u`` each ``N_i`` depends on ``x_<=i`` only,
    is strictly increasing in ``x_i`` and onto ``R``, so ``N`` is a triangular bijection with
    ``log|det J_N| = sum_i log dN_i/dx_i``.  With ``skip > 0`` (default) a learned linear term is
    added to the output, ``N_i(x) = net_i(x) + exp(a_i) x_i``, so ``dN_i/dx_i = net_i' + exp(a_i)``
    (a ``logaddexp`` in log space): ``N`` stays onto ``R`` for any ``slope`` and its tails stay
    linear at the start, while the net part can make the derivative vary by orders of magnitude
    (needed where the density has a gap between modes).  The diagonal derivatives are carried through the
    blocks in log space: for the units ``u`` of block ``i``,
    ``log dh_{l,u}/dx_i = log act'(pre_u) + logsumexp_k(log W_l[u, k] + log dh_{l-1,k}/dx_i)``.
    A context (``context_dim > 0``) enters the first layer's pre-activation, its weights started
    at the scale of the data's (``N(0, 1/context_dim)``; at a tenth of that, a conditional bnaf
    learned a context-dependent density slowly and ``fit`` could stop it on a plateau).

    ``mode="maf"`` (``N`` maps data to noise; default):
        inverse:  ``x = N(y)``                    one pass (density)
        forward:  ``y = N^{-1}(x)``               numerical: ``d`` sequential 1-D root solves
        log|det J| = ``-log|det J_N(y)|``
    ``mode="iaf"``:
        forward:  ``y = N(x)``                    one pass
        inverse:  ``x = N^{-1}(y)``               numerical: ``d`` sequential 1-D root solves
        log|det J| = ``log|det J_N(x)|``

    The numerical direction solves coordinate ``i = 0..d-1`` in turn (``x_<i`` already known),
    each a bracketed safeguarded-Newton solve vectorised over the batch, to ``atol + rtol |x|``.

    ``BlockNeuralAutoregressive(key, dim, hidden_dims=(8, 8), mode="maf", context_dim=0,
    slope=0.001, skip=0.5, cross_scale=1.0, atol=None, rtol=None, max_iter=100, max_expand=64)``;
    ``hidden_dims`` are block sizes (units per coordinate).  Without the skip term
    (``skip=0``) the derivative ``dN_i/dx_i`` can vary by at most a factor ``(1 + slope) / slope``
    per hidden layer, which caps what the layer can fit; ``slope`` is the leaky tanh's linear part.
    Parameters: ``log_scales`` holds one array of log row norms per network layer and, with the
    skip term, the ``(d,)`` log skip weights ``a`` as its last entry.

    Initialisation (on standard-normal inputs, and contexts): each hidden pre-activation gets sd 1.5 and its
    own centre, the units of a block spread evenly over +-3 input sds, so every unit is nonlinear
    but their sum is nearly linear over the bulk of the inputs; the net part and the skip term
    then share ``N``'s unit output sd in the proportion ``1 - skip : skip``.  So a flow of any depth
    and width starts close to its base and learns from the first step.  (A start with all units
    centred at 0 and nearly linear, the earlier one, is a saddle that training does not leave:
    two moons stayed at a Gaussian's log-likelihood.  Without any rescaling each layer multiplied
    the slope by about ``sqrt(h)`` and deep flows started as point masses.)  ``skip`` is the
    skip term's initial share (:func:`nf_ppl.bnaf` raises it with depth).
    ``cross_scale`` multiplies the initial strictly-lower (cross-coordinate) blocks: each layer
    still starts with unit-sd outputs but mixes coordinates less, so a stack of ``L`` layers
    built with ``1 / sqrt(L)`` (what :func:`nf_ppl.bnaf` passes) stays near its base (at 1.0 ten
    layers of (32, 32) blocks started with a coordinate's sd 3.4; at ``1/sqrt(10)`` 0.96-1.08).
    """

    param_names = ("weights", "log_scales", "biases", "context_weight")
    static_names = ("dim", "block_sizes", "mode", "slope", "context_dim") + _SOLVER_STATICS

    def __init__(self, key, dim: int, hidden_dims: Sequence[int] = (8, 8), *, mode: str = "maf",
                 context_dim: int = 0, slope: float = 0.001, skip: float = 0.5, cross_scale: float = 1.0,
                 atol=None, rtol=None, max_iter: int = 100, max_expand: int = 64, dtype=None):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive int; got {dim!r}")
        hidden = tuple(int(h) for h in hidden_dims)
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden_dims (block sizes per coordinate) must be positive ints; got {tuple(hidden_dims)}")
        check_mode(mode)
        check_positive(slope, "slope")
        check_positive(cross_scale, "cross_scale")
        if isinstance(skip, bool) or not isinstance(skip, (int, float, np.integer, np.floating)) or not 0.0 <= skip < 1.0:
            raise ValueError(f"skip (the initial share of the linear skip term) must be in [0, 1); got {skip!r}")
        self._set_solver(atol, rtol, max_iter, max_expand)
        self.dim, self.mode, self.slope = int(dim), mode, float(slope)
        self.block_sizes = (1, *hidden, 1)
        self.context_dim = int(context_dim)
        dtype = dtype or jnp.zeros(()).dtype
        self.weights, self.log_scales, self.biases, self.context_weight = _initial_parameters(
            key, self.dim, self.block_sizes, self.context_dim, float(cross_scale), jnp.dtype(dtype))
        self._standardise_output(jax.random.fold_in(key, 1), float(skip))

    def _standardise_output(self, key, skip: float, num_draws: int = 512):
        """Start close to the identity with nonlinear units, as the class docstring describes: layer
        by layer, on standard-normal inputs, each hidden pre-activation gets sd ``HIDDEN_SD`` and a
        centre in ``CENTRE_SPAN * [-1, 1]`` (in input sds), and ``N``'s output mean 0 and sd 1, a
        share ``skip`` of it the linear term.

        Rescaling a row's weight norm ``exp(g)`` and its bias by positive factors keeps ``N``
        strictly increasing.  Runs as one compiled program (op by op it compiled about 180 small
        programs per layer shape: 3-8 s for each new ``bnaf``).
        """
        self.log_scales, self.biases, self.context_weight = _standardised(self, key, num_draws, skip)

    @property
    def _log_skip(self):
        """The log skip weights ``a`` (``(d,)``), or ``None`` for a layer without the skip term."""
        return self.log_scales[-1] if len(self.log_scales) > len(self.weights) else None

    @property
    def event_size(self):
        return self.dim

    # -- the network and its log-diagonal Jacobian -------------------------------------------
    def _layer_weights(self, l):
        b_in, b_out = self.block_sizes[l], self.block_sizes[l + 1]
        diag, lower = (jnp.asarray(m) for m in _block_masks(self.dim, b_out, b_in))
        v = self.weights[l]
        positive = jnp.exp(jnp.where(diag, v, jnp.zeros_like(v)))
        w_tilde = jnp.where(diag, positive, jnp.where(lower, v, jnp.zeros_like(v)))
        log_norm = 0.5 * jnp.log(jnp.sum(w_tilde * w_tilde, axis=1))
        log_row = self.log_scales[l] - log_norm
        w = w_tilde * jnp.exp(log_row)[:, None]
        idx = np.arange(self.dim)
        log_diag = (v + log_row[:, None]).reshape(self.dim, b_out, self.dim, b_in)[idx, :, idx, :]
        return w, log_diag  # (d b_out, d b_in), (d, b_out, b_in)

    def _pre_activation(self, l, h, ctx):
        """``W_l h + b_l`` (plus the context term in the first layer) and ``log`` of ``W_l``'s diagonal blocks."""
        w, log_diag = self._layer_weights(l)
        pre = h @ w.T + self.biases[l]
        if l == 0 and ctx is not None:
            pre = pre + ctx @ self.context_weight.T
        return pre, log_diag

    def network(self, x):
        """``(N(x), log dN_i/dx_i)`` with shapes ``(..., d)`` each (one pass)."""
        ctx = self._context() if self.context_dim else None
        if ctx is not None:
            batch = jnp.broadcast_shapes(x.shape[:-1], ctx.shape[:-1])
            x = jnp.broadcast_to(x, batch + x.shape[-1:])
        h = x
        log_d = jnp.zeros(x.shape + (1,), x.dtype)  # (..., d, b): log dh_{block i}/dx_i
        n = len(self.weights)
        for l in range(n):
            pre, log_diag = self._pre_activation(l, h, ctx)
            log_d = jax.nn.logsumexp(log_diag + log_d[..., None, :], axis=-1)
            if l < n - 1:
                log_d = log_d + log_leaky_tanh_derivative(pre, self.slope).reshape(log_d.shape)
                h = leaky_tanh(pre, self.slope)
            else:
                h = pre
        log_d, log_skip = log_d[..., 0], self._log_skip
        if log_skip is not None:
            h, log_d = h + jnp.exp(log_skip) * x, jnp.logaddexp(log_d, log_skip)
        return h, log_d

    # -- numerical inverse of N -----------------------------------------------------------------
    def network_inverse(self, y):
        """``(x, log dN_i/dx_i at x, SolveInfo)`` with ``N(x) = y``, solved coordinate by coordinate.

        Never raises and never masks; differentiable (implicit-function gradients).
        """
        ctx = self.context if self.context_dim else None
        batch = y.shape[:-1] if ctx is None else jnp.broadcast_shapes(y.shape[:-1], ctx.shape[:-1])
        y = jnp.broadcast_to(y, batch + (self.dim,))
        coords = jnp.arange(self.dim)

        def fn(t, args):
            net, xs, i = args
            z = jnp.where(coords == i, t[..., None], xs)
            out, log_d = net.network(z)
            return out[..., i], jnp.exp(log_d[..., i])

        def solve_one(i, carry):
            x, iters, conv = carry
            xs = jax.lax.stop_gradient(x)
            res = self._solve(fn, y[..., i], (self, xs, i))
            x_i, _, _ = newton_correction(
                lambda t: fn(t, (self, x, i)), res.x, y[..., i])
            x = jnp.where(coords == i, x_i[..., None], x)
            return x, jnp.maximum(iters, res.iterations), conv & res.converged

        init = (jnp.zeros_like(y), jnp.zeros(batch, jnp.int32), jnp.ones(batch, bool))
        x, iters, conv = jax.lax.fori_loop(0, self.dim, solve_one, init)
        out, log_d = self.network(x)
        residual = jnp.max(jnp.abs(out - y), axis=-1)
        conv = conv & jnp.isfinite(residual)
        return x, log_d, SolveInfo(conv, iters, residual)

    # -- layer API ----------------------------------------------------------------------------
    def _numerical(self, inverse):
        return (self.mode == "maf") != inverse

    def _with_info(self, v, inverse):
        self._check_input(v, "y" if inverse else "x")
        if self._numerical(inverse):
            return _jit_with_info(self, v, inverse)  # compiled once per structure, also when eager
        return self._with_info_impl(v, inverse)

    def _with_info_impl(self, v, inverse):
        sign = 1.0 if self.mode == "iaf" else -1.0
        if self._numerical(inverse):
            out, log_d, info = self.network_inverse(v)
        else:
            out, log_d = self.network(v)
            info = SolveInfo(jnp.ones(log_d.shape[:-1], bool), jnp.zeros(log_d.shape[:-1], jnp.int32),
                             jnp.zeros(log_d.shape[:-1], log_d.dtype))
        return out, sign * jnp.sum(log_d, axis=-1), info

    def _run(self, v, inverse):
        out, log_det, info = self._with_info(v, inverse)
        if not self._numerical(inverse):
            return out, log_det
        raise_if_not_converged(info, type(self).__name__, self.max_iter)
        nan = jnp.asarray(jnp.nan, out.dtype)
        return jnp.where(info.converged[..., None], out, nan), jnp.where(info.converged, log_det, nan)

    def forward_and_log_det(self, x):
        return self._run(x, inverse=False)

    def inverse_and_log_det(self, y):
        return self._run(y, inverse=True)

    def forward_with_info(self, x):
        """``(y, log_det, SolveInfo)``; never raises or masks (trivial info if one pass)."""
        return self._with_info(x, inverse=False)

    def inverse_with_info(self, y):
        """``(x, log_det, SolveInfo)``; never raises or masks (trivial info if one pass)."""
        return self._with_info(y, inverse=True)

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        if intermediates is not None:
            return intermediates
        if self.mode == "iaf":
            return jnp.sum(self.network(x)[1], axis=-1)
        return -jnp.sum(self.network(y)[1], axis=-1)


# -----------------------------------------------------------------------------------------
# NAF: the masked autoregressive layer with the deep sigmoidal transformer
# -----------------------------------------------------------------------------------------
class NeuralAutoregressive(KeyedInit, MaskedAutoregressive):
    """Neural autoregressive layer with a deep sigmoidal transformer (NAF-DSF, Huang et al. 2018).

    :class:`~nf_ppl.layers.MaskedAutoregressive` with the
    :class:`~nf_ppl.layers.transformers.DeepSigmoid` transformer: a MADE gives, for coordinate ``i``,
    parameters ``theta_i(v_<i)`` of the increasing map ``tau(.; theta_i)`` of :func:`sigmoidal_map`
    (``3 * num_components`` numbers).

    Initialisation: the offsets ``b_k`` are spread over ``[-1, 1]`` and the slopes start where
    ``tau'(0) = 1`` (the transformer's ``init_bias``), so each layer starts close to the identity
    and a deep flow close to its base.

    ``mode="maf"`` (conditioner reads ``y``; ``tau`` maps data to noise; default):
        inverse:  ``x_i = tau(y_i; theta_i(y_<i))``            one pass (density)
        forward:  ``y_i = tau^{-1}(x_i; theta_i(y_<i))``       ``d`` sweeps of numerical root solves
        log|det J| = ``-sum_i log tau'(y_i; theta_i(y_<i))``
    ``mode="iaf"`` (conditioner reads ``x``):
        forward:  ``y_i = tau(x_i; theta_i(x_<i))``            one pass
        inverse:  ``x_i = tau^{-1}(y_i; theta_i(x_<i))``       ``d`` sweeps of numerical root solves
        log|det J| = ``sum_i log tau'(x_i; theta_i(x_<i))``

    Each sweep solves all coordinates at once (vectorised bracketed safeguarded Newton); after
    sweep ``k`` the first ``k`` coordinates in the ordering are exact, and the sweeps stop once one
    moves no value by more than rounding (:mod:`nf_ppl.fixed_point`).

    ``NeuralAutoregressive(key, dim, hidden_dims=(64, 64), num_components=8, mode="maf",
    ordering="natural", context_dim=0, atol=None, rtol=None, max_iter=100, max_expand=64)``.
    """

    static_names = ("mode", "context_dim", "num_components") + _SOLVER_STATICS

    def __init__(self, key, dim: int, hidden_dims: Sequence[int] = (64, 64), *, num_components: int = 8,
                 mode: str = "maf", ordering="natural", context_dim: int = 0, activation: str = "elu",
                 atol=None, rtol=None, max_iter: int = 100, max_expand: int = 64, dtype=None):
        transformer = DeepSigmoid(num_components, atol, rtol, max_iter, max_expand)
        check_mode(mode)
        self.num_components = transformer.num_components
        self.atol, self.rtol = transformer.atol, transformer.rtol
        self.max_iter, self.max_expand = transformer.max_iter, transformer.max_expand
        made = made_for(key, dim, transformer, hidden_dims, ordering, context_dim, activation, dtype)
        self._set_made(made, mode)

    @property
    def num_params(self) -> int:
        return 3 * self.num_components

    @property
    def transformer(self):
        return DeepSigmoid(self.num_components, self.atol, self.rtol, self.max_iter, self.max_expand)


# Module-level jitted entry point of BNAF's numerical direction: the pytree structure (static
# settings) is the cache key, so eager calls compile once instead of re-tracing the loops.
_jit_with_info = jax.jit(lambda layer, v, inverse: layer._with_info_impl(v, inverse), static_argnums=2)


@partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _initial_parameters(key, dim: int, block_sizes: tuple, context_dim: int, cross_scale: float, dtype):
    """Weights (``N(0, 1/fan_in)``, diagonal blocks shifted to start near ``1/sqrt(b_in)``, cross blocks
    times ``cross_scale``), zero log-scales and biases, and the context weight (``N(0, 1/context_dim)``),
    in one compiled program."""
    keys = jax.random.split(key, len(block_sizes))
    weights, log_scales, biases = [], [], []
    for k, b_in, b_out in zip(keys[:-1], block_sizes[:-1], block_sizes[1:]):
        diag, lower = _block_masks(dim, b_out, b_in)
        v = jax.random.normal(k, diag.shape, dtype) / np.sqrt(b_in * dim)
        v = jnp.where(jnp.asarray(diag), v - 0.5 * np.log(b_in), v)  # diagonal entries are exp(V)
        v = jnp.where(jnp.asarray(lower), cross_scale * v, v)
        weights.append(v)
        log_scales.append(jnp.zeros(diag.shape[0], dtype))
        biases.append(jnp.zeros(diag.shape[0], dtype))
    context_weight = None
    if context_dim:
        context_weight = jax.random.normal(keys[-1], (dim * block_sizes[1], context_dim), dtype) / np.sqrt(context_dim)
    return weights, log_scales, biases, context_weight


HIDDEN_SD, CENTRE_SPAN = 1.5, 3.0  # BNAF's initial hidden pre-activations: sd, and the span of their centres


@partial(jax.jit, static_argnums=(2, 3))
def _standardised(layer: BlockNeuralAutoregressive, key, num_draws: int, skip: float):
    """``(log_scales, biases, context_weight)`` of ``layer`` rescaled as
    :meth:`BlockNeuralAutoregressive._standardise_output` describes (``log_scales`` gains the log
    skip weights when ``skip > 0``)."""
    layer = jax.tree_util.tree_map(lambda a: a, layer)  # a copy whose lists this function may update
    layer.log_scales, layer.biases = list(layer.log_scales), list(layer.biases)
    dtype = layer.weights[0].dtype
    x = h = jax.random.normal(key, (num_draws, layer.dim), dtype)
    ctx = jax.random.normal(jax.random.fold_in(key, 1), (num_draws, layer.context_dim), dtype) if layer.context_dim else None
    n = len(layer.weights)
    for l in range(n):
        pre, _ = layer._pre_activation(l, h, ctx)
        target = 1.0 - skip if l == n - 1 else HIDDEN_SD
        mean, sd = jnp.mean(pre, 0), jnp.std(pre, 0)
        factor = target / sd
        layer.log_scales[l] = layer.log_scales[l] + jnp.log(factor)
        layer.biases[l] = (layer.biases[l] - mean) * factor
        if l == 0 and ctx is not None:
            layer.context_weight = layer.context_weight * factor[:, None]
        pre = (pre - mean) * factor
        if l < n - 1:  # the units of each block centred evenly over CENTRE_SPAN input sds either side
            b_out = layer.block_sizes[l + 1]
            centres = np.tile(np.linspace(-1.0, 1.0, b_out) if b_out > 1 else np.zeros(1), layer.dim)
            offsets = jnp.asarray(CENTRE_SPAN * HIDDEN_SD * centres, dtype)
            layer.biases[l], pre = layer.biases[l] - offsets, pre - offsets
        h = leaky_tanh(pre, layer.slope) if l < n - 1 else pre
    if skip > 0:  # N = net + skip * x, rescaled to mean 0 and sd 1
        out = h + skip * x
        rescale = 1.0 / jnp.std(out, 0)
        layer.log_scales[-1] = layer.log_scales[-1] + jnp.log(rescale)
        layer.biases[-1] = (layer.biases[-1] - jnp.mean(out, 0)) * rescale
        layer.log_scales.append(jnp.log(skip * rescale))
    return layer.log_scales, layer.biases, layer.context_weight

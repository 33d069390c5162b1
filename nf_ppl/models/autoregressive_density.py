r"""Autoregressive density models for fixed-dimension vectors (NADE / MADE style).

Model
-----
For ``y = (y_1, ..., y_d)`` and an ordering ``o`` (a permutation of ``0..d-1``)::

    log p(y | x) = sum_{t=1}^{d} log p(y_{o_t} | y_{o_1}, ..., y_{o_{t-1}}, x)

Every conditional's parameters come out of ONE pass of a :class:`~nf_ppl.nn.MADE`
(``out[..., k, i]`` depends only on the inputs before ``i`` in the ordering and on the optional
context ``x``), so ``log_prob`` is one network evaluation.  Families (``conditional=``):

``"gaussian"``     ``N(y_i; mu_i, s_i^2)``; MADE parameters ``(mu, log s)``, 2 per dimension.
``"laplace"``      ``Laplace(y_i; mu_i, s_i)``; ``(mu, log s)``, 2 per dimension.
``"mixture"``      ``sum_k pi_ik N(y_i; mu_ik, s_ik^2)`` with ``K = num_components`` (as in
                   RNADE): per dimension ``K`` logits, ``K`` means and ``K`` log-scales (``3K``).
``"categorical"``  ``Categorical(y_i; softmax(l_i))`` over ``V = num_levels`` levels ``0..V-1``
                   (e.g. 17 grey levels of sklearn's digits); ``V`` logits per dimension.

Log-scales are soft-clamped, ``log s = b * tanh(raw / b)`` with ``b = log_scale_bound``, so scales
stay in ``(e^-b, e^b)`` and densities/gradients stay finite for extreme inputs.

MADE inputs.  Continuous values enter the MADE as they are.  Categorical levels enter as the
scalar ``y_i / (V - 1)`` in ``[0, 1]`` (one MADE input per dimension, so the MADE, its degrees and
the ordering machinery are shared by all families); a one-hot input would need ``V`` inputs per
dimension sharing one degree, which :class:`~nf_ppl.nn.MADE` does not provide.

Sampling (ancestral, at most ``d`` passes).  All noise is drawn first: standard normal / Laplace noise
``eps_i`` and Gumbel noise ``g`` (``g_ik`` for mixture components, ``g_iv`` for levels).  Given the
conditioner output, every coordinate is a deterministic function of its noise
(``y_i = mu_i + s_i eps_i``; the mixture picks ``c = argmax_k(log pi_ik + g_ik)`` then
``y_i = mu_ic + s_ic eps_i``; a categorical picks ``argmax_v(l_iv + g_iv)``).  Starting from
zeros, sweeps ``y <- draw(MADE(y))`` make the first ``t`` coordinates in the ordering exact after
sweep ``t``; after ``d`` sweeps ``y`` is an exact ancestral draw.  The sweeps stop as soon as one
moves no value by more than rounding (a categorical one: changes nothing), which is the same draw
to rounding (:mod:`nf_ppl.fixed_point`; continuous families keep exact reparametrisation gradients
through it).

Orderings and order-agnostic training.  ``ordering="natural" | "reversed" | "random" |
permutation`` fixes the MADE's input degrees at build time.  :meth:`AutoregressiveModel.with_ordering`
returns the same weights under another ordering (the MADE degrees, i.e. its masks, are re-drawn;
hidden degrees are kept unless ``connectivity_key`` re-samples them as in the MADE paper): every
such model is a normalised autoregressive density.  For order-agnostic training (NADE / MADE),
fix an ensemble of orderings with :func:`random_orderings` and train
:meth:`AutoregressiveModel.order_agnostic_log_prob`, which picks one ordering per minibatch with a
traced index (``lax.switch`` over the ensemble's static masks: one compiled function, no retracing).
:meth:`AutoregressiveModel.ensemble_log_prob` is the exact density of the uniform mixture over the
ensemble's orderings.

Pytree layout: children ``(made, context)`` (the MADE's weight arrays are the trainable leaves; a
bound context is a leaf); hashable aux ``(family, num_components, num_levels, log_scale_bound)``;
the MADE's degrees are the MADE's own static aux.  So
``jax.grad(lambda m: -m.log_prob(y).mean())(model)`` returns a model-shaped gradient.

Builder: :func:`autoregressive_model` (same arguments as :meth:`AutoregressiveModel.init`).
Discrete models also report :meth:`AutoregressiveModel.bits_per_dim`; the free function
:func:`bits_per_dim` converts any log-likelihood in nats.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from numpyro.distributions import Distribution, constraints

from .._checks import check_context, check_finite, is_concrete
from ..nn import MADE, resolve_ordering
from .autoregressive_sampling import AutoregressiveSampling, _log_prob_jit
from .orderings import OrderingsMixin, random_orderings  # noqa: F401  (random_orderings re-exported)

__all__ = [
    "AUTOREGRESSIVE_FAMILIES",
    "AutoregressiveModel",
    "autoregressive_model",
    "bits_per_dim",
    "random_orderings",
]

AUTOREGRESSIVE_FAMILIES = ("gaussian", "laplace", "mixture", "categorical")
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def bits_per_dim(log_prob, num_dims: int):
    """``-log_prob / (num_dims * ln 2)``: a log-likelihood in nats as bits per dimension."""
    if not isinstance(num_dims, (int, np.integer)) or isinstance(num_dims, bool) or num_dims < 1:
        raise ValueError(f"num_dims must be a positive integer; got {num_dims!r}")
    return -jnp.asarray(log_prob) / (num_dims * math.log(2.0))


def _check_pos_int(v, name: str, what: str = "") -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer{what}; got {v!r}")
    return int(v)


def _num_params(family: str, num_components: int, num_levels) -> int:
    if family in ("gaussian", "laplace"):
        return 2
    if family == "mixture":
        return 3 * num_components
    return num_levels


def _gaussian_log_pdf(y, loc, log_scale):
    z = (y - loc) * jnp.exp(-log_scale)
    return -0.5 * z * z - log_scale - _HALF_LOG_2PI


class AutoregressiveModel(OrderingsMixin, AutoregressiveSampling, Distribution):
    """Autoregressive density ``p(y | x)`` over vectors of size ``dim`` (see the module docstring).

    Args:
        made: a :class:`~nf_ppl.nn.MADE` with ``num_params`` = 2 (gaussian, laplace), ``3K``
            (mixture) or ``V`` (categorical) parameters per dimension.
        family: ``"gaussian" | "laplace" | "mixture" | "categorical"``.
        num_components: ``K`` for ``"mixture"``.
        num_levels: ``V`` for ``"categorical"``.
        log_scale_bound: soft bound on the log-scales.
        context: a bound context ``(..., context_dim)`` (usually via :meth:`condition`); the batch
            shape is ``context.shape[:-1]``.

    ``event_shape == (dim,)``; values are real vectors, or integer levels in ``[0, V)``.
    Usually built with :meth:`init` / :func:`autoregressive_model`.
    """

    arg_constraints = {}
    pytree_data_fields = ()
    pytree_aux_fields = ()
    has_enumerate_support = False

    def __init__(self, made, family: str = "gaussian", *, num_components: int = 1, num_levels=None,
                 log_scale_bound: float = 5.0, context=None, validate_args=None):
        if not isinstance(made, MADE):
            raise TypeError(f"made must be an nf_ppl.nn.MADE; got {type(made).__name__}")
        if family not in AUTOREGRESSIVE_FAMILIES:
            raise ValueError(f"conditional (family) must be one of {AUTOREGRESSIVE_FAMILIES}; got {family!r}")
        num_components = _check_pos_int(num_components, "num_components")
        if family == "categorical":
            num_levels = _check_pos_int(num_levels, "num_levels", " (the number of discrete levels V)")
        else:
            num_levels = None
        if not family == "mixture":
            num_components = 1
        if not (isinstance(log_scale_bound, (int, float)) and log_scale_bound > 0):
            raise ValueError(f"log_scale_bound must be a positive number; got {log_scale_bound!r}")
        want = _num_params(family, num_components, num_levels)
        if made.num_params != want:
            raise ValueError(
                f"made must output {want} parameters per dimension for family {family!r} "
                f"(num_components={num_components}, num_levels={num_levels}); got num_params={made.num_params}")
        self.made = made
        self._family, self._num_components, self._num_levels = family, num_components, num_levels
        self._log_scale_bound = float(log_scale_bound)
        self.context = None
        if context is not None:
            context = self._prepare_context(context)
        elif made.context_dim:
            pass  # unbound conditional model: log_prob/sample then need context=
        self.context = context
        batch = () if context is None else tuple(context.shape[:-1])
        super().__init__(batch, (made.dim,), validate_args=validate_args)

    # ------------------------------------------------------------------ pytree
    def tree_flatten(self):
        aux = (self._family, self._num_components, self._num_levels, self._log_scale_bound)
        return (self.made, self.context), aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = cls.__new__(cls)
        obj.made, obj.context = children
        obj._family, obj._num_components, obj._num_levels, obj._log_scale_bound = aux
        ctx = obj.context
        batch = tuple(ctx.shape[:-1]) if ctx is not None and hasattr(ctx, "shape") else ()
        Distribution.__init__(obj, batch, (len(obj.made.degrees[0]),), validate_args=False)
        return obj

    def _replace(self, made=None, context=None, keep_context=True):
        made = self.made if made is None else made
        ctx = self.context if (keep_context and context is None) else context
        aux = self.tree_flatten()[1]
        return type(self).tree_unflatten(aux, (made, ctx))

    # ----------------------------------------------------------------- builder
    @classmethod
    def init(cls, key, dim: int, *, conditional: str = "gaussian", hidden_dims: Sequence[int] = (64, 64),
             num_components: int = 5, num_levels=None, ordering="natural", context_dim: int = 0,
             activation: str = "elu", log_scale_bound: float = 5.0, context=None,
             dtype=None) -> "AutoregressiveModel":
        """A fresh model: ``conditional`` picks the family, ``hidden_dims`` the MADE (each >= dim - 1).

        ``num_components`` is used by ``"mixture"`` only, ``num_levels`` (required) by
        ``"categorical"`` only.  Mixture means start spread over ``[-1, 1]`` so the components
        are distinguishable; every other output starts near 0 (the MADE's small last layer).
        """
        dim = _check_pos_int(dim, "dim", " (the event size)")
        if conditional not in AUTOREGRESSIVE_FAMILIES:
            raise ValueError(f"conditional must be one of {AUTOREGRESSIVE_FAMILIES}; got {conditional!r}")
        num_components = _check_pos_int(num_components, "num_components")
        if conditional == "categorical":
            num_levels = _check_pos_int(num_levels, "num_levels", " (the number of discrete levels V)")
        if isinstance(context_dim, bool) or not isinstance(context_dim, (int, np.integer)) or context_dim < 0:
            raise ValueError(f"context_dim must be a non-negative integer; got {context_dim!r}")
        k_order, k_made = jax.random.split(key)
        order = resolve_ordering(ordering, dim, k_order)
        made = MADE.init(k_made, dim, hidden_dims, _num_params(conditional, num_components, num_levels),
                         ordering=order, context_dim=int(context_dim), activation=activation, dtype=dtype)
        # MADE.init scales its draws by a numpy float64, which promotes them under x64: recast
        dtype = jax.dtypes.canonicalize_dtype(dtype or jnp.zeros(()).dtype)
        made = jax.tree.map(lambda a: a if a.dtype == dtype else a.astype(dtype), made)
        if conditional == "mixture" and num_components > 1:
            b = np.array(made.biases[-1]).reshape(3 * num_components, dim)
            b[num_components:2 * num_components] += np.linspace(-1.0, 1.0, num_components)[:, None]
            made.biases[-1] = jnp.asarray(b.reshape(-1), dtype)
        return cls(made, conditional, num_components=num_components, num_levels=num_levels,
                   log_scale_bound=log_scale_bound, context=context)

    # -------------------------------------------------------------- structure
    @property
    def family(self) -> str:
        return self._family

    @property
    def dim(self) -> int:
        return len(self.made.degrees[0])

    @property
    def context_dim(self) -> int:
        return self.made.context_dim

    @property
    def num_levels(self):
        return self._num_levels

    @property
    def num_components(self) -> int:
        return self._num_components

    @property
    def ordering(self) -> tuple[int, ...]:
        """The autoregressive order: ``ordering[t]`` is the coordinate generated at step ``t``."""
        return self.made.ordering

    @property
    def is_discrete(self) -> bool:
        return self._family == "categorical"

    @property
    def support(self):
        if self.is_discrete:
            return constraints.independent(constraints.integer_interval(0, self._num_levels - 1), 1)
        return constraints.real_vector

    @property
    def _dtype(self):
        return self.made.weights[0].dtype

    @property
    def mean(self):
        raise NotImplementedError("no closed-form mean for an autoregressive model; estimate it from samples")

    @property
    def variance(self):
        raise NotImplementedError("no closed-form variance for an autoregressive model; estimate it from samples")

    # ------------------------------------------------------------------ context
    def _prepare_context(self, context):
        if not self.made.context_dim:
            raise ValueError("context was given but the model is not conditional (context_dim=0)")
        if not hasattr(context, "shape"):
            context = jnp.asarray(context)
        check_context(context, self.made.context_dim, "AutoregressiveModel")
        check_finite(context, "context")
        if not jnp.issubdtype(context.dtype, jnp.floating):
            context = jnp.asarray(context, self._dtype)
        return context

    def condition(self, context) -> "AutoregressiveModel":
        """``p(y | context)`` with the same weights; batch shape ``context.shape[:-1]``."""
        return self._replace(context=self._prepare_context(context), keep_context=False)

    def _resolved(self, context):
        if context is not None:
            return self.condition(context)
        if self.made.context_dim and self.context is None:
            check_context(None, self.made.context_dim, "AutoregressiveModel")
        return self

    # ------------------------------------------------------------------ values
    def _check_value(self, value):
        dim = self.dim
        shape = np.shape(value)
        if len(shape) < 1 or shape[-1] != dim:
            raise ValueError(f"value must have shape (..., {dim}) (event size {dim}); got shape {tuple(shape)}")
        if self.is_discrete:
            v = self._num_levels
            if is_concrete(value):
                arr = np.asarray(value)
                if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
                    check_finite(arr, "value")
                    if arr.size and not np.all(np.mod(arr, 1) == 0):
                        raise ValueError(f"value must hold integer levels in [0, num_levels={v}); "
                                         "got non-integer values")
                if arr.size and (arr.min() < 0 or arr.max() >= v):
                    raise ValueError(f"value must hold integer levels in [0, num_levels={v}); "
                                     f"got values in [{arr.min()}, {arr.max()}]")
                return jnp.asarray(arr.astype(np.int32))
            value = jnp.asarray(value)
            return value if jnp.issubdtype(value.dtype, jnp.integer) else value.astype(jnp.int32)
        check_finite(value, "value")
        value = jnp.asarray(value)
        if not jnp.issubdtype(value.dtype, jnp.floating):
            value = value.astype(self._dtype)
        return value

    def _inputs(self, value):
        if self.is_discrete:
            return value.astype(self._dtype) / max(self._num_levels - 1, 1)
        return value

    def _network(self, value):
        """MADE output ``(..., num_params, dim)`` with value and context broadcast together."""
        inp = self._inputs(value)
        ctx = self.context if self.made.context_dim else None
        if ctx is not None:
            batch = jnp.broadcast_shapes(inp.shape[:-1], ctx.shape[:-1])
            inp = jnp.broadcast_to(inp, batch + inp.shape[-1:])
            ctx = jnp.broadcast_to(ctx, batch + ctx.shape[-1:])
        return self.made(inp, ctx)

    def _split(self, out):
        """Family parameters from the MADE output ``(..., P, dim)``."""
        b = self._log_scale_bound
        if self._family in ("gaussian", "laplace"):
            return out[..., 0, :], b * jnp.tanh(out[..., 1, :] / b)
        if self._family == "mixture":
            k = self._num_components
            logits = out[..., :k, :]
            return (jax.nn.log_softmax(logits, axis=-2), out[..., k:2 * k, :],
                    b * jnp.tanh(out[..., 2 * k:, :] / b))
        return (jax.nn.log_softmax(out, axis=-2),)

    def _conditional_log_probs_core(self, value):
        params = self._split(self._network(value))
        if self._family == "categorical":
            (logp,) = params
            idx = jnp.broadcast_to(value, logp.shape[:-2] + value.shape[-1:])
            return jnp.take_along_axis(logp, idx[..., None, :], axis=-2)[..., 0, :]
        y = value
        if self._family == "gaussian":
            loc, log_scale = params
            return _gaussian_log_pdf(y, loc, log_scale)
        if self._family == "laplace":
            loc, log_scale = params
            return -jnp.abs(y - loc) * jnp.exp(-log_scale) - log_scale - math.log(2.0)
        log_w, loc, log_scale = params
        return logsumexp(log_w + _gaussian_log_pdf(y[..., None, :], loc, log_scale), axis=-2)

    def _log_prob_core(self, value):
        return jnp.sum(self._conditional_log_probs_core(value), axis=-1)

    # ------------------------------------------------------------------ public density
    def conditional_log_probs(self, value, *, context=None):
        """Per-dimension ``log p(y_i | y_<i, x)`` of shape ``(..., dim)`` (one network pass)."""
        m = self._resolved(context)
        return _cond_log_probs_jit(m, m._check_value(value))

    def log_prob(self, value, *, context=None):
        """Exact ``log p(y | x)`` in nats (one network pass); shape ``broadcast(value batch, batch_shape)``."""
        m = self._resolved(context)
        return _log_prob_jit(m, m._check_value(value))

    def bits_per_dim(self, value, *, context=None):
        """``-log p(y | x) / (dim ln 2)`` per row (bits per dimension)."""
        return bits_per_dim(self.log_prob(value, context=context), self.dim)

    def __repr__(self) -> str:
        extra = {"mixture": f", num_components={self._num_components}",
                 "categorical": f", num_levels={self._num_levels}"}.get(self._family, "")
        cond = f", context_dim={self.context_dim}" if self.context_dim else ""
        return (f"AutoregressiveModel(family={self._family!r}, dim={self.dim}{extra}{cond}, "
                f"batch_shape={self.batch_shape}, ordering={self.ordering})")


# jitted entry points: the model is a pytree with hashable aux (the MADE degrees included),
# so each configuration/shape compiles once.
_cond_log_probs_jit = jax.jit(lambda m, v: m._conditional_log_probs_core(v))


def autoregressive_model(key, dim: int, *, conditional: str = "gaussian", hidden_dims: Sequence[int] = (64, 64),
                         num_components: int = 5, num_levels=None, ordering="natural", context_dim: int = 0,
                         activation: str = "elu", log_scale_bound: float = 5.0, context=None,
                         dtype=None) -> AutoregressiveModel:
    """Autoregressive density model on a MADE; see :meth:`AutoregressiveModel.init`.

    ``conditional`` = ``"gaussian" | "laplace" | "mixture" (num_components=K) |
    "categorical" (num_levels=V)``; ``ordering`` = ``"natural" | "reversed" | "random" |
    permutation``; ``context_dim > 0`` gives ``p(y | x)`` (``.condition(x)`` or ``context=``).
    """
    return AutoregressiveModel.init(key, dim, conditional=conditional, hidden_dims=hidden_dims,
                                    num_components=num_components, num_levels=num_levels, ordering=ordering,
                                    context_dim=context_dim, activation=activation,
                                    log_scale_bound=log_scale_bound, context=context, dtype=dtype)

"""``Flow``: a base distribution pushed through a bijection, as a NumPyro distribution.

For a bijection ``f`` (base side -> data side) and base density ``p_Z``::

    log p(y) = log p_Z(f^{-1}(y)) - log|det J_f(f^{-1}(y))|

``Flow`` subclasses ``numpyro.distributions.TransformedDistribution``, so NumPyro's handlers,
``TransformReparam``, ``Predictive``, ``SVI`` and ``NUTS`` accept it.  Its pytree leaves are the
trainable layer parameters (plus, if asked, the base location/log-scale, and a bound context),
so ``jax.grad(lambda f: -f.log_prob(x).mean())(flow)`` trains it without NumPyro handlers.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints

from ._checks import check_context, check_finite, check_key, check_sample_shape
from .layers.base import forward_and_log_det, inverse_and_log_det


_CHILDREN = ("transform", "base_loc", "base_log_scale", "context", "base_tail", "base_mixture")  # pytree children
_OPTIONAL_BASES = {"base_tail": "student_t", "base_mixture": "mixture"}  # optional base child -> aux marker


def _check_flattens(transform):
    """A Flow jits its transform as a pytree: a NumPyro ``Transform`` subclass without ``tree_flatten``
    (NumPyro's base class raises an empty ``NotImplementedError``) is refused here, by name."""
    try:
        jax.tree_util.tree_flatten(transform)
    except NotImplementedError:
        name = type(_first_unflattenable(transform)).__name__
        raise TypeError(f"transform {name} cannot be flattened as a JAX pytree (NumPyro's Transform.tree_flatten "
                        f"is not implemented for it), and a Flow passes its transform through jax.jit: derive "
                        f"{name} from numpyro.distributions.transforms.ParameterFreeTransform if it has no "
                        f"parameters, or give it tree_flatten/tree_unflatten; numpyro.distributions."
                        f"TransformedDistribution takes it as it is") from None


def _first_unflattenable(transform):
    """The innermost part of a composed transform (``Chain.layers``, ``ComposeTransform.parts``) that does not
    flatten, else ``transform`` itself."""
    for part in list(getattr(transform, "layers", None) or getattr(transform, "parts", None) or []):
        try:
            jax.tree_util.tree_flatten(part)
        except NotImplementedError:
            return _first_unflattenable(part)
    return transform


class Flow(dist.TransformedDistribution):
    """Normalizing flow distribution with event shape ``event_shape`` (a vector ``(dim,)`` for most flows).

    Args:
        transform: a layer (any NumPyro transform; usually a ``Chain`` or ``Stack``) mapping
            base noise to data.
        event_shape: shape of one draw, e.g. ``(dim,)``.
        base_loc, base_log_scale: optional arrays of the event shape; when given, the base is
            ``Normal(base_loc, exp(base_log_scale))`` and these are trainable leaves.  When
            omitted the base is a fixed standard normal (not a leaf).
        base_tail: optional array of the event shape, the tail parameter ``t`` of each coordinate: the base
            becomes a Student-t with ``df = 1 / (t^2 + 0.001)`` degrees of freedom (learned: a trainable
            leaf; ``t = 0`` is nearly normal, ``t = 0.7`` is ``df = 2``), with the same location and scale as
            above.  The tail parameter is ``1/sqrt(df)``, not ``log df``: a gradient step moves light tails
            (df 30) to heavy ones (df 2) in about half a unit rather than 2.7, so a fit at an ordinary
            step size learns them.  Heavy-tailed targets get tails that an affine
            or spline flow of a Gaussian cannot reach (a flow with linear tails keeps the base's
            tail decay).  Sampling stays reparameterised (Student-t draws are Gaussian draws scaled
            by a Gamma draw, which JAX differentiates in its shape).
        base_mixture: optional ``(logits, locs, log_scales)`` with shapes ``(K,)``, ``(K,) + event_shape``
            and ``(K,) + event_shape``: the base becomes a mixture of ``K`` diagonal Gaussians
            ``sum_k softmax(logits)_k N(locs_k, exp(log_scales_k))`` (all trainable leaves), so a
            multimodal density (separated clusters, a posterior with several modes) needs no
            flow layer to tear one Gaussian apart.  Sampling picks a component, which is not
            reparameterised: the weights learn from the density (maximum likelihood,
            ``inference.MassCovering``), not from an ELBO's reparametrised gradient.  Not with
            ``base_loc``/``base_tail``.
        context_dim: size of the context vector of a conditional flow (0 = unconditional).
        context: a bound context of shape ``batch_shape + (context_dim,)``; usually set through
            :meth:`condition`.
    """

    arg_constraints = {}
    pytree_data_fields = ()
    child_names = _CHILDREN  # pytree children, for messages
    pytree_aux_fields = ()

    def __init__(self, transform, event_shape, *, base_loc=None, base_log_scale=None, base_tail=None,
                 base_mixture=None, context_dim: int = 0, context=None, validate_args=None):
        _check_flattens(transform)
        self.transform = transform
        self.flow_event_shape = tuple(int(s) for s in np.atleast_1d(event_shape))
        self.base_loc, self.base_log_scale = base_loc, base_log_scale
        if base_tail is not None:
            base_tail = jnp.asarray(base_tail)
            if base_tail.shape != self.flow_event_shape:
                raise ValueError(f"base_tail must have the event shape {self.flow_event_shape} (one tail parameter "
                                 f"per coordinate); got shape {base_tail.shape}")
        self.base_tail = base_tail
        self.base_mixture = None if base_mixture is None else _check_mixture(base_mixture, self.flow_event_shape)
        if self.base_mixture is not None and (base_tail is not None or base_loc is not None):
            raise ValueError("base_mixture brings its own locations and scales: pass it without base_loc, "
                             "base_log_scale or base_tail")
        self.context_dim, self.context = int(context_dim), context
        if context is not None:
            check_context(context, self.context_dim, "Flow")
        batch_shape = () if context is None else tuple(jnp.shape(context)[:-1])
        dist.Distribution.__init__(self, batch_shape, self.flow_event_shape, validate_args=False)

    # -- pytree -------------------------------------------------------------------
    def tree_flatten(self):
        return _layout({n: getattr(self, n) for n in _CHILDREN}, self.flow_event_shape, self.context_dim)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = cls.__new__(cls)
        obj.transform, obj.base_loc, obj.base_log_scale, obj.context = children[:4]
        marker = aux[2] if len(aux) > 2 else None
        obj.base_tail = children[4] if marker == "student_t" else None
        obj.base_mixture = children[4] if marker == "mixture" else None
        obj.flow_event_shape, obj.context_dim = aux[:2]
        batch_shape = () if not _has_shape(obj.context) else tuple(jnp.shape(obj.context)[:-1])
        dist.Distribution.__init__(obj, batch_shape, obj.flow_event_shape, validate_args=False)
        return obj

    def astype(self, dtype) -> "Flow":
        """The same flow with every floating-point leaf (parameters, base, context) cast to ``dtype``.

        Precision rule: a flow computes in JAX's promoted dtype of its parameters and its input,
        so a float32 flow used under ``jax_enable_x64`` gives float64 results for float64 inputs
        (and float64 draws, the base being float64 there) while its parameters keep float32
        rounding.  ``flow.astype(jnp.float64)`` gives a float64 flow; a float64 ``dtype`` needs
        ``jax_enable_x64``.
        """
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"dtype must be a floating-point dtype; got {dtype}")

        def cast(leaf):
            return leaf.astype(dtype) if jnp.issubdtype(jnp.result_type(leaf), jnp.floating) else leaf

        return jax.tree_util.tree_map(cast, self)

    def replace(self, **changes) -> "Flow":
        unknown = set(changes) - set(_CHILDREN)
        if unknown:
            raise TypeError(f"Flow.replace got unknown fields {sorted(unknown)}")
        values = {n: changes.get(n, getattr(self, n)) for n in _CHILDREN}
        children, aux = _layout(values, self.flow_event_shape, self.context_dim)
        return type(self).tree_unflatten(aux, children)

    # -- structure --------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(np.prod(self.flow_event_shape))

    @property
    def base_dist(self):
        """``Normal(loc, scale)`` or, with ``base_tail``, ``StudentT(base_df, loc, scale)`` (``loc = 0``,
        ``scale = 1`` unless trainable), independent over the event shape."""
        n = len(self.flow_event_shape)
        if self.base_mixture is not None:
            logits, locs, log_scales = self.base_mixture
            return dist.MixtureSameFamily(dist.Categorical(logits=logits),
                                          dist.Normal(locs, jnp.exp(log_scales)).to_event(n))
        if self.base_loc is None:
            loc = jnp.zeros(self.flow_event_shape, _float(self.base_tail))
            scale = jnp.ones_like(loc)
        else:
            loc, scale = self.base_loc, jnp.exp(self.base_log_scale)
        if self.base_tail is None:
            return dist.Normal(loc, scale).to_event(n)
        return dist.StudentT(self.base_df, loc, scale).to_event(n)

    @property
    def base_df(self):
        """Degrees of freedom of a Student-t base, ``1 / (base_tail^2 + 0.001)`` (None for a normal base)."""
        return None if self.base_tail is None else tail_to_df(self.base_tail)

    @property
    def base_kind(self) -> str:
        """``"normal"`` or ``"student_t"``."""
        if self.base_mixture is not None:
            return "mixture"
        return "normal" if self.base_tail is None else "student_t"

    def base_parts(self) -> dict:
        """The optional base children that are set (``base_tail`` or ``base_mixture``), as ``Flow`` keywords:
        a flow built around this one's base (``Flow(T, shape, **flow.base_parts())``) keeps it."""
        return {name: getattr(self, name) for name in _OPTIONAL_BASES if getattr(self, name) is not None}

    @base_dist.setter
    def base_dist(self, value):  # TransformedDistribution internals may assign it
        raise AttributeError("Flow.base_dist is derived from base_loc/base_log_scale/base_tail")

    @property
    def transforms(self):
        return [self.bound_transform()]

    @property
    def support(self):
        codomain = self.transform.codomain
        extra = len(self.flow_event_shape) - codomain.event_dim
        return constraints.independent(codomain, extra) if extra > 0 else codomain

    @property
    def has_rsample(self):
        return True

    def bound_transform(self):
        """The transform base -> data this flow applies: ``transform`` itself, or for a conditional flow
        ``transform.condition(context)`` with the context given by :meth:`condition` (a clear error
        when none was given).  This is what ``transforms``, ``log_prob`` and ``sample`` use."""
        if self.context_dim:
            check_context(self.context, self.context_dim, "Flow")
            return self.transform.condition(self.context)
        return self.transform

    def condition(self, context) -> "Flow":
        """The conditional distribution ``p(y | context)``; batch shape is ``context.shape[:-1]``."""
        context = jnp.asarray(context)
        check_context(context, self.context_dim, "Flow")
        return self.replace(context=context)

    def _with_context(self, context):
        return self if context is None else self.condition(context)

    # -- density and sampling -------------------------------------------------------------
    def _check_value(self, value):
        value = jnp.asarray(value)
        n = len(self.flow_event_shape)
        if value.shape[value.ndim - n:] != self.flow_event_shape or value.ndim < n:
            raise ValueError(
                f"value must have shape (..., {', '.join(map(str, self.flow_event_shape))}) "
                f"(event shape {self.flow_event_shape}); got shape {value.shape}"
            )
        check_finite(value, "value")
        return value

    def log_prob(self, value, intermediates=None, *, context=None):
        """Exact ``log p(value)``; with ``intermediates`` from ``sample_with_intermediates`` no inverse is run."""
        if context is not None:
            return self.condition(context).log_prob(value, intermediates)
        value = self._check_value(value)
        if intermediates is not None:
            x, log_det = intermediates[0]
            return self.base_dist.log_prob(x) - log_det
        if self.context_dim:
            self.bound_transform()  # a clear error when no context is bound, before tracing
        log_p = _log_prob(self, value)
        if _eager_with_nan(log_p):  # op by op, a numerical inverse that did not converge says so
            log_p = _density(self, value)
        return log_p

    def sample_with_intermediates(self, key, sample_shape=(), *, context=None):
        """Draws and the intermediates ``[(base_draws, log_det)]`` that make ``log_prob`` cheap."""
        if context is not None:
            return self.condition(context).sample_with_intermediates(key, sample_shape)
        check_key(key)
        if self.context_dim:
            self.bound_transform()
        sample_shape = check_sample_shape(sample_shape)
        y, inter = _sample_with_intermediates(self, key, sample_shape)
        if _eager_with_nan(y):  # op by op, a numerical forward pass that did not converge says so
            y, inter = _pushed(self, inter[0][0])
        return y, inter

    def sample(self, key, sample_shape=(), *, context=None):
        """Draws of shape ``sample_shape + batch_shape + event_shape``.  ``key`` is one JAX PRNG key
        (``jax.random.PRNGKey(seed)`` or ``jax.random.key(seed)``; anything else is a TypeError
        naming it); ``sample_shape`` a tuple of ints, or an int ``n`` for ``(n,)``."""
        return self.sample_with_intermediates(key, sample_shape, context=context)[0]

    def rsample(self, key, sample_shape=()):
        return self.sample(key, sample_shape)

    def sample_and_log_prob(self, key, sample_shape=(), *, context=None):
        """Draws and their exact log-density from one forward pass (cheap for IAF-type flows)."""
        flow = self._with_context(context)
        y, inter = flow.sample_with_intermediates(key, sample_shape)
        return y, flow.log_prob(y, inter)

    @property
    def mean(self):
        raise NotImplementedError("a flow's mean has no closed form; estimate it from samples")

    @property
    def variance(self):
        raise NotImplementedError("a flow's variance has no closed form; estimate it from samples")

    def entropy(self):
        raise NotImplementedError("a flow's entropy has no closed form; estimate it from samples as "
                                  "-flow.log_prob(flow.sample(key, (n,))).mean() (sample_and_log_prob does it in one pass)")

    def __repr__(self) -> str:
        cond = f", context_dim={self.context_dim}" if self.context_dim else ""
        return f"Flow(event_shape={self.flow_event_shape}, batch_shape={self.batch_shape}{cond}, transform={self.transform!r})"


# The density and sampling passes run as one compiled program per flow structure and shape.  Inside a
# trace (jit, grad, vmap, SVI) this only names a sub-computation; called eagerly, it replaces
# op-by-op dispatch, which compiled a small program per operation and shape (a 5-layer maf's first
# eager log_prob took 1.6 s and every later one 0.3 s, against 0.35 s and under 1 ms jitted).
# A NaN in an eager result repeats the pass op by op, so errors raised on concrete values still are.
def _eager_with_nan(values) -> bool:
    """True for concrete values with a NaN: the compiled pass is then repeated op by op, where a
    layer's numerical solve that did not converge raises its own error instead of returning NaN."""
    return not isinstance(values, jax.core.Tracer) and bool(jnp.isnan(values).any())


def _density(flow: Flow, value):
    """``log p(value)`` through the inverse pass."""
    x, log_det = inverse_and_log_det(flow.bound_transform(), value)
    return flow.base_dist.log_prob(x) - log_det


def _pushed(flow: Flow, x):
    """Base draws ``x`` pushed to data, with the intermediates ``[(x, log_det)]``."""
    y, log_det = forward_and_log_det(flow.bound_transform(), x)
    return y, [(x, log_det)]


_log_prob = jax.jit(_density)


@partial(jax.jit, static_argnums=2)
def _sample_with_intermediates(flow: Flow, key, sample_shape: tuple):
    return _pushed(flow, flow.base_dist.expand(flow.batch_shape).sample(key, sample_shape))


def _layout(values: dict, event_shape, context_dim):
    """``(children, aux)`` of a flow: an optional base (Student-t, mixture) adds a fifth child and an aux marker
    naming it; a normal base keeps the first layout, so flows saved before those bases existed load unchanged."""
    children = tuple(values[n] for n in _CHILDREN[:4])
    for name, marker in _OPTIONAL_BASES.items():
        if values[name] is not None:
            return children + (values[name],), (event_shape, context_dim, marker)
    return children, (event_shape, context_dim)


def _check_mixture(base_mixture, event_shape):
    """``(logits, locs, log_scales)`` with shapes ``(K,)``, ``(K,) + event_shape`` twice, or a ValueError."""
    if not isinstance(base_mixture, (tuple, list)) or len(base_mixture) != 3:
        raise ValueError("base_mixture must be a tuple (logits, locs, log_scales)")
    logits, locs, log_scales = (a if hasattr(a, "shape") else jnp.asarray(a) for a in base_mixture)
    k = logits.shape[0] if len(logits.shape) == 1 else 0
    want = (k,) + tuple(event_shape)
    if k < 1 or tuple(locs.shape) != want or tuple(log_scales.shape) != want:
        raise ValueError(f"base_mixture must hold logits of shape (K,) and locs and log_scales of shape (K,) + "
                         f"{tuple(event_shape)}; got shapes {tuple(logits.shape)}, {tuple(locs.shape)}, "
                         f"{tuple(log_scales.shape)}")
    return (logits, locs, log_scales)


def tail_to_df(tail):
    """``df = 1 / (tail^2 + 0.001)``: the Student-t base's degrees of freedom (at most 1000)."""
    return 1.0 / (tail * tail + 0.001)


def df_to_tail(df):
    """The tail parameter of ``df`` degrees of freedom (``df <= 1000``)."""
    return jnp.sqrt(1.0 / jnp.asarray(df) - 0.001)


def _float(x):
    """The float dtype of ``x`` (the default float when ``x`` is None)."""
    return jnp.result_type(float) if x is None else jnp.result_type(x)


def _has_shape(x) -> bool:
    return x is not None and hasattr(x, "shape")

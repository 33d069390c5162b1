"""The contract every nf-ppl layer follows on top of NumPyro's ``Transform``.

A layer maps base-side values ``x`` (the noise side) to data-side values ``y`` (sampling
direction), exactly as ``numpyro.distributions.TransformedDistribution`` uses transforms::

    log p_Y(y) = log p_X(f^{-1}(y)) - log|det J_f(f^{-1}(y))|

Each layer implements the *fused* maps ``forward_and_log_det(x) -> (y, log|det J_f(x)|)`` and
``inverse_and_log_det(y) -> (x, log|det J_f(x)|)`` so a flow never runs a conditioner twice.
NumPyro's API (``__call__``, ``_inverse``, ``log_abs_det_jacobian``,
``call_with_intermediates``) is derived from them; the intermediates of
``call_with_intermediates`` are the log-determinant itself, so the log-density of a flow's own
samples costs no inverse pass.

Pytrees: the leaves of a layer are its trainable parameter arrays (names in ``param_names``)
plus an optional bound ``context``; everything else (names in ``static_names``) is hashable
auxiliary data.  So ``jax.jit``, ``jax.grad`` and ``jax.vmap`` see a layer as a plain pytree.
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp
from numpyro.distributions import constraints
from numpyro.distributions.transforms import Transform

from .._checks import check_context, check_event_size


class Bijector(Transform):
    """Base class of all nf-ppl layers (a NumPyro ``Transform``).

    Subclasses set ``param_names``/``static_names``, ``event_dim`` (0 for elementwise maps whose
    log-det is per element, 1 for maps of vectors), and implement ``forward_and_log_det`` and
    ``inverse_and_log_det``.
    """

    param_names: ClassVar[tuple[str, ...]] = ()
    static_names: ClassVar[tuple[str, ...]] = ()
    event_dim: ClassVar[int] = 1
    context_dim: int = 0
    context = None

    # -- constraints -----------------------------------------------------------------
    @property
    def domain(self):
        return _real(self.event_dim)

    @property
    def codomain(self):
        return _real(self.event_dim)

    @property
    def event_size(self) -> int | None:
        """Length of the vectors the layer acts on, or None when it acts on any length."""
        return None

    # -- pytree ---------------------------------------------------------------------
    def tree_flatten(self):
        children = tuple(getattr(self, n) for n in self.param_names) + (self.context,)
        aux = tuple(getattr(self, n) for n in self.static_names)
        return children, aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = cls.__new__(cls)
        for name, value in zip(cls.param_names, children[:-1]):
            object.__setattr__(obj, name, value)
        obj.context = children[-1]
        for name, value in zip(cls.static_names, aux):
            object.__setattr__(obj, name, value)
        return obj

    def data_init(self, y):
        """Data-dependent initialisation: ``(initialised layer, x)`` with ``x`` the inverse image of
        ``y``, the values arriving at this layer from the data side.  The default leaves the layer
        unchanged; ActNorm-like layers set their parameters from ``y``, compositions initialise their
        layers from the data side towards the base (see :func:`nf_ppl.data_init`)."""
        return self, inverse_and_log_det(self, y)[0]

    def replace(self, **changes) -> "Bijector":
        """A copy with some parameters (or the context) replaced."""
        children, aux = self.tree_flatten()
        names = self.param_names + ("context",)
        unknown = set(changes) - set(names)
        if unknown:
            raise TypeError(f"{type(self).__name__}.replace got unknown fields {sorted(unknown)}")
        children = tuple(changes.get(n, c) for n, c in zip(names, children))
        return type(self).tree_unflatten(aux, children)

    # -- conditioning ----------------------------------------------------------------
    def condition(self, context) -> "Bijector":
        """Bind a context array of shape (..., context_dim) for conditional layers."""
        if not self.context_dim:
            return self
        context = jnp.asarray(context)
        check_context(context, self.context_dim, type(self).__name__)
        return self.replace(context=context)

    def _context(self):
        check_context(self.context, self.context_dim, type(self).__name__)
        return self.context

    def _check_input(self, x, name: str = "x") -> None:
        if self.event_size is not None:
            check_event_size(x, self.event_size, name=name)

    # -- fused maps (to implement) -------------------------------------------------------
    def forward_and_log_det(self, x):
        """Return ``(y, log|det J_f(x)|)``."""
        raise NotImplementedError

    def inverse_and_log_det(self, y):
        """Return ``(x, log|det J_f(x)|)`` with ``x = f^{-1}(y)``."""
        raise NotImplementedError

    # -- NumPyro API derived from the fused maps -----------------------------------------
    def __call__(self, x):
        return self.forward_and_log_det(x)[0]

    def _inverse(self, y):
        return self.inverse_and_log_det(y)[0]

    def call_with_intermediates(self, x):
        y, log_det = self.forward_and_log_det(x)
        return y, log_det

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        if intermediates is not None:
            return intermediates
        return self.forward_and_log_det(x)[1]

    def forward_shape(self, shape):
        return tuple(shape)

    def inverse_shape(self, shape):
        return tuple(shape)

    def __repr__(self) -> str:
        static = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.static_names if n != "treedef")
        return f"{type(self).__name__}({static})"


def _real(event_dim: int):
    if event_dim == 0:
        return constraints.real
    if event_dim == 1:
        return constraints.real_vector
    return constraints.independent(constraints.real, event_dim)


def vector_log_det(log_det, transform) -> jnp.ndarray:
    """Sum an elementwise log-det over the event axis so every layer reports one per vector."""
    event_dim = getattr(transform, "event_dim", None)
    if event_dim is None:
        event_dim = transform.codomain.event_dim
    return jnp.sum(log_det, axis=-1) if event_dim == 0 else log_det


def forward_and_log_det(transform, x):
    """Fused forward map of any NumPyro transform, log-det summed to one per vector."""
    if isinstance(transform, Bijector):
        y, log_det = transform.forward_and_log_det(x)
    else:
        y, inter = transform.call_with_intermediates(x)
        log_det = transform.log_abs_det_jacobian(x, y, inter)
    log_det = vector_log_det(jnp.broadcast_to(log_det, jnp.shape(y)[: jnp.ndim(y) - _ev(transform)]), transform)
    return y, log_det


def inverse_and_log_det(transform, y):
    """Fused inverse map of any NumPyro transform; the log-det is the forward one at x."""
    if isinstance(transform, Bijector):
        x, log_det = transform.inverse_and_log_det(y)
    else:
        x = transform.inv(y)
        log_det = transform.log_abs_det_jacobian(x, y)
    # the batch of the output x (a bound context may broadcast it beyond y's batch)
    log_det = vector_log_det(jnp.broadcast_to(log_det, jnp.shape(x)[: jnp.ndim(x) - _ev(transform)]), transform)
    return x, log_det


class KeyedInit:
    """``Layer.init(key, dim, ...)`` for layers whose constructor already is ``Layer(key, dim, ...)``.

    The construction rule of the layers: a layer whose start is random has
    ``Layer.init(key, dim_or_shape, ...)``; a layer that starts at a fixed map (the identity) has
    ``Layer.init(dim_or_shape, ...)``.  Layers built by ``Layer(key, dim, ...)`` (the couplings, the
    autoregressive and neural layers) get the ``init`` spelling here too, with the same arguments.
    """

    @classmethod
    def init(cls, key, dim, *args, **kwargs):
        return cls(key, dim, *args, **kwargs)


def data_init(transform, y):
    """Data-dependent initialisation of any transform: ``(initialised transform, x)`` where ``x`` is the
    inverse image of ``y``.  Layers with a ``data_init(y)`` method (every :class:`Bijector`; ActNorm,
    ImageActNorm, compositions) decide for themselves; any other NumPyro transform is unchanged."""
    if hasattr(transform, "data_init"):
        return transform.data_init(y)
    return transform, transform.inv(y)


def _ev(transform) -> int:
    event_dim = getattr(transform, "event_dim", None)
    return transform.codomain.event_dim if event_dim is None else event_dim

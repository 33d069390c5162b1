r"""NumPyro transforms built from SymPy maps.

:class:`SymbolicTransform` takes forward expressions :math:`y = f(x)`, derives
:math:`\log\lvert\det J_f(x)\rvert` and the inverse with SymPy (see
:mod:`symbolic.change_of_variables`) and compiles them to JAX. One input
gives an elementwise transform (``event_dim = 0``); ``d > 1`` inputs give a
vector transform on the last axis (``event_dim = 1``).

Pytree layout: numeric parameter values are the leaves (so they can be
traced by ``jit``/``grad``, e.g. learned in SVI); everything symbolic lives in
a hashable, immutable :class:`TransformSpec` used as auxiliary data, and the
compiled functions are cached per spec.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp
from numpyro.distributions import constraints
from numpyro.distributions.transforms import ComposeTransform, Transform, biject_to

from nf_ppl._checks import is_concrete

from .change_of_variables import ChangeOfVariables, InverseNotFoundWarning
from .codegen import jax_function, vector_function

__all__ = ["SymbolicTransform", "TransformSpec", "SymPyRegion"]


@dataclass(frozen=True)
class TransformSpec:
    """Hashable symbolic description of a :class:`SymbolicTransform`."""

    forward: tuple
    inputs: tuple
    outputs: tuple
    parameters: tuple
    log_abs_det: sp.Expr
    inverse: tuple | None
    domain: tuple  # one Interval per input
    codomain: sp.Basic  # Interval (one output) or a Boolean condition in the outputs
    name: str | None = None

    @property
    def dim(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True)
class _Compiled:
    forward: object
    inverse: object
    log_abs_det: object


@functools.lru_cache(maxsize=256)
def _compile(spec: TransformSpec) -> _Compiled:
    vec = spec.dim > 1
    forward = vector_function(spec.inputs, spec.parameters, spec.forward, vector_input=vec, vector_output=vec)
    logdet = vector_function(spec.inputs, spec.parameters, [spec.log_abs_det], vector_input=vec,
                             vector_output=False)
    inverse = None
    if spec.inverse is not None:
        inverse = vector_function(spec.outputs, spec.parameters, spec.inverse, vector_input=vec,
                                  vector_output=vec)
    return _Compiled(forward, inverse, logdet)


class SymPyRegion(constraints.Constraint):
    """A constraint given by a SymPy condition on the outputs (e.g. the unit disc).

    As the codomain of a :class:`SymbolicTransform` it remembers that transform (``image_of``),
    and ``biject_to`` maps unconstrained space onto it through the transform's domain:
    ``biject_to(region) = transform o biject_to(transform.domain)``.  So a
    ``TransformedDistribution`` through a ``SymbolicTransform`` can be a NUTS latent.  A region
    without a transform has no such rule (``biject_to`` says so).
    """

    def __init__(self, condition, symbols, feasible_point, image_of=None):
        self.condition = condition
        self.symbols = tuple(symbols)
        self.feasible_point = tuple(float(v) for v in feasible_point)
        self.event_dim = 1 if len(self.symbols) > 1 else 0
        self.image_of = image_of

    def __call__(self, x):
        fn = _region_function(self.condition, self.symbols)
        args = [x[..., i] for i in range(len(self.symbols))] if self.event_dim else [x]
        return jnp.asarray(fn(*args)[0], dtype=bool)

    def feasible_like(self, prototype):
        point = jnp.asarray(self.feasible_point, dtype=jnp.result_type(prototype))
        return jnp.broadcast_to(point if self.event_dim else point[0], jnp.shape(prototype))

    def tree_flatten(self):
        return (), ((), {"condition": self.condition, "symbols": self.symbols,
                         "feasible_point": self.feasible_point, "event_dim": self.event_dim,
                         "image_of": self.image_of})

    def __repr__(self):
        return f"SymPyRegion({self.condition})"


@biject_to.register(SymPyRegion)
def _biject_to_region(region):
    if region.image_of is None:
        raise NotImplementedError(
            f"biject_to has no rule for {region!r}: it is not the codomain of a SymbolicTransform; describe the "
            "space as the image of a SymbolicTransform (its codomain) or with NumPyro constraints")
    transform = region.image_of
    return ComposeTransform([biject_to(transform.domain), transform])


@functools.lru_cache(maxsize=128)
def _region_function(condition, symbols):
    return jax_function(symbols, [condition])


def _interval_constraint(iv: sp.Interval):
    lo, hi = iv.inf, iv.sup
    if lo == -sp.oo and hi == sp.oo:
        return constraints.real
    if hi == sp.oo:
        return constraints.positive if lo == 0 else constraints.greater_than(float(lo))
    if lo == -sp.oo:
        return constraints.less_than(float(hi))
    if lo == 0 and hi == 1:
        return constraints.unit_interval
    return constraints.interval(float(lo), float(hi))


def _box_constraint(intervals, symbols):
    if len(intervals) == 1:
        return _interval_constraint(intervals[0])
    if all(iv == sp.Interval(-sp.oo, sp.oo) for iv in intervals):
        return constraints.real_vector
    if all(iv.inf.is_finite and iv.sup.is_finite for iv in intervals):
        lo = jnp.asarray([float(iv.inf) for iv in intervals])
        hi = jnp.asarray([float(iv.sup) for iv in intervals])
        return constraints.independent(constraints.interval(lo, hi), 1)
    cond = sp.And(*[iv.as_relational(s) for iv, s in zip(intervals, symbols)])
    feasible = [_interior_point(iv) for iv in intervals]
    return SymPyRegion(cond, symbols, feasible)


def _interior_point(iv):
    lo, hi = iv.inf, iv.sup
    if lo.is_finite and hi.is_finite:
        return float((lo + hi) / 2)
    if lo.is_finite:
        return float(lo) + 1.0
    if hi.is_finite:
        return float(hi) - 1.0
    return 0.0


class SymbolicTransform(Transform):
    r"""A NumPyro ``Transform`` whose forward map is given by SymPy expressions.

    Parameters
    ----------
    forward:
        Expression(s) :math:`f_i(x)` of the input symbols (a square map).
    inputs:
        The input symbols.
    inverse:
        Optional inverse expression(s) of the output symbols; by default
        SymPy solves :math:`y = f(x)` and picks the branch the support allows.
    support:
        The domain (see :func:`symbolic.change_of_variables`); default: all of
        :math:`\mathbb{R}^d`.
    params:
        ``{symbol: value}`` for constants in the map; the values are pytree
        leaves, so they may be JAX arrays, tracers or learned parameters.
        Their symbols should carry the assumptions they satisfy (e.g. ``positive=True``).
    outputs:
        Output symbols used for the inverse and the codomain.
    """

    def __init__(self, forward, inputs, *, inverse=None, support=None, params=None, outputs=None,
                 name=None):
        params = dict(params or {})
        symbols = tuple(params)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cov = ChangeOfVariables(forward, inputs, None, support, outputs=outputs, parameters=symbols,
                                    inverse=inverse, check_normalization=False, name=name)
        for w in caught:
            if issubclass(w.category, InverseNotFoundWarning):
                warnings.warn(f"SymbolicTransform has no inverse: {cov.reason}", InverseNotFoundWarning,
                              stacklevel=2)
        if not cov.is_square:
            raise ValueError(f"SymbolicTransform needs a square Jacobian: {cov.reason}")
        self.spec = _spec_from(cov, name)
        self.params = tuple(params.values())

    # ---------------------------------------------------------------- pytree

    def tree_flatten(self):
        return (self.params,), self.spec

    @classmethod
    def tree_unflatten(cls, aux_data, children):
        self = cls.__new__(cls)
        self.spec = aux_data
        (self.params,) = children
        return self

    # ---------------------------------------------------------------- Transform API

    @property
    def _fns(self) -> _Compiled:
        return _compile(self.spec)

    @property
    def domain(self):
        return _box_constraint(self.spec.domain, self.spec.inputs)

    @property
    def codomain(self):
        cod = self.spec.codomain
        if isinstance(cod, sp.Interval):
            bounds = [cod.inf, cod.sup]
            if any(b.free_symbols for b in bounds):
                return constraints.real
            return _interval_constraint(cod)
        if cod == sp.true:
            return constraints.real_vector if self.spec.dim > 1 else constraints.real
        inner = [_interior_point(iv) for iv in self.spec.domain]
        feasible = [float(sp.N(e.subs(dict(zip(self.spec.inputs, inner))))) for e in self.spec.forward]
        if cod.free_symbols & set(self.spec.parameters):
            return constraints.real_vector
        return SymPyRegion(cod, self.spec.outputs, feasible, image_of=self)

    def __call__(self, x):
        return self._fns.forward(x, self.params)

    def _inverse(self, y):
        if self._fns.inverse is None:
            raise ValueError(
                f"SymbolicTransform {self.spec.name or self.spec.forward} has no inverse: SymPy could "
                "not solve for it; pass inverse=... to SymbolicTransform"
            )
        return self._fns.inverse(y, self.params)

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        return self._fns.log_abs_det(x, self.params)

    @property
    def sign(self):
        """+1 for an increasing map, -1 for a decreasing one (one input; e.g. for ``cdf``).

        SymPy decides it from the derivative on the domain where it can; otherwise, since the
        map is invertible and continuous on an interval (hence strictly monotone), the sign of
        its derivative at interior points, with the current parameter values, decides it (and
        all of them must agree).
        """
        if self.spec.dim != 1:
            raise NotImplementedError("sign is only defined for one-dimensional SymbolicTransforms")
        x = self.spec.inputs[0]
        deriv = sp.diff(self.spec.forward[0], x)
        iv = self.spec.domain[0]
        if not self.spec.parameters or not deriv.free_symbols & set(self.spec.parameters):
            facts = _interval_assumptions(x, iv)
            if sp.ask(sp.Q.positive(deriv), facts):
                return 1.0
            if sp.ask(sp.Q.negative(deriv), facts):
                return -1.0
        points = jnp.asarray(_interior_points(iv))
        slopes = jax.vmap(jax.grad(lambda t: self(t)))(points)
        if not all(is_concrete(p) for p in self.params):
            raise NotImplementedError(f"the sign of {deriv} on {iv} depends on traced parameter values")
        signs = set(np.sign(np.asarray(slopes)).tolist())
        if signs == {1.0}:
            return 1.0
        if signs == {-1.0}:
            return -1.0
        raise ValueError(f"{self!r} is not monotone on {iv}: its derivative {deriv} has signs {sorted(signs)} "
                         "at interior points")

    def eq(self, other, static=False):
        if not isinstance(other, SymbolicTransform) or other.spec != self.spec:
            return False
        if static:
            return all(a is b for a, b in zip(self.params, other.params))
        return all(bool(jnp.all(jnp.asarray(a) == jnp.asarray(b))) for a, b in zip(self.params, other.params))

    def __eq__(self, other):  # NumPyro < 0.19 does not route == through eq()
        return bool(self.eq(other, static=True))

    __hash__ = None  # as NumPyro's own transforms: equal transforms need not share a hash

    def __repr__(self):
        label = self.spec.name or ", ".join(map(str, self.spec.forward))
        return f"SymbolicTransform({label})"


def _interior_points(iv, count: int = 9) -> list[float]:
    """Points strictly inside an interval, spread over it (log-spaced into infinite ends)."""
    lo, hi = iv.inf, iv.sup
    if lo.is_finite and hi.is_finite:
        a, b = float(lo), float(hi)
        return [a + (b - a) * (i + 1) / (count + 1) for i in range(count)]
    offsets = [10.0 ** k for k in np.linspace(-2, 2, count)]
    if lo.is_finite:
        return [float(lo) + o for o in offsets]
    if hi.is_finite:
        return [float(hi) - o for o in offsets]
    return [-o for o in offsets[::-2]] + [0.0] + offsets[1::2]


def _interval_assumptions(x, iv):
    facts = []
    if iv.inf.is_finite:
        facts.append(sp.Q.ge(x, iv.inf))
    if iv.sup.is_finite:
        facts.append(sp.Q.le(x, iv.sup))
    facts.append(sp.Q.real(x))
    return sp.And(*facts)


def _spec_from(cov: ChangeOfVariables, name) -> TransformSpec:
    inverse = None
    if cov.has_density:
        if len(cov.branches) != 1:
            raise ValueError(
                f"the map is not injective on the support ({len(cov.branches)} inverse branches: "
                f"{cov.branches}); restrict the support or pass inverse=..."
            )
        inverse = cov.branches[0]
        codomain = cov.output_support
    else:
        codomain = sp.true
    if isinstance(codomain, sp.Interval) and codomain == sp.Interval(-sp.oo, sp.oo):
        codomain = sp.true
    return TransformSpec(
        forward=cov.forward,
        inputs=cov.inputs,
        outputs=cov.outputs,
        parameters=cov.parameters,
        log_abs_det=cov.log_abs_det,
        inverse=inverse,
        domain=cov.support,
        codomain=codomain,
        name=name,
    )

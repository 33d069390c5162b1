"""Helpers of :mod:`symbolic.change_of_variables`: simplification, log|det| in closed form, images of
intervals, SymPy's solver (whole system or step by step), numerical quadrature of a derived density,
and the small types the derivation passes around."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import sympy as sp

from sympy.core.function import AppliedUndef


_N_SAMPLES = 48
_PARAM_VALUES = (1.37, 0.81, 2.23, 1.61, 0.57, 1.19)


class InverseNotFoundWarning(UserWarning):
    """SymPy could not find a (complete) inverse of the map."""


class _SolveFailure(Exception):
    pass


@dataclass(frozen=True)
class _Branch:
    inverse: tuple  # expressions in the internal output symbols
    condition: sp.Basic  # where this branch lands in the support (sympy.true: everywhere)


# ----------------------------------------------------------------------------- helpers


def _simplify(expr):
    """``sympy.simplify`` followed by a logarithm expansion where it is valid."""
    expr = sp.simplify(expr)
    expanded = sp.expand_log(expr)
    return expanded if sp.count_ops(expanded) <= sp.count_ops(expr) else expr


def log_abs(det) -> sp.Expr:
    r""":math:`\log\lvert\det\rvert` split over the factors of ``det``.

    Uses :math:`\log\lvert\prod_k a_k^{n_k}\rvert = \sum_k n_k \log\lvert a_k\rvert`
    (integer :math:`n_k`, or :math:`a_k > 0`) and :math:`\log\lvert e^u\rvert = u` for real :math:`u`.
    """
    det = sp.sympify(det)
    terms = []
    for factor in sp.Mul.make_args(det):
        base, expo = factor.as_base_exp()
        if expo != 1 and (expo.is_integer or base.is_positive):
            terms.append(expo * _log_abs_factor(base))
        else:
            terms.append(_log_abs_factor(factor))
    return sp.Add(*terms)


def _log_abs_factor(e):
    if isinstance(e, sp.exp) and e.args[0].is_real:
        return e.args[0]
    if e.is_number:
        return sp.log(sp.Abs(e))
    out = sp.log(e) if e.is_positive else sp.log(sp.Abs(e))
    simpler = sp.simplify(out)
    return simpler if sp.count_ops(simpler) < sp.count_ops(out) else out


def _param_values(parameters):
    vals = []
    for i, p in enumerate(parameters):
        v = _PARAM_VALUES[i % len(_PARAM_VALUES)]
        vals.append(-v if p.is_negative else v)
    return vals


def _tidy_condition(cond):
    """Rewrite ``sqrt(e) <= c`` (``c >= 0``) as ``e <= c**2``, and ``arg(e) = 0`` (a real ``log(e)``) as
    ``e > 0`` for a real ``e``, for readability."""

    def fix(rel):
        lhs, rhs = rel.lhs, rel.rhs
        if isinstance(lhs, sp.Pow) and lhs.exp == sp.S.Half and rhs.is_nonnegative:
            return rel.func(lhs.base, rhs**2)
        return rel

    def positive(rel):
        (e,) = rel.lhs.args
        real = e.is_real or (all(v.is_real for v in e.free_symbols) and e.is_rational_function(*e.free_symbols))
        return e > 0 if real else rel

    cond = cond.replace(lambda e: isinstance(e, (sp.Le, sp.Lt)), fix)
    return cond.replace(lambda e: isinstance(e, sp.Eq) and isinstance(e.lhs, sp.arg) and e.rhs == 0, positive)


def _image_interval(f, x, interval) -> sp.Interval:
    """Image of an interval under a continuous scalar map."""
    image = sp.imageset(sp.Lambda(x, f), interval)
    if isinstance(image, sp.Interval):
        return image
    if image == sp.Reals:
        return sp.Interval(-sp.oo, sp.oo)
    from sympy.calculus.util import function_range

    image = function_range(f, x, interval)
    if isinstance(image, sp.Interval):
        return image
    raise _SolveFailure(f"could not determine the image of {interval} under {f}")


def _simplest(expr):
    """The shortest of a few simplifications (``radsimp`` helps with solved radicals)."""
    options = [expr, sp.simplify(expr), sp.simplify(sp.radsimp(expr))]
    return min(options, key=sp.count_ops)


def _drop_null_pieces(expr):
    """Remove ``Piecewise`` pieces on equalities (null sets, e.g. ``x = 0`` from ``sign'``)."""

    def fix(pw):
        kept = [(e, c) for e, c in pw.args if not isinstance(c, sp.Eq)]
        if not kept or len(kept) == len(pw.args):
            return pw
        if kept[-1][1] != sp.true:
            kept[-1] = (kept[-1][0], sp.true)
        return kept[0][0] if len(kept) == 1 else sp.Piecewise(*kept)

    return expr.replace(lambda e: isinstance(e, sp.Piecewise), fix)


def _from_random_variables(base, inputs, support):
    """A ``sympy.stats`` random variable (or one per input) as base: its density in the inputs, and its
    support where none was given."""
    from sympy.stats.rv import RandomSymbol

    rvs = base if isinstance(base, (list, tuple)) else [base]
    if not rvs or not all(isinstance(rv, RandomSymbol) for rv in rvs):
        return base, support
    if len(rvs) != len(inputs):
        raise ValueError(f"base_density gives {len(rvs)} sympy.stats random variables for {len(inputs)} inputs; "
                         "give one (independent) random variable per input")
    from sympy import stats

    density = sp.Mul(*[stats.density(rv)(x) for rv, x in zip(rvs, inputs)])
    if support is None:
        support = {x: rv.pspace.domain.set for rv, x in zip(rvs, inputs)}
    return density, support


def _declared_real(function) -> bool:
    """Whether an undefined SymPy function was declared real-valued (``real=True``, ``positive=True``...)."""
    try:
        return bool(function(sp.Dummy()).is_real)
    except TypeError:  # a fixed number of arguments other than one
        return bool(function(*sp.symbols(f"_a0:{min(function.nargs)}")).is_real)


def _square_roots(expr) -> list:
    """The ``sqrt(e)`` terms of ``expr`` (as SymPy writes them, ``Pow(e, 1/2)``)."""
    return [p for p in expr.atoms(sp.Pow) if p.exp == sp.S.Half]


def _monotone_image(f, x, interval):
    """Image of an interval under an injective map, continuous (hence monotone) between its poles:
    the union of the end limits' intervals of the pieces (``1/x`` on ``(-1, 1)``: ``(-oo, -1]`` and
    ``[1, oo)``)."""
    from sympy.calculus.singularities import singularities

    try:
        poles = singularities(f, x, sp.Interval.open(interval.inf, interval.sup))
    except (NotImplementedError, ValueError, TypeError):
        poles = sp.S.EmptySet
    if not isinstance(poles, sp.FiniteSet) or not all(p.is_real for p in poles):
        poles = sp.FiniteSet()
    edges = [interval.inf, *sorted(poles, key=float), interval.sup]
    images = []
    for a, b in zip(edges, edges[1:]):
        try:
            ends = [sp.limit(f, x, a, "+"), sp.limit(f, x, b, "-")]
        except (NotImplementedError, ValueError):
            return None
        if any(not e.is_extended_real for e in ends):
            return None
        images.append(sp.Interval(sp.Min(*ends), sp.Max(*ends)))
    return sp.Union(*images)


def _sympy_solve(forward, xs, ys):
    """All candidate inverse branches from ``sympy.solve`` (may raise _SolveFailure)."""
    eqs = [fi - yi for fi, yi in zip(forward, ys)]
    try:
        if len(xs) == 1:
            sols = [(s,) for s in sp.solve(eqs[0], xs[0])]
        else:
            sols = [
                tuple(sol[x] for x in xs)
                for sol in sp.solve(eqs, xs, dict=True)
                if all(x in sol for x in xs)
            ]
    except NotImplementedError as err:
        raise _SolveFailure(f"SymPy could not solve y = f(x) for the inputs ({err})") from err
    sols = [tuple(_simplest(e) for e in s) for s in sols if not any(e.has(*xs) for e in s)]
    if not sols:
        raise _SolveFailure("SymPy could not solve y = f(x) for the inputs (no solution found)")
    return sols


def _stepwise(eqs, unknowns):
    """Solutions ``{x: expr}`` of equations ``lhs(x) = rhs`` taken one unknown at a time (see ``_solve_stepwise``)."""
    if not unknowns:
        return [{}]
    single = [(f, y) for f, y in eqs if len(f.free_symbols & set(unknowns)) == 1]
    if not single:
        return []
    for (fa, ya), (fb, yb) in ((a, b) for a in single for b in single if a is not b):
        (u,) = fa.free_symbols & set(unknowns)
        if fb.free_symbols & set(unknowns) != {u}:
            continue
        for angle in {c.args[0] for c in fa.atoms(sp.cos) if c.args[0].has(u)}:
            amp_a, amp_b = sp.simplify(fa / sp.cos(angle)), sp.simplify(fb / sp.sin(angle))
            solved = _linear_solution(angle, u)
            if solved is not None and not amp_a.has(u) and sp.simplify(amp_a - amp_b) == 0:
                rest = [e for e in eqs if e[0] is not fa and e[0] is not fb]
                return _continue(rest, unknowns, u, [solved(sp.atan2(yb, ya)), solved(sp.atan2(-yb, -ya))])
    f, y = single[0]
    (u,) = f.free_symbols & set(unknowns)
    return _continue([e for e in eqs if e[0] is not f], unknowns, u, sp.solve(f - y, u))


def _linear_solution(angle, u):
    """For an angle ``a u + b`` (``a``, ``b`` free of ``u``; ``u`` itself included), the map ``t -> (t - b) / a``."""
    a, b = sp.diff(angle, u), angle.subs(u, 0)
    if a.has(u) or a == 0:
        return None
    return lambda t: sp.simplify((t - b) / a)


def _continue(rest, unknowns, u, values):
    out = []
    for value in values:
        others = [v for v in unknowns if v != u]
        for tail in _stepwise([(f.subs(u, value), y) for f, y in rest], others):
            sol = {u: value}
            sol.update({k: v.subs(u, value) for k, v in tail.items()})
            out.append(sol)
    return out


def _meijerg(a, b, z):
    import mpmath

    return complex(mpmath.meijerg([list(a[0]), list(a[1])], [list(b[0]), list(b[1])], complex(z)))


# lambdify's modules for numeric checks: NumPy and SciPy, plus SymPy's answers NumPy lacks (Meijer G,
# e.g. the product of two normals) by mpmath, point by point
NUMERIC_MODULES = [{"meijerg": _meijerg, "polar_lift": lambda z: z}, "scipy", "numpy"]


def _integrate_box(expr, xs, intervals, parameters, pvals, owner):
    """Integrate over a box: SymPy first (under ``owner``'s time limit), SciPy quadrature when SymPy gives up."""
    subs = dict(zip(parameters, pvals))
    expr = expr.subs(subs)
    if len(xs) == 1 and isinstance(intervals[0], sp.Union):  # one output on several intervals: their sum
        parts = [_integrate_box(expr, xs, [iv], (), (), owner) for iv in intervals[0].args]
        how = {h for _, h in parts}
        return sum(v for v, _ in parts), how.pop() if len(how) == 1 else "; ".join(sorted(how))
    limits = [(x, iv.inf.subs(subs), iv.sup.subs(subs)) for x, iv in zip(xs, intervals)]
    if expr.has(sp.Integral):
        return float("nan"), "unavailable: the density is an unevaluated integral (evaluate it numerically)"
    if not expr.has(sp.Piecewise, sp.Mod, AppliedUndef):
        try:
            value = owner._timed("sympy.integrate", lambda: sp.integrate(expr, *limits), lambda: None,
                                 "fell back to numerical quadrature")
            if value is not None and value in (sp.oo, -sp.oo):
                return float(value), "symbolic"
            if value is not None and not value.has(sp.Integral) and value.is_number:
                value = complex(sp.N(value))
                if abs(value.imag) < 1e-12 and math.isfinite(value.real):
                    return _checked_by_quadrature(float(value.real), expr, xs, limits, owner)
        except (NotImplementedError, TypeError, ValueError):
            pass
    value, failure = _quadrature(expr, xs, limits, owner.functions)
    return value, "numerical quadrature" + (f" failed ({failure})" if failure else "")


def _checked_by_quadrature(value, expr, xs, limits, owner):
    """A symbolic integral of one variable against quadrature: SymPy can return a wrong number
    (0 for ``2/|sqrt(1 - 4y)|`` over ``(0, 1/4)``, whose integral is 1).  Where quadrature succeeds
    and differs, its value is returned and the difference said."""
    if len(xs) != 1:
        return value, "symbolic"
    try:
        numeric, failure = _quadrature(expr, xs, limits, owner.functions)
    except (NameError, TypeError, ValueError, AttributeError):  # NumPy cannot evaluate it (DiracDelta): trust SymPy
        return value, "symbolic"
    if failure or abs(numeric - value) <= 1e-6 * max(1.0, abs(numeric)):
        return value, "symbolic"
    return numeric, f"numerical quadrature (SymPy's integral gave {value:.6g})"


def _quadrature(expr, xs, limits, functions=None):
    from scipy import integrate

    fn = sp.lambdify(list(xs), expr, modules=([dict(functions)] if functions else []) + NUMERIC_MODULES)
    bounds = [(float(lo), float(hi)) for _, lo, hi in limits]

    def integrand(*args):  # a point where the expression has no finite value (a pole) counts as 0
        with np.errstate(all="ignore"):
            try:
                val = float(np.real(complex(fn(*args))))
            except (ZeroDivisionError, OverflowError, ValueError, TypeError):
                return 0.0
        return val if math.isfinite(val) else 0.0

    if len(bounds) == 1 and bounds[0][0] < 0 < bounds[0][1]:
        bounds_1d = [(bounds[0][0], 0.0), (0.0, bounds[0][1])]  # split at 0, where maps like x^3 are singular
    else:
        bounds_1d = None
    with warnings.catch_warnings():  # a quadrature that warns has failed: say so, never return its number
        warnings.simplefilter("error", integrate.IntegrationWarning)
        try:
            if bounds_1d:
                parts = [integrate.quad(integrand, lo, hi, limit=200) for lo, hi in bounds_1d]
                value, error = sum(p[0] for p in parts), sum(p[1] for p in parts)
            else:
                value, error = integrate.nquad(integrand, bounds, opts={"limit": 200})
        except integrate.IntegrationWarning as err:
            return float("nan"), str(err).strip().splitlines()[0]
    if not (math.isfinite(value) and error <= 1e-6 * max(1.0, abs(value))):
        return float("nan"), f"error estimate {error:.2g} for the value {value:.6g}"
    return float(value), ""

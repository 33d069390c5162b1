r"""Integration limits of a marginal: the region of a joint density, solved for the variable
integrated out.

A map with one output ``y`` of two inputs is completed to a bijection ``(y, z)`` and ``z`` is
integrated out.  The joint density lives on a region ``R = {(y, z): c_1(y, z), ..., c_k(y, z)}``
(the image of the input box), so

    p_Y(y) = \int_{lo(y)}^{hi(y)} p_{Y,Z}(y, z) dz,    {z: (y, z) in R} = (lo(y), hi(y)).

SymPy's ``integrate`` seldom finds ``lo`` and ``hi`` from a ``Piecewise`` condition such as
``y/z <= 1`` (it leaves the integral unevaluated).  Here they are found explicitly:

1. every condition that involves ``z`` is solved for ``z`` at its boundary, ``c_j = 0``, giving
   candidate bounds ``r(y)`` (roots of a condition, and the ends of ``z``'s own interval);
2. the ``y`` range is cut where the candidates can change order (where two of them meet, where a
   condition's coefficient of ``z`` vanishes or has a pole) and at ``y = 0``;
3. on each piece the order is fixed, so the true ``z`` set read at the piece's midpoint (a
   contiguous run between sorted candidates, else give up) names the symbolic ``lo`` and ``hi``;
4. each piece is checked at two more points: probes inside ``(lo, hi)`` satisfy every condition,
   probes just outside fail one.

Anything outside this (more than one variable integrated out, free parameters in the conditions, a
boundary SymPy cannot solve, a check that fails) returns ``None`` and the caller keeps the
``Piecewise`` integral.
"""

from __future__ import annotations

import itertools

import numpy as np
import sympy as sp

_MAX_PIECES = 12
_PROBES = (sp.Rational(29, 61), sp.Rational(13, 53), sp.Rational(37, 47))  # off-centre: not on a symmetry point


def marginal_limits(condition, z, z_range: sp.Interval, y, y_range: sp.Interval):
    """``[(a, b, runs), ...]``: for ``y`` in ``(a, b)`` the ``z`` with ``condition`` true are the union
    of the intervals ``runs = [(lo(y), hi(y)), ...]`` (``|z| > y`` is two); pieces where that set is
    empty are left out.  ``None`` where not found."""
    atoms = _conjuncts(condition)
    if atoms is None or any(not a.free_symbols <= {y, z} for a in atoms):
        return None
    y_only = [a for a in atoms if z not in a.free_symbols and not _everywhere(a, y, y_range)]
    on_z = [a for a in atoms if z in a.free_symbols and not _trivial(a)]
    roots = []
    for a in on_z:
        found = _roots(a, z)
        if found is None:
            return None
        roots.extend(found)
    ends = [e for e in (z_range.inf, z_range.sup) if e.is_finite]
    candidates = list(dict.fromkeys(roots + ends))
    cuts = [p - q for p, q in itertools.combinations(candidates, 2)]
    cuts += [sp.diff(a.lhs - a.rhs, z) for a in on_z] + [a.lhs - a.rhs for a in y_only]
    points = _cut_points(cuts + roots + [y], y, y_range)  # y = 0 too: each piece gets a sign SymPy can use
    if points is None or len(points) > _MAX_PIECES:
        return None
    edges = [y_range.inf, *points, y_range.sup]
    pieces = []
    for a, b in zip(edges, edges[1:]):
        inside = [_interior_point(a, b, t) for t in _PROBES]
        if not all(_holds(c, {y: inside[0]}) for c in y_only):
            continue
        found = _limits_at(on_z, z, z_range, candidates, y, inside[0])
        if found is None:
            return None
        if found == "empty":
            continue
        if not all(_checks(on_z, z, z_range, lo, hi, y, v) for lo, hi in found for v in inside):
            return None
        pieces.append((a, b, found))
    return pieces


def _conjuncts(condition):
    if condition is sp.true:
        return []
    if isinstance(condition, sp.And):
        args = list(condition.args)
    else:
        args = [condition]
    return args if all(isinstance(a, sp.core.relational.Relational) for a in args) else None


def _everywhere(atom, y, y_range) -> bool:
    """A condition on ``y`` alone that holds on all of ``y_range`` (``y = |y|`` for ``y >= 0``)."""
    interior = sp.Interval.open(y_range.inf, y_range.sup)
    try:
        return sp.solveset(atom, y, interior) == interior
    except (NotImplementedError, TypeError, ValueError):
        return False


def _trivial(atom):
    """``z * c > -oo`` and the like: true wherever the expression is finite."""
    return (atom.rhs in (sp.oo, -sp.oo)) or (atom.lhs in (sp.oo, -sp.oo))


def _roots(atom, z):
    expr = sp.together(atom.lhs - atom.rhs)
    try:
        found = sp.solve(sp.numer(expr), z)
    except (NotImplementedError, TypeError, ValueError):
        return None
    if any(not isinstance(r, sp.Expr) or r.has(sp.I) for r in found):
        return None
    return found


def _cut_points(exprs, y, y_range):
    points = set()
    interior = sp.Interval.open(y_range.inf, y_range.sup)
    for e in exprs:
        e = sp.together(e)
        for part in (sp.numer(e), sp.denom(e)):
            if not part.has(y):
                continue
            try:
                sols = sp.solveset(part, y, domain=interior)
            except (NotImplementedError, TypeError, ValueError):
                return None
            if sols is sp.S.EmptySet:
                continue
            if not isinstance(sols, sp.FiniteSet) or not all(s.is_real for s in sols):
                return None
            points |= set(sols)
    return sorted(points, key=float)


def _interior_point(a, b, t):
    if a.is_finite and b.is_finite:
        return a + t * (b - a)
    if a.is_finite:
        return a + t / (1 - t)
    if b.is_finite:
        return b - (1 - t) / t
    return sp.Float(float(sp.log(t / (1 - t))))


def _holds(atom, at):
    """The truth of ``atom`` at a point; None where it has no value there (a pole, a complex value)."""
    try:
        value = atom.subs(at)
    except (TypeError, ValueError):
        return None
    return bool(value) if value in (sp.true, sp.false) else None


def _limits_at(on_z, z, z_range, candidates, y, y0):
    """The symbolic ``[(lo, hi), ...]`` whose values at ``y0`` bound the runs of ``z`` where every condition holds."""
    values = {}
    for c in candidates:
        v = c.subs(y, y0)
        if not (v.is_real and v.is_finite):
            continue
        v = float(v)
        if float(z_range.inf) <= v <= float(z_range.sup):
            values.setdefault(v, c)
    grid = sorted(set(values) | {float(z_range.inf), float(z_range.sup)})
    ends = {float(z_range.inf): z_range.inf, float(z_range.sup): z_range.sup, **values}
    run = []
    for left, right in zip(grid, grid[1:]):
        probe = _interior_point(sp.Float(left) if left > -float("inf") else -sp.oo,
                                sp.Float(right) if right < float("inf") else sp.oo, _PROBES[0])
        truth = [_holds(a, {y: y0, z: probe}) for a in on_z]
        if None in truth:
            return None
        run.append(all(truth))
    if not any(run):
        return "empty"
    runs, i = [], 0
    while i < len(run):
        if run[i]:
            j = i
            while j + 1 < len(run) and run[j + 1]:
                j += 1
            runs.append((ends[grid[i]], ends[grid[j + 1]]))
            i = j + 1
        else:
            i += 1
    return runs


def _checks(on_z, z, z_range, lo, hi, y, y0):
    lo0, hi0 = lo.subs(y, y0), hi.subs(y, y0)
    if not (lo0 < hi0) is sp.true:
        return False
    width = hi0 - lo0 if (lo0.is_finite and hi0.is_finite) else sp.Integer(1)
    mid = _interior_point(lo0, hi0, _PROBES[0])
    if not all(_holds(a, {y: y0, z: mid}) is True for a in on_z):
        return False
    for edge, step, end in ((lo0, -1, z_range.inf), (hi0, 1, z_range.sup)):
        if not edge.is_finite or edge == end:
            continue
        outside = edge + step * width / 1000
        if all(_holds(a, {y: y0, z: outside}) is True for a in on_z):
            return False
    return True


def agrees_with_quadrature(value, integrand, z, runs, y, a, b) -> bool:
    """``value(y)`` against numerical quadrature (:func:`symbolic.cov_helpers._quadrature`) of
    ``integrand`` over the ``runs`` at two points of ``(a, b)`` (relative 1e-6): SymPy's ``integrate``
    can answer with a branch of a special function that is wrong on part of the range (complex for
    ``y < 0``, say)."""
    from .cov_helpers import NUMERIC_MODULES, _quadrature

    for t in _PROBES[1:]:
        y0 = _interior_point(a, b, t)
        try:
            with np.errstate(all="ignore"):  # as the numeric checks will evaluate it
                got = complex(sp.lambdify(y, value, modules=NUMERIC_MODULES)(float(y0)))
            found = [_quadrature(integrand.subs(y, y0), [z], [(z, lo.subs(y, y0), hi.subs(y, y0))]) for lo, hi in runs]
        except (TypeError, ValueError, ZeroDivisionError, OverflowError, NameError, AttributeError):
            return False  # not evaluable by NumPy: not checked, so not kept
        if any(failure for _, failure in found):
            return False
        ref = sum(v for v, _ in found)
        if not (np.isfinite(got.real) and abs(got.imag) <= 1e-9 * max(1.0, abs(got.real))):
            return False
        if abs(got.real - ref) > 1e-6 * max(1.0, abs(ref)):
            return False
    return True

r"""Change of variables for maps given as SymPy expressions.

For a map :math:`y = f(x)` of :math:`x \in S \subset \mathbb{R}^d` with a base
density :math:`p_X` on :math:`S`, the pushforward density is

.. math::

    p_Y(y) = \sum_{k} \frac{p_X(g_k(y))}{\lvert \det J_f(g_k(y)) \rvert},
    \qquad J_f(x)_{ij} = \frac{\partial f_i}{\partial x_j},

where the :math:`g_k` are the branches of the inverse that land in :math:`S`
(one branch when :math:`f` is injective on :math:`S`; e.g. two branches
:math:`\pm\sqrt{y}` for :math:`x \mapsto x^2` on the real line).

:func:`change_of_variables` derives all these pieces with SymPy and checks
them numerically (branch validity, coverage of the image, normalisation).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import sympy as sp

from sympy.core.function import AppliedUndef

from ._common import (
    DEFAULT_TIME_LIMIT,
    StepTimeout,
    as_exprs,
    as_symbols,
    check_free_symbols,
    internal_symbols,
    numpy_function,
    parse_support,
    sample_box,
    time_limit,
)
from .numerical_inverse import build_numerical_inverse

__all__ = ["change_of_variables", "ChangeOfVariables", "InverseNotFoundWarning"]

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
    """Rewrite ``sqrt(e) <= c`` (``c >= 0``) as ``e <= c**2`` for readability."""

    def fix(rel):
        lhs, rhs = rel.lhs, rel.rhs
        if isinstance(lhs, sp.Pow) and lhs.exp == sp.S.Half and rhs.is_nonnegative:
            return rel.func(lhs.base, rhs**2)
        return rel

    return cond.replace(lambda e: isinstance(e, (sp.Le, sp.Lt)), fix)


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


def _monotone_image(f, x, interval):
    """Image of an interval under an injective continuous (hence monotone) map: its end limits."""
    try:
        ends = [sp.limit(f, x, interval.inf, "+"), sp.limit(f, x, interval.sup, "-")]
    except (NotImplementedError, ValueError):
        return None
    if any(not e.is_extended_real for e in ends):
        return None
    return sp.Interval(sp.Min(*ends), sp.Max(*ends))


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
        amp_a, amp_b = sp.simplify(fa / sp.cos(u)), sp.simplify(fb / sp.sin(u))
        if not amp_a.has(u) and sp.simplify(amp_a - amp_b) == 0:
            rest = [e for e in eqs if e[0] is not fa and e[0] is not fb]
            return _continue(rest, unknowns, u, [sp.atan2(yb, ya), sp.atan2(-yb, -ya)])
    f, y = single[0]
    (u,) = f.free_symbols & set(unknowns)
    return _continue([e for e in eqs if e[0] is not f], unknowns, u, sp.solve(f - y, u))


def _continue(rest, unknowns, u, values):
    out = []
    for value in values:
        others = [v for v in unknowns if v != u]
        for tail in _stepwise([(f.subs(u, value), y) for f, y in rest], others):
            sol = {u: value}
            sol.update({k: v.subs(u, value) for k, v in tail.items()})
            out.append(sol)
    return out


# ------------------------------------------------------------------------- result type


class ChangeOfVariables:
    """Result of :func:`change_of_variables`; see the module docstring for the math.

    Attributes (all SymPy objects in the user's symbols): ``forward``,
    ``inputs``, ``outputs``, ``support`` (one interval per input),
    ``base_density``, ``jacobian``, ``det``, ``log_abs_det``, ``branches``,
    ``inverse``, ``density``, ``output_support``, ``has_density``, ``reason``;
    and ``notes`` (the steps that ran out of time and what was done instead) and
    ``numeric_checks`` (``"run"``, or why they were skipped).
    """

    def __init__(self, forward, inputs, base_density=None, support=None, *, outputs=None,
                 parameters=(), inverse=None, check_normalization=True, name=None, functions=None,
                 time_limit=DEFAULT_TIME_LIMIT, simplify=True):
        self.name = name
        self.time_limit = time_limit
        self.simplify = bool(simplify)
        self.notes: list[str] = []
        self.forward = as_exprs(forward)
        self.inputs = as_symbols(inputs)
        self.parameters = as_symbols(parameters, "parameters") if parameters else ()
        base_density, support = _from_random_variables(base_density, self.inputs, support)
        self.base_density = None if base_density is None else as_exprs(base_density, "base_density")[0]
        d_in, d_out = len(self.inputs), len(self.forward)
        self.outputs = self._make_outputs(outputs, d_out)
        allowed = set(self.inputs) | set(self.parameters)
        check_free_symbols(self.forward, allowed, "the forward map")
        if self.base_density is not None:
            check_free_symbols(self.base_density, allowed, "the base density")
        self._support_given = support is not None
        self.support = parse_support(support, self.inputs)
        for s, iv in zip(self.inputs, self.support):
            check_free_symbols([iv.inf, iv.sup], set(self.parameters), f"the support of {s}")
        self._setup_functions(functions)

        # internal symbols carry sign assumptions taken from the support
        self._xs = internal_symbols(self.inputs, self.support)
        self._to_internal = dict(zip(self.inputs, self._xs))
        self._f = tuple(self._internal_functions(e.subs(self._to_internal)) for e in self.forward)
        self._p = None if self.base_density is None else \
            self._internal_functions(self.base_density.subs(self._to_internal))
        self._rng = np.random.default_rng(12345)
        self._pvals = _param_values(self.parameters)
        self._xsamples = sample_box(self._numeric_support(), _N_SAMPLES, self._rng)

        # DiracDelta terms (from sign, Heaviside) live on null sets: drop them
        self.jacobian_internal = sp.Matrix(self._f).jacobian(self._xs).replace(
            sp.DiracDelta, lambda *args: sp.S.Zero)
        self.jacobian = self._external(self.jacobian_internal)
        self.is_square = d_in == d_out
        self.has_density = True
        self.reason = ""
        self._branches: list[_Branch] = []
        self.marginalised = ()
        self.numerical = None
        self.numerical_reason = ""
        self._steps, self._piece_steps = [], []  # the density's derivation, filled where it is derived
        if not self.is_square:
            if d_out < d_in:
                self._marginalise()
                return
            self._fail(
                f"the Jacobian is not square ({d_out} outputs, {d_in} inputs): the pushforward "
                f"lives on a {d_in}-dimensional subset of R^{d_out} and has no density there"
            )
            return
        self._derive_determinant()
        self._derive_output_symbols()
        pieces = self._piecewise_pieces() if inverse is None else None
        if pieces:
            self._derive_piecewise(pieces)
        else:
            self._derive_branches(inverse)
            if self.has_density and self._p is not None:
                self._derive_density()
        if self.has_density and self._p is not None and check_normalization:
            self._check_base_normalization()

    # ----------------------------------------------------------------- construction

    def _setup_functions(self, functions):
        """Undefined SymPy functions (conditioners ``s(x1)``, ``mu(x1)``...): real-valued inside, and
        evaluated numerically only through user-given implementations (``functions={name: fn}``)."""
        exprs = list(self.forward) + ([self.base_density] if self.base_density is not None else [])
        undefined = sorted({f.func for e in exprs for f in e.atoms(AppliedUndef)}, key=str)
        self.functions = dict(functions or {})
        unknown = sorted(set(self.functions) - {str(f) for f in undefined})
        if unknown:
            raise ValueError(f"functions= names {unknown} that the map does not use; it uses "
                             f"{[str(f) for f in undefined]}")
        for name, fn in self.functions.items():
            if not callable(fn):
                raise TypeError(f"functions[{name!r}] must be callable (a NumPy function); got {type(fn).__name__}")
        # conditioner outputs are real numbers: say so to SymPy (functions declared real or positive stay)
        self._real_functions = {f: sp.Function(str(f), real=True) for f in undefined if not _declared_real(f)}
        missing = [str(f) for f in undefined if str(f) not in self.functions]
        self.numeric_checks = "run" if not missing else (
            f"skipped: the map uses functions without an implementation ({', '.join(missing)}); pass "
            f"functions={{{', '.join(repr(m) + ': callable' for m in missing)}}} to check numerically")
        self._symbolic_only = bool(missing)

    def _internal_functions(self, expr):
        for f, real in self._real_functions.items():
            expr = expr.replace(f, real)
        return expr

    def _numeric(self, args, exprs, **kw):
        return numpy_function(args, exprs, functions=self.functions, **kw)

    def _timed(self, step: str, compute, fallback=None, hint: str = ""):
        """``compute()`` under the time limit; on expiry note it and return ``fallback()`` (or raise)."""
        try:
            with time_limit(self.time_limit, step):
                return compute()
        except StepTimeout as err:
            self.notes.append(f"{err}{'; ' + hint if hint else ''}")
            if fallback is None:
                raise
            return fallback()

    def _simplified(self, expr, step: str):
        if not self.simplify:
            return expr
        how = sp.simplify if isinstance(expr, sp.logic.boolalg.Boolean) else _simplify
        return self._timed(step, lambda: how(expr), lambda: expr, "kept unsimplified (or pass simplify=False)")

    def _make_outputs(self, outputs, d_out):
        if outputs is None:
            names = ["y"] if d_out == 1 else [f"y{i + 1}" for i in range(d_out)]
            taken = {s.name for s in self.inputs}
            names = [n + "_" if n in taken else n for n in names]
            return tuple(sp.Symbol(n, real=True) for n in names)
        outs = as_symbols(outputs, "outputs")
        if len(outs) != d_out:
            raise ValueError(f"{len(outs)} output symbols given for a map with {d_out} outputs")
        clash = {s.name for s in outs} & {s.name for s in self.inputs}
        if clash:
            raise ValueError(f"output symbols {sorted(clash)} clash with the input symbols")
        return outs

    def _numeric_support(self):
        subs = dict(zip(self.parameters, self._pvals))
        return [sp.Interval(iv.inf.subs(subs), iv.sup.subs(subs)) for iv in self.support]

    def _fail(self, reason, category=UserWarning):
        self.has_density = False
        self.reason = reason
        warnings.warn(f"no pushforward density: {reason}", category, stacklevel=4)

    def _external(self, expr):
        back = {xi: x for xi, x in zip(self._xs, self.inputs)}
        back.update({yi: y for yi, y in zip(getattr(self, "_ys", ()), self.outputs)})
        expr = expr.xreplace(back)
        for f, real in self._real_functions.items():
            expr = expr.replace(real, f)
        return expr

    def _derive_determinant(self):
        try:
            raw = self._timed("the Jacobian determinant", lambda: self.jacobian_internal.det(method="berkowitz"))
        except StepTimeout as err:
            raise ValueError(f"{err}: pass a larger time_limit, or derive this map in smaller pieces") from None
        det = _drop_null_pieces(self._simplified(raw, "simplifying the determinant"))
        if det == 0 or self._numerically_zero(det):
            raise ValueError(
                f"the Jacobian determinant of the map {self.forward} is identically zero: "
                "the map is not invertible and has no density"
            )
        self._det = det
        self._log_abs_det = self._timed("log|det J|", lambda: log_abs(det) if self.simplify else
                                        sp.log(sp.Abs(det)), lambda: sp.log(sp.Abs(det)))
        self.det = self._external(det)
        self.log_abs_det = self._external(self._log_abs_det)

    def _numerically_zero(self, expr):
        if expr.has(sp.Function) and any(
            isinstance(f, sp.core.function.AppliedUndef) for f in expr.atoms(sp.Function)
        ):
            return False
        try:
            vals = self._numeric(self._xs + self.parameters, [expr])(*self._xsamples.T, *self._pvals)
        except (NameError, TypeError):  # a function NumPy cannot evaluate: trust SymPy
            return False
        return bool(np.all(np.abs(vals) < 1e-12))

    def _derive_output_symbols(self):
        if len(self._f) == 1:
            try:
                self._image = self._timed("the image of the support",
                                          lambda: _image_interval(self._f[0], self._xs[0], self.support[0]),
                                          lambda: None)
            except (_SolveFailure, NotImplementedError, ValueError, TypeError):
                self._image = None
            lo = self._image.inf if self._image is not None else -sp.oo
            hi = self._image.sup if self._image is not None else sp.oo
            sign = {"real": True}
            if (lo >= 0) == sp.true:
                sign = {"positive": True}
            elif (hi <= 0) == sp.true:
                sign = {"negative": True}
            self._ys = (sp.Symbol(self.outputs[0].name, **sign),)
        else:
            self._image = None
            self._ys = tuple(sp.Symbol(s.name, real=True) for s in self.outputs)

    def _solve(self):
        try:
            return self._timed("sympy.solve (the inverse)", lambda: _sympy_solve(self._f, self._xs, self._ys))
        except (StepTimeout, _SolveFailure) as err:
            if len(self._xs) < 2:
                raise _SolveFailure(str(err)) from None
            try:
                found = self._timed("solving one coordinate at a time", self._solve_stepwise)
            except (StepTimeout, NotImplementedError, ValueError, TypeError):
                found = []
            if not found:
                raise _SolveFailure(str(err)) from None
            self.notes.append("solved one coordinate at a time instead")
            return found

    def _solve_stepwise(self):
        """Coordinate maps that defeat ``sympy.solve`` (spherical coordinates...): solve one input at a time.

        Adds ``sum_i f_i^2 = sum_i y_i^2`` when the left side depends on one input only (a radius);
        then repeatedly takes an equation with one unknown left, except that a pair
        ``y_a = A cos(u)``, ``y_b = A sin(u)`` gives ``u = atan2(y_b, y_a)`` (and ``atan2(-y_b, -y_a)``
        for ``A < 0``).  Every combination is a candidate; ``_validate`` keeps the right ones.
        """
        eqs = [(f, y) for f, y in zip(self._f, self._ys)]
        radius = sp.simplify(sum(f ** 2 for f in self._f))
        if len(radius.free_symbols & set(self._xs)) == 1:
            eqs.append((radius, sum(y ** 2 for y in self._ys)))
        return [tuple(sol[x] for x in self._xs) for sol in _stepwise(eqs, list(self._xs))]

    def _derive_branches(self, inverse):
        if self._symbolic_only:
            return self._derive_branches_symbolically(inverse)
        f_num = self._numeric(self._xs + self.parameters, self._f)
        self._ysamples = f_num(*self._xsamples.T, *self._pvals).T
        try:
            if inverse is not None:
                candidates = [self._user_inverse(inverse)]
            else:
                candidates = self._real_forms(self._solve())
            candidates, reduced = self._reduce_periodic(candidates)
            self._reduced = reduced
            valid = self._validate(candidates, f_num)
        except _SolveFailure as err:
            if inverse is not None:
                raise ValueError(f"the given inverse is not valid: {err}") from None
            self._offer_numerical(str(err))
            return
        kept = [c for c, ok in zip(candidates, valid.T) if ok.any()]
        self._branches = [_Branch(c, self._branch_condition(c, reduced, len(kept)))
                          for c in kept]
        self.branches = [tuple(self._external(e) for e in b.inverse) for b in self._branches]
        self._output_support = self._derive_output_support()

    def _offer_numerical(self, failure):
        """No closed-form inverse: a monotone triangular map still gets a numerical inverse and density."""
        solver, why = build_numerical_inverse(self)
        if solver is None:
            self.numerical_reason = why
            self._fail(f"{failure}; pass inverse=... to change_of_variables", InverseNotFoundWarning)
            return
        self.numerical = solver
        self._fail(f"{failure}.  No closed-form inverse, but the map is monotone and triangular ({solver.how}): a "
                   "NUMERICAL inverse and density are offered, .numerical_inverse(y) and .numerical_density(y) "
                   "(bisection; pass inverse=... for a closed form)", InverseNotFoundWarning)

    def numerical_inverse(self, y):
        """``x = f^{-1}(y)`` computed numerically (rows of ``y``; NaN outside the image), offered when SymPy found
        no closed-form inverse of a monotone triangular map (see :mod:`symbolic.numerical_inverse`)."""
        return self._numerical_solver()(y)

    def numerical_density(self, y):
        """``p_Y(y) = p_X(g(y)) / |det J_f(g(y))|`` with the numerical inverse ``g`` (0 outside the image)."""
        return self._numerical_solver().density(y)

    def _numerical_solver(self):
        if self.numerical is None:
            raise ValueError("no numerical inverse is offered for this map: "
                             + (self.numerical_reason or ("it has a closed-form inverse; use .inverse and .density"
                                                          if self.has_density else self.reason)))
        return self.numerical

    def _real_forms(self, candidates):
        """One input: replace solutions written with ``I`` (cube roots as ``y**(1/3)*(-1 + sqrt(3)*I)/2``) by
        ``solveset``'s real forms (``Abs(y)**(1/3)*sign(y)``) when it finds finitely many."""
        if len(self._xs) != 1 or not any(e.has(sp.I) for c in candidates for e in c):
            return candidates
        try:
            found = self._timed("sympy.solveset (real inverse)", lambda: sp.solveset(
                self._f[0] - self._ys[0], self._xs[0], sp.S.Reals), lambda: None)
        except (NotImplementedError, ValueError, TypeError):
            return candidates
        if isinstance(found, sp.Intersection):
            found = next((a for a in found.args if isinstance(a, sp.FiniteSet)), None)
        if not isinstance(found, sp.FiniteSet) or any(e.has(sp.I) for e in found):
            return candidates
        return [(_simplest(e),) for e in found]

    def _derive_branches_symbolically(self, inverse):
        """Generic functions and no implementations: SymPy alone decides; one branch or none."""
        self._reduced = set()
        try:
            candidates = [self._user_inverse(inverse)] if inverse is not None else self._solve()
        except _SolveFailure as err:
            self._fail(f"{err}; pass inverse=... to change_of_variables", InverseNotFoundWarning)
            return
        if len(candidates) != 1:
            self._fail(f"SymPy found {len(candidates)} candidate inverse branches; which of them lands in the support "
                       f"can only be checked numerically ({self.numeric_checks}), or pass inverse=...",
                       InverseNotFoundWarning)
            return
        self._branches = [_Branch(tuple(candidates[0]), sp.true)]
        self.branches = [tuple(self._external(e) for e in candidates[0])]
        self._output_support = self._derive_output_support()

    # ----------------------------------------------------------------- more inputs than outputs

    def _marginalise(self):
        r"""Fewer outputs than inputs: augment to a bijection, then integrate the extra outputs out.

        With ``z = (x_i)_{i in E}`` for a set ``E`` of inputs that makes ``(f(x), z)`` invertible,
        ``p_Y(y) = \int p_{Y,Z}(y, z) dz`` over the support of ``z`` (e.g. ``x1 + x2`` of two
        standard normals gives ``N(0, 2)``).  An integral SymPy cannot do in time stays an
        unevaluated ``Integral`` (still exact), with a note.
        """
        from itertools import combinations

        d_in, d_out = len(self.inputs), len(self.forward)
        self._ys = self.outputs
        choice = None
        for extra in reversed(list(combinations(range(d_in), d_in - d_out))):  # prefer the last inputs
            aug = sp.Matrix(list(self._f) + [self._xs[i] for i in extra]).jacobian(self._xs)
            if not self._timed("the augmented Jacobian", lambda: sp.simplify(aug.det()) == 0, lambda: True):
                choice = extra
                break
        if choice is None:
            self._fail(f"the map has {d_out} outputs and {d_in} inputs, and no choice of {d_in - d_out} inputs "
                       "completes it to an invertible map: its pushforward has no density")
            return
        aux = tuple(sp.Symbol(f"{self.inputs[i].name}_", real=True) for i in choice)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            joint = ChangeOfVariables(list(self.forward) + [self.inputs[i] for i in choice], self.inputs,
                                      self.base_density, dict(zip(self.inputs, self.support)),
                                      outputs=self.outputs + aux, parameters=self.parameters, check_normalization=False,
                                      functions=self.functions, time_limit=self.time_limit, simplify=self.simplify)
        self.notes.extend(joint.notes)
        if not joint.has_density:
            self._fail(f"augmented to a bijection by keeping {[str(self.inputs[i]) for i in choice]}, but: {joint.reason}")
            return
        self.marginalised = tuple(self.inputs[i] for i in choice)
        self.notes.append(f"{d_out} outputs of {d_in} inputs: augmented with {[str(a) for a in aux]} "
                          f"(= {[str(self.inputs[i]) for i in choice]}) and integrated them out")
        self._reduced, self._branches, self.branches = set(), [], []
        self._output_support = self._marginal_support()
        if self._p is None:
            return
        region = joint.output_support
        integrand = joint.density
        if not (region == sp.true or (isinstance(region, sp.Set) and region == sp.Interval(-sp.oo, sp.oo))):
            cond = region.as_relational(self.outputs[0]) if isinstance(region, sp.Set) else region
            integrand = sp.Piecewise((integrand, cond), (0, True))
        limits = [(a, self.support[i].inf, self.support[i].sup) for a, i in zip(aux, choice)]
        density = self._timed("sympy.integrate (the marginal density)", lambda: sp.integrate(integrand, *limits),
                              lambda: sp.Integral(integrand, *limits), "left as an integral")
        if density.has(sp.Integral):
            self.notes.append("SymPy left the marginal density as an integral; it is exact, evaluate it numerically")
        self._density = self._simplified(density, "simplifying the density") if not density.has(sp.Integral) \
            else density

    def _marginal_support(self):
        """The image of the support box (one output: interval arithmetic; several: all of R^m)."""
        if len(self.forward) != 1:
            return sp.true
        bounds = {x: sp.AccumBounds(iv.inf, iv.sup) for x, iv in zip(self.inputs, self.support)
                  if not (iv.inf == -sp.oo and iv.sup == sp.oo)}
        if not bounds:
            return sp.Interval(-sp.oo, sp.oo)
        try:
            image = self.forward[0].subs(bounds)
        except (TypeError, ValueError):
            image = None
        if isinstance(image, sp.AccumBounds):
            return sp.Interval(image.min, image.max)
        return sp.Interval(-sp.oo, sp.oo)

    # ----------------------------------------------------------------- piecewise maps of one input

    def _piecewise_pieces(self):
        """``[(f_k, I_k)]`` for a one-input ``Piecewise`` map: each piece and the part of the support it covers."""
        if len(self.forward) != 1 or not isinstance(self.forward[0], sp.Piecewise):
            return None
        pieces = []
        for expr, where in self.forward[0].as_expr_set_pairs(self.support[0]):
            where = where.intersect(self.support[0])
            if isinstance(where, sp.Interval) and where.measure > 0:
                pieces.append((expr, where))
            elif not (where.is_empty or getattr(where, "measure", 1) == 0):
                return None  # a piece on a set that is not one interval: the general path
        return pieces or None

    def _derive_piecewise(self, pieces):
        r"""Each piece ``f_k`` on its interval ``I_k`` is a change of variables of its own; then

        ``p_Y(y) = sum_k 1[y in f_k(I_k)] p_X(g_k(y)) / |f_k'(g_k(y))|``, with ``g_k`` the
        inverse of piece ``k``; when the images ``f_k(I_k)`` do not overlap the map is injective
        and its inverse is ``Piecewise((g_k(y), y in f_k(I_k)), ...)``.
        """
        x, y = self.inputs[0], self.outputs[0]
        base = self.base_density
        parts = []
        for expr, where in pieces:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                part = ChangeOfVariables(expr, [x], base, {x: where}, outputs=[y], parameters=self.parameters,
                                         check_normalization=False, functions=self.functions,
                                         time_limit=self.time_limit, simplify=self.simplify)
            if not part.has_density:
                self._fail(f"the piece {expr} on {where}: {part.reason}", InverseNotFoundWarning)
                return
            image = part.output_support
            if not isinstance(image, sp.Interval):
                self._fail(f"the image of the piece {expr} on {where} is not an interval ({image})")
                return
            parts.append((expr, where, part, image))
            self.notes.extend(part.notes)
        self._piece_steps = [(f"piece {expr} on {where}: {label}", value)
                             for expr, where, part, _ in parts for label, value in part.derivation]
        self._log_abs_det = self._internal_functions(sp.Piecewise(
            *[(part.log_abs_det, where.as_relational(x)) for _, where, part, _ in parts]).subs(self._to_internal))
        self.log_abs_det = self._external(self._log_abs_det)
        images = [image for *_, image in parts]
        injective = all(a.intersect(b).measure == 0 for i, a in enumerate(images) for b in images[i + 1:])
        if injective and all(len(part.branches) == 1 for _, _, part, _ in parts):
            inverse = sp.Piecewise(*[(part.branches[0][0], image.as_relational(y)) for *_, part, image in parts])
            self.branches = [(inverse,)]
        else:
            self.branches = [b for _, _, part, _ in parts for b in part.branches]
        to_internal = {y: self._ys[0]}
        self._branches = [_Branch(tuple(self._internal_functions(e.xreplace(to_internal)) for e in b), sp.true)
                          for b in self.branches]
        self._reduced = set()
        union = sp.Union(*images)
        self._output_support = union
        self._image = union if isinstance(union, sp.Interval) else None
        if base is not None:
            pieces = [(part.density, image.as_relational(y)) for *_, part, image in parts]
            density = sp.Piecewise(*pieces, (0, True)) if injective else \
                sp.Add(*[sp.Piecewise(piece, (0, True)) for piece in pieces])
            self._density = self._internal_functions(density.xreplace(to_internal))

    def _user_inverse(self, inverse):
        exprs = as_exprs(inverse, "inverse")
        if len(exprs) != len(self._xs):
            raise ValueError(f"inverse has {len(exprs)} components, the map has {len(self._xs)} inputs")
        check_free_symbols(exprs, set(self.outputs) | set(self.parameters), "the inverse")
        return tuple(self._internal_functions(e.subs(dict(zip(self.outputs, self._ys)))) for e in exprs)

    def _reduce_periodic(self, candidates):
        """Fold angle-like inputs into their support window when ``f`` is periodic.

        If ``f`` has period ``P = b - a`` in an input supported on ``[a, b]``,
        the solution ``g`` is only defined modulo ``P`` and ``a + Mod(g - a, P)``
        is the representative in the support.
        """
        reduced = set()
        f_num = self._numeric(self._xs + self.parameters, self._f)
        base = f_num(*self._xsamples.T, *self._pvals)
        for i, iv in enumerate(self._numeric_support()):
            if not (iv.inf.is_finite and iv.sup.is_finite) or not self._f[0].has(sp.sin, sp.cos, sp.tan):
                continue
            period = self.support[i].sup - self.support[i].inf
            shifted = self._xsamples.copy()
            shifted[:, i] += float(iv.sup - iv.inf)
            if not np.allclose(f_num(*shifted.T, *self._pvals), base, rtol=1e-9, atol=1e-9):
                continue
            lo = self.support[i].inf
            candidates = [c[:i] + (self._recognise_angle(lo + sp.Mod(c[i] - lo, period), lo, period),)
                          + c[i + 1:] for c in candidates]
            reduced.add(i)
        return candidates, reduced

    def _recognise_angle(self, expr, lo, period):
        """Replace a solved angle by ``lo + Mod(atan2(y_a, y_b) - lo, P)`` when they agree."""
        ys = self._ysamples
        args = self._ys + self.parameters
        current = self._numeric(args, [expr], complex_ok=True)(*ys.T, *self._pvals)[0].real
        for a in range(len(self._ys)):
            for b in range(len(self._ys)):
                if a == b:
                    continue
                cand = lo + sp.Mod(sp.atan2(self._ys[a], self._ys[b]) - lo, period)
                val = self._numeric(args, [cand])(*ys.T, *self._pvals)[0]
                diff = np.abs(val - current)
                diff = np.minimum(diff, abs(float(period.subs(dict(zip(self.parameters, self._pvals))))) - diff)
                if np.all(diff < 1e-8):
                    return cand
        return expr

    def _validate(self, candidates, f_num):
        """Boolean matrix (sample, branch): does branch k invert f at sample y_j inside S?"""
        ys = self._ysamples
        ok = np.zeros((len(ys), len(candidates)), dtype=bool)
        lo = np.array([float(iv.inf) for iv in self._numeric_support()])
        hi = np.array([float(iv.sup) for iv in self._numeric_support()])
        for k, cand in enumerate(candidates):
            g = self._numeric(self._ys + self.parameters, cand, complex_ok=True)(*ys.T, *self._pvals).T
            real = np.all(np.abs(g.imag) <= 1e-7 * (1 + np.abs(g.real)), axis=1)
            x = np.where(np.isfinite(g.real), g.real, np.nan)
            tol = 1e-7 * (1 + np.abs(x))
            inside = np.all((x >= lo - tol) & (x <= hi + tol), axis=1)
            back = f_num(*x.T, *self._pvals).T
            inverts = np.all(np.abs(back - ys) <= 1e-6 * (1 + np.abs(ys)), axis=1)
            ok[:, k] = real & inside & inverts
        uncovered = ~ok.any(axis=1)
        if uncovered.any():
            j = int(np.argmax(uncovered))
            point = ", ".join(f"{v:.4g}" for v in ys[j])
            raise _SolveFailure(
                "SymPy could not solve y = f(x) on the whole support: no solution "
                f"{'candidate' if candidates else ''} inverts the map at y = ({point})"
            )
        return ok

    def _branch_condition(self, cand, reduced, n_branches):
        if n_branches == 1:
            return sp.true  # the branch condition is the output support itself
        conds = [self.support[i].as_relational(cand[i]) for i in range(len(cand)) if i not in reduced]
        cond = sp.And(*conds)
        if cond in (sp.true, sp.false) or len(self._ys) != 1 or self._image is None:
            return cond
        try:
            where = cond.as_set()
        except NotImplementedError:
            return cond
        return sp.true if self._image.is_subset(where) else cond

    def _derive_density(self):
        r"""``p_Y(y) = sum_k p_X(g_k(y)) / |det J_f(g_k(y))|``, recording the steps for the report:
        substitute the inverse into the base density, take ``|det J_f|`` there, divide and simplify."""
        terms, self._steps = [], []
        for b in self._branches:
            at = dict(zip(self._xs, b.inverse))
            p_at, det_at = self._p.subs(at), sp.Abs(self._det.subs(at))
            term = self._simplified(p_at / det_at, "simplifying the density")
            self._steps.append((p_at, det_at, term))
            terms.append(term if b.condition == sp.true else sp.Piecewise((term, b.condition), (0, True)))
        density = self._simplified(sp.Add(*terms), "simplifying the density")
        if density.has(sp.DiracDelta) and len(self._ys) == 1:  # delta(y/2 - 35/2)/2 -> delta(y - 35)
            density = density.expand(diracdelta=True, wrt=self._ys[0])
        self._density = density

    @property
    def derivation(self) -> list:
        """The density's derivation as ``[(label, expression)]`` in the user's symbols: per inverse branch,
        the base density at the inverse, ``|det J_f|`` at the inverse, and their simplified ratio."""
        steps = []
        many = len(self._steps) > 1
        for k, (p_at, det_at, term) in enumerate(self._steps):
            tag = f" (branch {k + 1})" if many else ""
            steps += [(f"substitute the inverse into the base density, p_X(g(y)){tag}", self._external(p_at)),
                      (f"take |det J_f| at the inverse, |det J_f(g(y))|{tag}", self._external(det_at)),
                      (f"divide and simplify, p_X(g(y)) / |det J_f(g(y))|{tag}", self._external(term))]
        return steps + self._piece_steps

    def _derive_output_support(self):
        if len(self._ys) == 1 and self._image is None and len(self._branches) == 1:
            try:
                self._image = self._timed("the image of the support (limits)",
                                          lambda: _monotone_image(self._f[0], self._xs[0], self.support[0]),
                                          lambda: None)
            except (TypeError, AttributeError):
                self._image = None
        if len(self._ys) == 1 and self._image is not None:
            return self._image
        conds = []
        for b in self._branches:
            parts = [iv.as_relational(g) for i, (iv, g) in enumerate(zip(self.support, b.inverse))
                     if i not in self._reduced]
            conds.append(sp.And(*parts))
        return _tidy_condition(self._simplified(sp.Or(*conds), "simplifying the output support"))

    def _check_base_density(self):
        """A density is non-negative on the support: checked at the sample points (when it can be evaluated)."""
        if self._symbolic_only:
            return
        try:
            values = self._numeric(self._xs + self.parameters, [self._p])(*self._xsamples.T, *self._pvals)[0]
        except (NameError, TypeError):
            return
        if np.any(values < -1e-12):
            j = int(np.argmin(values))
            point = ", ".join(f"{v:.4g}" for v in self._xsamples[j])
            raise ValueError(f"base_density is negative at ({point}) in the support ({values[j]:.4g}): it is not a "
                             "density there; check its formula and the support")

    def _check_base_normalization(self):
        self._check_base_density()
        if self._symbolic_only:
            return
        mass, how = self.base_mass()
        if not self._support_given and not (math.isfinite(mass) and abs(mass - 1.0) <= 1e-6):
            raise ValueError(
                f"support is missing: over all of R^{len(self.inputs)} the base density "
                f"{'integrates to ' + format(mass, '.6g') if math.isfinite(mass) or math.isinf(mass) else 'could not be integrated'}"
                f" ({how}), so it is not a density there; pass support={{symbol: (low, high)}}")
        if math.isnan(mass):
            warnings.warn(f"could not check that the base density integrates to 1 over the support: {how}",
                          UserWarning, stacklevel=4)
        elif not math.isfinite(mass) or abs(mass - 1.0) > 1e-6:
            warnings.warn(
                f"the base density integrates to {mass:.6g} over the support ({how}), not 1",
                UserWarning,
                stacklevel=4,
            )

    # ----------------------------------------------------------------- public results

    @property
    def inverse(self) -> tuple:
        """The inverse map (a tuple of expressions in ``outputs``); needs injectivity."""
        self._require_density()
        if self.marginalised:
            raise ValueError(f"the map has fewer outputs than inputs ({[str(x) for x in self.marginalised]} were "
                             "integrated out): it has a density but no inverse")
        if len(self.branches) != 1:
            raise ValueError(
                f"the map is not injective on the support: the inverse has {len(self.branches)} "
                f"branches {self.branches}"
            )
        return self.branches[0]

    @property
    def density(self) -> sp.Expr:
        """The pushforward density :math:`p_Y` in the output symbols, valid on ``output_support``."""
        self._require_density()
        if self._p is None:
            raise ValueError("no base density was given to change_of_variables")
        return self._external(self._density)

    @property
    def output_support(self):
        """Interval (one output) or SymPy condition (several outputs) where ``density`` lives."""
        self._require_density()
        s = self._output_support
        return s if isinstance(s, sp.Set) else self._external(s)

    def _require_density(self):
        if not self.has_density:
            raise ValueError(f"the pushforward has no density: {self.reason}")

    def base_mass(self) -> tuple[float, str]:
        r""":math:`\int_S p_X(x)\,dx` symbolically where SymPy can, else numerically."""
        return _integrate_box(self._p, self._xs, self.support, self.parameters, self._pvals, self)

    def normalization(self) -> tuple[float, str]:
        r""":math:`\int p_Y(y)\,dy` over the output support, and how it was obtained.

        One output: integrated over the image interval (symbolically, falling
        back to quadrature). Several outputs with an injective map: the integral
        is pulled back to the input box, :math:`\int_S p_Y(f(x))\lvert\det J_f(x)\rvert dx`.
        """
        density = self._density_internal()
        if self._symbolic_only:
            return float("nan"), f"unavailable: numeric checks {self.numeric_checks}"
        if len(self._ys) == 1:
            return _integrate_box(density, self._ys, [self._output_support], self.parameters, self._pvals, self)
        if len(self._branches) != 1:
            return float("nan"), "unavailable (several branches in several dimensions)"
        pulled = density.subs(dict(zip(self._ys, self._f))) * sp.Abs(self._det)
        pulled = self._simplified(pulled, "simplifying the pulled-back density")
        return _integrate_box(pulled, self._xs, self.support, self.parameters, self._pvals, self)

    def _density_internal(self):
        self._require_density()
        if self._p is None:
            raise ValueError("no base density was given to change_of_variables")
        return self._density

    def to_stats(self, name: str | None = None):
        """The pushforward as a ``sympy.stats`` random variable (one output; ``ContinuousRV``)."""
        from sympy import stats

        if len(self.outputs) != 1:
            raise ValueError(f"to_stats needs a map with one output; this one has {len(self.outputs)}")
        support = self.output_support
        if not isinstance(support, sp.Interval):
            raise ValueError(f"to_stats needs an interval as output support; got {support}")
        y = self.outputs[0]
        return stats.ContinuousRV(y, self.density, set=support) if name is None else \
            stats.ContinuousRV(sp.Symbol(name, real=True), self.density.subs(y, sp.Symbol(name, real=True)), set=support)

    # ----------------------------------------------------------------- reporting

    def summary(self, fmt: str = "pretty") -> str:
        """Human-readable derivation: ``fmt`` is ``"pretty"``, ``"latex"`` or ``"markdown"``."""
        from .report import render_change_of_variables

        return render_change_of_variables(self, fmt)

    def __repr__(self) -> str:
        return (f"ChangeOfVariables(forward={self.forward}, inputs={self.inputs}, "
                f"has_density={self.has_density})")


def _integrate_box(expr, xs, intervals, parameters, pvals, owner):
    """Integrate over a box: SymPy first (under ``owner``'s time limit), SciPy quadrature when SymPy gives up."""
    subs = dict(zip(parameters, pvals))
    expr = expr.subs(subs)
    limits = [(x, iv.inf.subs(subs), iv.sup.subs(subs)) for x, iv in zip(xs, intervals)]
    if not expr.has(sp.Piecewise, sp.Mod, AppliedUndef):
        try:
            value = owner._timed("sympy.integrate", lambda: sp.integrate(expr, *limits), lambda: None,
                                 "fell back to numerical quadrature")
            if value is not None and value in (sp.oo, -sp.oo):
                return float(value), "symbolic"
            if value is not None and not value.has(sp.Integral) and value.is_number:
                value = complex(sp.N(value))
                if abs(value.imag) < 1e-12 and math.isfinite(value.real):
                    return float(value.real), "symbolic"
        except (NotImplementedError, TypeError, ValueError):
            pass
    value, failure = _quadrature(expr, xs, limits, owner.functions)
    return value, "numerical quadrature" + (f" failed ({failure})" if failure else "")


def _quadrature(expr, xs, limits, functions=None):
    from scipy import integrate

    fn = sp.lambdify(list(xs), expr, modules=([dict(functions)] if functions else []) + ["scipy", "numpy"])
    bounds = [(float(lo), float(hi)) for _, lo, hi in limits]

    def integrand(*args):
        with np.errstate(all="ignore"):
            val = float(np.real(fn(*args)))
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


def change_of_variables(forward, inputs, base_density=None, support=None, **kwargs) -> ChangeOfVariables:
    r"""Derive the Jacobian, inverse and pushforward density of ``y = forward(inputs)``.

    Parameters
    ----------
    forward:
        SymPy expression (one output) or sequence of expressions :math:`f_i(x)`.
    inputs:
        The input symbols :math:`x_1, \dots, x_d`, in order.
    base_density:
        :math:`p_X(x)` as an expression of the inputs, valid on ``support``; or a
        ``sympy.stats`` random variable (one per input, independent), whose density and
        support are used.  ``result.to_stats()`` turns a one-output result back into a
        ``sympy.stats`` random variable.
    support:
        ``None`` (the whole space), an Interval (one input), a sequence of
        intervals / ``(low, high)`` pairs, or ``{symbol: interval}``.
    outputs:
        Output symbols (default ``y`` or ``y1, ..., yd``).
    parameters:
        Extra constant symbols allowed in the map, density and support.
    inverse:
        A user-given inverse (expressions of the outputs), used instead of
        ``sympy.solve``; it is checked numerically.
    check_normalization:
        Warn if the base density does not integrate to 1 (default True).
    functions:
        ``{name: callable}``: NumPy implementations of undefined SymPy functions in the map
        (conditioners such as ``s = sp.Function("s")``).  Without them the derivation is purely
        symbolic (Jacobian, determinant, log|det|, and where SymPy can solve it the inverse and
        density in terms of those functions; undefined functions are taken as real-valued) and
        ``numeric_checks`` says the numerical checks were skipped; with them every numerical
        check runs.
    time_limit:
        Seconds allowed for each SymPy step (solve, simplify, determinant, image, integrate;
        default 5, ``None`` for no limit).  A step that runs out is noted in ``notes``: a
        simplification keeps the unsimplified expression, an integral falls back to quadrature,
        and a solve gives ``has_density=False`` with a ``reason`` that names the step and
        suggests ``inverse=``.  (The limit uses ``SIGALRM``: main thread, POSIX.)
    simplify:
        ``False`` skips the simplifications (faster on large maps; results stay correct).

    Returns a :class:`ChangeOfVariables`. A non-square Jacobian or an inverse
    SymPy cannot find gives ``has_density=False`` (with a warning and a
    ``reason``) rather than an exception; an identically zero determinant
    raises ``ValueError``.
    """
    return ChangeOfVariables(forward, inputs, base_density, support, **kwargs)

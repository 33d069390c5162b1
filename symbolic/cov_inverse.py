"""How :class:`~symbolic.change_of_variables.ChangeOfVariables` finds the inverse branches of a map:
SymPy's solver (whole system or step by step), the user's inverse, reduction of periodic solutions to
one period, validation of each candidate on samples, and the numerical inverse offered when no closed
form is found.  A mixin of the result class."""

from __future__ import annotations

import numpy as np
import sympy as sp

from ._common import StepTimeout, as_exprs, check_free_symbols
from .numerical_inverse import build_numerical_inverse
from .cov_helpers import InverseNotFoundWarning, _Branch, _SolveFailure, _simplest, _stepwise, _sympy_solve


class _InverseDerivation:
    """A part of :class:`~symbolic.change_of_variables.ChangeOfVariables`."""

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
            valid, values = self._validate(candidates, f_num)
        except _SolveFailure as err:
            if inverse is not None:
                raise ValueError(f"the given inverse is not valid: {err}") from None
            self._offer_numerical(str(err))
            return
        found = valid.any(axis=0)
        kept = [c for c, ok in zip(candidates, found) if ok]
        branches = [_Branch(c, self._branch_condition(c, reduced, len(kept))) for c in kept]
        wrong = self._misaccounted(branches, valid[:, found], [v for v, ok in zip(values, found) if ok])
        if wrong:
            self._fail(f"{wrong}; restrict the support (to one period of a periodic map, say), or pass the inverse "
                       "of a map that is one-to-one on the support as inverse=...", InverseNotFoundWarning)
            return
        self._branches = branches
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

    def _user_inverse(self, inverse):
        exprs = as_exprs(inverse, "inverse")
        if len(exprs) != len(self._xs):
            raise ValueError(f"inverse has {len(exprs)} components, the map has {len(self._xs)} inputs")
        by_name = {str(y): y for y in self.outputs}  # Symbol("y") for the output Symbol("y", real=True)
        allowed = set(self.outputs) | set(self.parameters)
        exprs = [e.xreplace({s: by_name[str(s)] for s in e.free_symbols - allowed if str(s) in by_name})
                 for e in exprs]
        check_free_symbols(exprs, allowed, "the inverse", role=f"outputs ({', '.join(map(str, self.outputs))})")
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
        """Boolean matrix (sample, branch): does branch k invert f at sample y_j inside S?  And each branch's
        real values at the samples (NaN where not finite)."""
        ys = self._ysamples
        ok = np.zeros((len(ys), len(candidates)), dtype=bool)
        values = []
        lo = np.array([float(iv.inf) for iv in self._numeric_support()])
        hi = np.array([float(iv.sup) for iv in self._numeric_support()])
        for k, cand in enumerate(candidates):
            g = self._numeric(self._ys + self.parameters, cand, complex_ok=True)(*ys.T, *self._pvals).T
            real = np.all(np.abs(g.imag) <= 1e-7 * (1 + np.abs(g.real)), axis=1)
            x = np.where(np.isfinite(g.real), g.real, np.nan)
            values.append(x)
            tol = 1e-7 * (1 + np.abs(x))
            inside = np.all((x >= lo - tol) & (x <= hi + tol), axis=1)
            back = f_num(*x.T, *self._pvals).T
            inverts = np.all(np.abs(back - ys) <= 1e-6 * (1 + np.abs(ys)), axis=1)
            ok[:, k] = real & inside & inverts
        uncovered = ~ok.any(axis=1)
        if uncovered.any():
            j = int(np.argmax(uncovered))
            raise _SolveFailure(
                "SymPy could not solve y = f(x) on the whole support: no solution "
                f"{'candidate' if candidates else ''} inverts the map at y = ({_point(ys[j])})"
            )
        return ok, values

    def _misaccounted(self, branches, inverts, values) -> str:
        """Why a density summed over ``branches`` would be wrong on the sampled points, or ``""``.

        ``p_Y(y) = sum_k [y in region_k] p_X(g_k(y)) / |det J_f(g_k(y))|`` is the pushforward only if
        (a) every preimage is some branch's value: each sample ``x_j`` must come back as ``g_k(f(x_j))``
        for a branch that inverts there (SymPy returns the principal solutions of ``sin(x) = y``, not the
        infinitely many others of ``x`` on the real line; a window of several periods folded into one);
        (b) a branch is counted only where it inverts: its condition ``[y in region_k]`` must be false
        at the samples where ``f(g_k(y)) != y`` (``acos`` of a cosine is one half of a circle).
        ``inverts`` and ``values`` are ``_validate``'s (sample, branch) matrix and each branch's values at
        the samples, for these branches.
        """
        xs, ys = self._xsamples, self._ysamples
        args = self._ys + self.parameters
        recovered = np.zeros(len(xs), dtype=bool)
        for k, (branch, g) in enumerate(zip(branches, values)):
            recovered |= inverts[:, k] & np.all(np.abs(g - xs) <= 1e-6 * (1 + np.abs(xs)), axis=1)
            if len(branches) > 1:  # a branch whose condition is True is counted everywhere
                counted = np.ones(len(ys), dtype=bool) if branch.condition is sp.true else \
                    self._numeric(args, [branch.condition])(*ys.T, *self._pvals)[0] > 0.5  # user functions too
                extra = counted & ~inverts[:, k]
                if extra.any():
                    j = int(np.argmax(extra))
                    return (f"the inverse branch {self._external(sp.Tuple(*branch.inverse))} would be counted at y = "
                            f"({_point(ys[j])}), where it does not invert the map")
        if not recovered.all():
            j = int(np.argmax(~recovered))
            return (f"the inverse branches found miss preimages: x = ({_point(xs[j])}) in the support maps to y = "
                    f"({_point(ys[j])}), and no branch found returns it ({len(branches)} found)")
        return ""

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


def _point(values) -> str:
    return ", ".join(f"{v:.4g}" for v in values)

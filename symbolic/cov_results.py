"""The checked results of :class:`~symbolic.change_of_variables.ChangeOfVariables`: the output
support, the checks of the base density and its normalisation, the public results (inverse, density,
masses, a ``sympy.stats`` variable) and the reports.  A mixin of the result class."""

from __future__ import annotations

import math
import warnings

import numpy as np
import sympy as sp

from .cov_helpers import _integrate_box, _monotone_image, _square_roots, _tidy_condition


class _CheckedResults:
    """A part of :class:`~symbolic.change_of_variables.ChangeOfVariables`."""

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
            parts = [_inside(iv, g) for i, (iv, g) in enumerate(zip(self.support, b.inverse))
                     if i not in self._reduced]
            conds.append(sp.And(*parts, *self._round_trip(b)))
        support = _tidy_condition(self._simplified(sp.Or(*conds), "simplifying the output support"))
        return _as_set_of_one_output(support, self._ys) if len(self._ys) == 1 else support

    def _round_trip(self, branch) -> list:
        """``f_i(g(y)) = y_i`` for the outputs where that is not true everywhere: a branch's value lands in
        the support for outputs outside the image too (``x1 = sqrt(y1**2 - y2**2)`` of ``y1 = sqrt(x1**2 + x2**2)``
        is real at ``y1 = -1``).  "Everywhere" is judged numerically on points of a wide box around the image,
        so identities SymPy does not simplify (``cos(Mod(atan2(y, x), 2*pi))``) add nothing."""
        if self._symbolic_only:
            return []
        subs = dict(zip(self._xs, branch.inverse))
        wide = np.concatenate([self._ysamples, 3 * np.random.default_rng(0).standard_normal(self._ysamples.shape)
                               * (1 + np.abs(self._ysamples).max(0))])
        out = []
        for f, y in zip(self._f, self._ys):
            gap = f.subs(subs) - y
            values = self._numeric(self._ys + self.parameters, [gap], complex_ok=True)(*wide.T, *self._pvals)[0]
            if not np.all(np.abs(values) <= 1e-9 * (1 + np.abs(wide).max())):
                gap = self._simplified(gap, "simplifying the round trip f(g(y)) - y")
                out.append(sp.Eq(gap, 0) if gap.is_real else sp.And(sp.Eq(sp.re(gap), 0), sp.Eq(sp.im(gap), 0)))
        return out

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

    def _check_other_parameter_values(self):
        """The branches and the output support are decided at test values of the parameters; a sign
        the derivation took from them is an assumption (``x**2`` of ``Uniform(a, b)`` at ``a = 0.81``
        keeps one branch, wrong for ``a < 0``).  For one input and one output, the density is
        integrated (quadrature) at each other sign pattern of the parameters that SymPy leaves free
        and where the base is still a density; where it does not integrate to 1 the result warns,
        naming both sets of values, and says so in ``notes``."""
        if self._symbolic_only or len(self._xs) != 1 or len(self._ys) != 1 or self._density.has(sp.Integral):
            return
        free = [i for i, p in enumerate(self.parameters) if p.is_positive is None and p.is_negative is None]
        if not free or len(free) > 4:
            return
        from itertools import product

        for signs in product((1, -1), repeat=len(free)):
            if all(s == 1 for s in signs):
                continue
            vals = list(self._pvals)
            for i, s in zip(free, signs):
                vals[i] = s * vals[i]
            mass = self._mass_at(vals)
            if mass is not None and abs(mass - 1.0) > 1e-4:
                here = ", ".join(f"{p} = {v:g}" for p, v in zip(self.parameters, self._pvals))
                there = ", ".join(f"{p} = {v:g}" for p, v in zip(self.parameters, vals))
                note = (f"the density holds for parameters like {here} (its branches and support were decided "
                        f"there); at {there} it integrates to {mass:.6g}, not 1: declare the parameters' signs "
                        f"(Symbol('{self.parameters[free[0]]}', positive=True), ...) or substitute numbers")
                self.notes.append(note)
                warnings.warn(note, UserWarning, stacklevel=4)
                return

    def _mass_at(self, vals):
        """The integral of the density at parameter values ``vals``, or None where the base is not a density
        there (an empty support, negative values, a mass other than 1) or quadrature fails."""
        from .cov_helpers import _quadrature

        subs = dict(zip(self.parameters, vals))
        try:
            lo, hi = (float(v.subs(subs)) for v in (self.support[0].inf, self.support[0].sup))
            if not lo < hi:
                return None
            base, failure = _quadrature(self._p.subs(subs), self._xs, [(self._xs[0], lo, hi)], self.functions)
            if failure or abs(base - 1.0) > 1e-6:
                return None
            grid = np.linspace(max(lo, -50.0), min(hi, 50.0), 41)[1:-1]
            values = self._numeric(self._xs + self.parameters, [self._p])(grid, *vals)[0]
            if np.any(np.asarray(values) < -1e-12):
                return None
            support = self._output_support.subs(subs)
            parts = support.args if isinstance(support, sp.Union) else (support,)
            total = 0.0
            for iv in parts:
                if not isinstance(iv, sp.Interval):
                    return None
                mass, failure = _quadrature(self._density.subs(subs), self._ys, [(self._ys[0], iv.inf, iv.sup)],
                                            self.functions)
                if failure:
                    return None
                total += mass
            return total
        except Exception:  # noqa: BLE001 - a check that cannot run (zoo in a lambdified Piecewise) says nothing
            return None

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

    def summary(self, fmt: str = "pretty") -> str:
        """Human-readable derivation: ``fmt`` is ``"pretty"``, ``"latex"`` or ``"markdown"``."""
        from .report import render_change_of_variables

        return render_change_of_variables(self, fmt)


def _as_set_of_one_output(condition, ys):
    """A condition on one output as an interval or a union of intervals, as ``output_support``
    promises for one output (``True`` is the real line); the condition itself where SymPy cannot."""
    if condition == sp.true:
        return sp.Interval(-sp.oo, sp.oo)
    try:
        found = condition.as_set() if condition.free_symbols == set(ys) else None
    except (NotImplementedError, TypeError, ValueError):
        found = None
    if isinstance(found, sp.Interval) or (isinstance(found, sp.Union)
                                          and all(isinstance(a, sp.Interval) for a in found.args)):
        return found
    return condition


def _real_where_roots_are(g):
    """``And(e_k >= 0)`` over the square roots ``sqrt(e_k)`` in ``g`` when ``g`` is real wherever they
    are (every ``e_k`` real, and ``g`` real with them standing for real numbers); else None."""
    roots = _square_roots(g)
    if not roots or not all(r.base.is_real for r in roots):
        return None
    if not g.xreplace({r: sp.Dummy(real=True) for r in roots}).is_real:
        return None
    return sp.And(*[r.base >= 0 for r in roots])


def _inside(interval, g):
    """``g`` in ``interval`` as a condition that is false, not an error, where ``g`` is complex: the
    comparisons read ``re(g)`` and ``im(g) = 0`` is added (SymPy drops both for a ``g`` known to be real)."""
    if g.is_real:
        return interval.as_relational(g)
    roots = _real_where_roots_are(g)
    if roots is not None:  # g = c sqrt(e) + d with c, d, e real: real exactly where e >= 0
        return roots if interval == sp.Interval(-sp.oo, sp.oo) else sp.And(roots, interval.as_relational(g))
    real = sp.Eq(sp.im(g), 0)
    if interval.inf == -sp.oo and interval.sup == sp.oo:
        return real
    return sp.And(real, interval.as_relational(sp.re(g)))

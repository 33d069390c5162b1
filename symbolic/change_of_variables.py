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
them numerically (branch validity, coverage of the image, normalisation).  Every sampled point
``x`` of the support must be returned as ``g_k(f(x))`` by a branch that inverts there, and a branch
is summed only where it inverts: a missing branch (``sin`` on the real line) or one counted where it
does not apply gives no density and a reason, never a density with the wrong mass.

The result class is split by concept: the inverse branches (:mod:`.cov_inverse`), maps with more
inputs than outputs and piecewise maps (:mod:`.cov_pieces`), the checks, results and reports
(:mod:`.cov_results`), and the helpers they share (:mod:`.cov_helpers`).
"""

from __future__ import annotations

import warnings

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
from .cov_helpers import (  # noqa: F401  (InverseNotFoundWarning and log_abs re-exported)
    _N_SAMPLES, InverseNotFoundWarning, _Branch, _declared_real, _drop_null_pieces, _from_random_variables,
    _image_interval, _param_values, _simplify, _SolveFailure, log_abs,
)
from .cov_inverse import _InverseDerivation
from .cov_pieces import _MarginalAndPiecewise
from .cov_results import _CheckedResults

__all__ = ["change_of_variables", "ChangeOfVariables", "InverseNotFoundWarning"]

# ------------------------------------------------------------------------- result type


class ChangeOfVariables(_InverseDerivation, _MarginalAndPiecewise, _CheckedResults):
    """Result of :func:`change_of_variables`; see the module docstring for the math.

    Attributes (all SymPy objects in the user's symbols): ``forward``,
    ``inputs``, ``outputs``, ``support`` (one interval per input),
    ``base_density``, ``jacobian``, ``det``, ``log_abs_det``, ``branches``,
    ``inverse``, ``density``, ``output_support``, ``has_density``, ``reason``;
    and ``notes`` (the steps that ran out of time and what was done instead) and
    ``numeric_checks`` (``"run"``, or why they were skipped).

    ``output_support`` is the image of the support: the outputs where some branch's value is real, in
    the support, and maps back to them (``f(g(y)) = y``, added where it is not an identity).  The
    density is the pushforward there; outside it, it is zero whatever its formula gives.
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
        self._pvals = self._values_inside_the_support(_param_values(self.parameters))
        self._xsamples = sample_box(self._numeric_support(), _N_SAMPLES, self._rng)

        # DiracDelta terms (from sign, Heaviside) live on null sets: drop them
        self.jacobian_internal = sp.Matrix(self._f).jacobian(self._xs).replace(
            sp.DiracDelta, lambda *args: sp.S.Zero)
        self.jacobian = self._external(self.jacobian_internal)
        self.is_square = d_in == d_out
        self.has_density = True
        self.reason = ""
        self._branches: list[_Branch] = []
        self.branches: list[tuple] = []  # the inverse branches, in the output symbols (none when no density)
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
            if self.parameters:
                self._check_other_parameter_values()

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

    def _values_inside_the_support(self, values):
        """Test values for the parameters that leave every support interval non-empty: the default
        values, else the first reordering of them that does (``Interval(a, b)`` needs ``a < b``)."""
        from itertools import islice, permutations

        def fine(vals):
            subs = dict(zip(self.parameters, vals))
            try:
                return all(bool(iv.inf.subs(subs) < iv.sup.subs(subs)) for iv in self.support)
            except TypeError:
                return True  # not decidable numerically: the checks below will say
        for vals in islice(permutations(values), 720):
            if fine(vals):
                return list(vals)
        raise ValueError(f"the support {list(self.support)} is empty at every test value of the parameters "
                         f"{list(self.parameters)}: give them assumptions (positive=True, ...) or a support that "
                         "is an interval for every value")

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
        self._density = self._on_the_output_support(density)

    def _on_the_output_support(self, density):
        """``Abs``, ``re``, ``im`` and ``sign`` of expressions of the output alone whose value is known on the
        output support, replaced by it: ``(1 - y)/|y - 1|`` is 1 on ``[0, 1)`` and ``re(erfinv(2y - 1))`` is
        ``erfinv(2y - 1)`` there (SymPy cannot tell; a normal's probability integral transform printed as
        ``exp(re(u)**2 - im(u)**2 - u**2)``).  The sign or realness is read at 401 points inside the support
        and the simplified density is kept only where it equals the original at 200 other points."""
        iv = getattr(self, "_output_support", None)
        if len(self._ys) != 1 or self._symbolic_only or not self.simplify or not isinstance(iv, sp.Interval) \
                or not (iv.inf.is_number and iv.sup.is_number):
            return density
        y = self._ys[0]
        grid, other = _inside(iv, 401, shift=0.0), _inside(iv, 200, shift=0.37)
        known = {}
        for node in density.atoms(sp.Abs, sp.re, sp.im, sp.sign):
            inner = node.args[0]
            if inner.free_symbols != {y}:
                continue
            try:
                values = self._numeric([y], [inner], complex_ok=True)(grid)[0]
            except Exception:  # noqa: BLE001 - NumPy cannot evaluate it: leave it as it is
                continue
            real = np.all(np.isfinite(values)) and np.all(np.abs(values.imag) <= 1e-12 * (1 + np.abs(values.real)))
            if not real:
                continue
            if isinstance(node, (sp.re, sp.im)):
                known[node] = inner if isinstance(node, sp.re) else sp.S.Zero
            elif np.all(values.real > 0):
                known[node] = inner if isinstance(node, sp.Abs) else sp.S.One
            elif np.all(values.real < 0):
                known[node] = -inner if isinstance(node, sp.Abs) else -sp.S.One
        if not known:
            return density
        tidy = self._simplified(density.xreplace(known), "simplifying the density on its support")
        try:
            before, after = (self._numeric([y], [d], complex_ok=True)(other)[0] for d in (density, tidy))
        except Exception:  # noqa: BLE001
            return density
        same = np.allclose(after, before, rtol=1e-9, atol=1e-12, equal_nan=True)
        return tidy if same else density

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

    # ----------------------------------------------------------------- reporting

    def __repr__(self) -> str:
        return (f"ChangeOfVariables(forward={self.forward}, inputs={self.inputs}, "
                f"has_density={self.has_density})")


def _inside(interval, n, shift):
    """``n`` points strictly inside ``interval`` (its ends may be infinite), spread over all of it."""
    t = (np.arange(n) + 0.5 + shift) / (n + 1)
    lo, hi = interval.inf, interval.sup
    if lo.is_finite and hi.is_finite:
        return float(lo) + (float(hi) - float(lo)) * t
    if lo.is_finite:
        return float(lo) + t / (1 - t)
    if hi.is_finite:
        return float(hi) - t / (1 - t)
    return np.tan(np.pi * (t - 0.5))


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
        Extra constant symbols allowed in the map, density and support.  The numerical steps
        (which inverse branches exist, the output support) run at test values of them; a sign
        taken from those values is an assumption.  With one input and one output the density is
        integrated at the other signs of the parameters SymPy leaves free (where the base is still a
        density), and a result that holds only at the test values' signs warns and says so in
        ``notes`` (``x**2`` of ``Uniform(a, b)``: right for ``0 < a < b``, not for ``a < 0 < b``).
        Declaring the signs (``sp.Symbol("a", positive=True)``) removes the assumption.
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

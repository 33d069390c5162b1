"""Maps that are not one smooth square map: more inputs than outputs (the pushforward is a
marginal, integrated out) and piecewise maps of one input (a density per piece).  A mixin of
:class:`~symbolic.change_of_variables.ChangeOfVariables`."""

from __future__ import annotations

import warnings

import sympy as sp

from .cov_helpers import InverseNotFoundWarning, _Branch, _square_roots


class _MarginalAndPiecewise:
    """A part of :class:`~symbolic.change_of_variables.ChangeOfVariables`."""

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
            joint = type(self)(list(self.forward) + [self.inputs[i] for i in choice], self.inputs,
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
        if self._marginal_by_limits(region, integrand, aux, choice):
            return
        if not (region == sp.true or (isinstance(region, sp.Set) and region == sp.Interval(-sp.oo, sp.oo))):
            cond = region.as_relational(self.outputs[0]) if isinstance(region, sp.Set) else region
            integrand = sp.Piecewise((integrand, cond), (0, True))
        limits = [(a, self.support[i].inf, self.support[i].sup) for a, i in zip(aux, choice)]
        density = self._timed("sympy.integrate (the marginal density)", lambda: sp.integrate(integrand, *limits),
                              lambda: sp.Integral(integrand, *limits), "left as an integral")
        if density.has(sp.Integral) or not density.free_symbols <= set(self.outputs) | set(self.parameters):
            density = sp.Integral(integrand, *limits)  # a partial answer can leave a variable outside its integral
            self.notes.append("SymPy left the marginal density as an integral; it is exact, evaluate it numerically")
        self._density = self._simplified(density, "simplifying the density") if not density.has(sp.Integral) \
            else density

    def _marginal_by_limits(self, region, integrand, aux, choice) -> bool:
        r"""One output and one variable integrated out: ``p_Y(y) = \int_{lo(y)}^{hi(y)} p_{Y,Z} dz`` piece
        by piece, with the limits solved from the joint's region (:mod:`symbolic.cov_limits`).  The
        output support becomes the union of the pieces where the ``z`` set is not empty.  False (and
        nothing changed) where the limits are not found or an integral stays unevaluated."""
        from .cov_limits import _trivial, agrees_with_quadrature, marginal_limits

        y_range = self._output_support
        if len(aux) != 1 or not isinstance(y_range, sp.Interval) \
                or not isinstance(region, sp.logic.boolalg.Boolean):
            return False
        z, y, z_range = aux[0], self.outputs[0], self.support[choice[0]]
        pieces = self._timed("the marginal's integration limits",
                             lambda: marginal_limits(region, z, z_range, y, y_range), lambda: None)
        if not pieces:
            return False
        integrand = integrand.replace(lambda e: isinstance(e, sp.Abs), lambda e: sp.Abs(sp.factor(e.args[0])))
        integrand = integrand.replace(  # "e > -oo": true wherever e is finite, as inside the limits
            lambda e: isinstance(e, sp.core.relational.Relational) and _trivial(e), lambda e: sp.true)
        parts = []
        for a, b, runs in pieces:
            on_piece = {y: _signed_dummy(y, a, b), z: _signed_dummy(z, z_range.inf, z_range.sup)}
            back = {d: s for s, d in on_piece.items()}
            if b.is_extended_nonpositive:  # y = -t with t > 0: logs and powers of t stay real
                t = sp.Dummy(y.name, positive=True)
                on_piece[y], back = -t, {t: -y, on_piece[z]: z}
            value = self._timed("sympy.integrate (the marginal density)", lambda: sp.Add(*[sp.integrate(
                _roots_real(integrand.xreplace(on_piece)), (on_piece[z], lo.xreplace(on_piece), hi.xreplace(on_piece)),
                conds="none") for lo, hi in runs]), lambda: None)
            if value is None or value.has(sp.Integral) or value.has(sp.nan):
                return False
            value = self._simplified(value, "simplifying the density").xreplace(back)
            if not self._timed("checking the marginal by quadrature", lambda: agrees_with_quadrature(
                    value, integrand, z, runs, y, a, b), lambda: False):
                self.notes.append(f"SymPy's integral on {a} < {y} < {b} disagrees with quadrature; kept as an integral")
                return False
            parts.append((value, sp.Interval(a, b).as_relational(y)))
        same = all(sp.simplify(value - parts[0][0]) == 0 for value, _ in parts[1:])
        self._density = parts[0][0] if same else sp.Piecewise(*parts, (0, True))  # one formula on the whole support
        self._output_support = sp.Union(*[sp.Interval(a, b) for a, b, *_ in pieces])
        limits = "; ".join(f"{a} < {y} < {b}: {z} in " + " and ".join(f"({lo}, {hi})" for lo, hi in runs)
                           for a, b, runs in pieces)
        self.notes.append(f"integrated {z} out between limits solved from the joint's support ({limits})")
        return True

    def _marginal_support(self):
        """The image of the support box (one output: interval arithmetic; several: all of R^m)."""
        if len(self.forward) != 1:
            return sp.true
        bounds = {x: sp.AccumBounds(iv.inf, iv.sup) for x, iv in zip(self.inputs, self.support)}  # x1**2 + x2**2 >= 0
        try:
            image = self.forward[0].subs(bounds)
        except (TypeError, ValueError):
            image = None
        if isinstance(image, sp.AccumBounds):
            return sp.Interval(image.min, image.max)
        return sp.Interval(-sp.oo, sp.oo)

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
                part = type(self)(expr, [x], base, {x: where}, outputs=[y], parameters=self.parameters,
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


def _signed_dummy(symbol, low, high):
    """A stand-in for ``symbol`` on ``(low, high)`` carrying the sign SymPy can use (positive, negative, or real)."""
    if low.is_extended_nonnegative:
        return sp.Dummy(symbol.name, positive=True)
    if high.is_extended_nonpositive:
        return sp.Dummy(symbol.name, negative=True)
    return sp.Dummy(symbol.name, real=True)


def _roots_real(expr):
    """``|a|`` as ``a`` where ``a`` is non-negative once its square roots are real: inside a marginal's
    limits the branch values are real (``|sqrt(y - z^2)|`` is ``sqrt(y - z^2)`` for ``|z| < sqrt(y)``),
    which SymPy's ``integrate`` cannot see; the quadrature check of the result guards the step."""
    def drop(abs_term):
        arg = abs_term.args[0]
        roots = {p: sp.Dummy(positive=True) for p in _square_roots(arg)}
        return arg if roots and arg.xreplace(roots).is_nonnegative else abs_term
    return expr.replace(lambda e: isinstance(e, sp.Abs), drop)

r"""The lecture notes' change-of-variables examples and layer derivations as ready objects.

Each :class:`Example` builds a derivation and lists checks against an
independent closed form (``sympy.stats`` densities, hand-derived formulas,
the chain rule, numerical evaluation of NumPyro transforms).

>>> from symbolic import catalogue
>>> ex = {e.name: e for e in catalogue()}["polar"]
>>> ex.build().det
r
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp
from sympy import stats

from . import layers
from .change_of_variables import change_of_variables

__all__ = ["Example", "catalogue", "get_example", "same"]


@dataclass(frozen=True)
class Example:
    """A named derivation with its checks; ``run()`` gives ``(derivation, [(label, ok), ...])``."""

    name: str
    title: str
    build: Callable[[], object]
    checks: Callable[[object], list]
    kind: str = "change of variables"

    def run(self):
        obj = self.build()
        return obj, [(label, bool(ok)) for label, ok in self.checks(obj)]


def same(a, b) -> bool:
    """Symbolic equality ``simplify(a - b) == 0``."""
    return sp.simplify(sp.sympify(a) - sp.sympify(b)) == 0


def _mass_is_one(cov) -> tuple[str, bool]:
    value, how = cov.normalization()
    return f"pushforward integrates to 1 ({how}: {value:.10g})", math.isclose(value, 1.0, rel_tol=1e-6)


_x = sp.Symbol("x")
_r, _t = sp.symbols("r t")
_phi = sp.exp(-_x**2 / 2) / sp.sqrt(2 * sp.pi)


def _stats_density(dist, y):
    return stats.density(dist)(y)


# ------------------------------------------------------------------ change of variables


def _uniform_scale():
    return change_of_variables(2 * _x, _x, sp.Integer(1), sp.Interval(0, 1), name="uniform_scale")


def _uniform_scale_checks(c):
    (y,) = c.outputs
    return [("density is 1/2", same(c.density, sp.Rational(1, 2))),
            ("support is [0, 2]", c.output_support == sp.Interval(0, 2)),
            ("det J = 2", same(c.det, 2)), _mass_is_one(c)]


def _uniform_affine():
    return change_of_variables(2 * _x + 1, _x, sp.Integer(1), sp.Interval(0, 1), name="uniform_affine")


def _uniform_affine_checks(c):
    (y,) = c.outputs
    ref = _stats_density(stats.Uniform("U", 1, 3), y)
    on_support = ref.subs(y, sp.Rational(3, 2))
    return [("support is [1, 3]", c.output_support == sp.Interval(1, 3)),
            ("density equals sympy.stats Uniform(1, 3) on its support", same(c.density, on_support)),
            _mass_is_one(c)]


def _normal_affine():
    return change_of_variables(2 * _x + 1, _x, _phi, None, name="normal_affine")


def _normal_affine_checks(c):
    (y,) = c.outputs
    ref = _stats_density(stats.Normal("N", 1, 2), y)
    return [("density equals sympy.stats Normal(1, sd 2)", same(c.density, ref)),
            ("support is the real line", c.output_support == sp.Interval(-sp.oo, sp.oo)),
            _mass_is_one(c)]


def _chi2_reference(y):
    return _stats_density(stats.ChiSquared("C", 1), y)


def _halfnormal_square():
    return change_of_variables(_x**2, _x, 2 * _phi, sp.Interval(0, sp.oo), name="halfnormal_square")


def _square_checks(c):
    (y,) = c.outputs
    ypos = sp.Symbol(y.name, positive=True)
    density = c.density.subs(y, ypos)
    return [("density equals sympy.stats ChiSquared(1)", same(density, _chi2_reference(ypos))),
            ("support is [0, oo)", c.output_support == sp.Interval(0, sp.oo)),
            _mass_is_one(c)]


def _normal_square():
    return change_of_variables(_x**2, _x, _phi, None, name="normal_square")


def _normal_square_checks(c):
    return [("two inverse branches -sqrt(y), +sqrt(y)", len(c.branches) == 2)] + _square_checks(c)


def _polar():
    x, y = sp.symbols("x y")
    return change_of_variables([_r * sp.cos(_t), _r * sp.sin(_t)], [_r, _t], 1 / (2 * sp.pi),
                               {_r: (0, 1), _t: (0, 2 * sp.pi)}, outputs=[x, y], name="polar")


def _polar_checks(c):
    x, y = c.outputs
    inside = c.output_support
    probe = {x: sp.Rational(3, 10), y: sp.Rational(-1, 2)}
    outside = {x: sp.Rational(9, 10), y: sp.Rational(-1, 2)}
    return [("det J = r", same(c.det, _r)),
            ("density is 1/(2 pi sqrt(x^2 + y^2))", same(c.density, 1 / (2 * sp.pi * sp.sqrt(x**2 + y**2)))),
            ("support is the unit disc", bool(inside.subs(probe)) and not bool(inside.subs(outside))),
            _mass_is_one(c)]


def _circle():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return change_of_variables([sp.cos(_t), sp.sin(_t)], [_t], 1 / (2 * sp.pi), {_t: (0, 2 * sp.pi)},
                                   name="circle")


def _circle_checks(c):
    try:
        c.density
        raised = False
    except ValueError:
        raised = True
    return [("reports no density on R^2 (non-square Jacobian)", not c.has_density and "not square" in c.reason),
            ("accessing the density raises ValueError", raised)]


# ------------------------------------------------------------------------- layers


def _layer_checks(layer):
    checks = [(f"det J equals the closed form {layer.expected_det}", layer.matches_expected())]
    if "triangular" in layer.structure:
        checks.append(("Jacobian is lower triangular", layer.is_lower_triangular()))
    if layer.structure == "permutation matrix":
        checks.append(("|det J| = 1", sp.Abs(layer.det) == 1))
    return checks


def _layer_examples():
    builders = {
        "elementwise": ("elementwise y_i = sigma(x_i)", lambda: layers.elementwise(3)),
        "linear": ("linear y = A x + b", lambda: layers.linear(2)),
        "lu_linear": ("LU linear y = L U x + b", lambda: layers.lu_linear(3)),
        "affine_coupling_2d": ("affine coupling, d = 2", lambda: layers.affine_coupling(2)),
        "affine_coupling_4d": ("affine coupling, d = 4", lambda: layers.affine_coupling(4, 2)),
        "additive_coupling": ("additive coupling, d = 3", lambda: layers.additive_coupling(3)),
        "maf": ("affine autoregressive, MAF density direction", lambda: layers.affine_autoregressive(3, "maf")),
        "iaf": ("affine autoregressive, IAF sampling direction", lambda: layers.affine_autoregressive(3, "iaf")),
        "permutation": ("permutation", lambda: layers.permutation((2, 0, 1))),
        "composition": ("composition coupling, permutation, coupling", lambda: layers.compose(
            layers.affine_coupling(2, suffix="a"), layers.permutation((1, 0)),
            layers.affine_coupling(2, suffix="b"))),
    }
    return [Example(name, title, build, _layer_checks, kind="layer") for name, (title, build) in builders.items()]


# ----------------------------------------------------------------- numeric twins


def _numeric_examples():
    from .twins import numpyro_twins

    out = [Example(f"numpyro:{tw.name}", f"NumPyro {tw.name} against its SymPy twin", (lambda tw=tw: tw),
                   _twin_checks, kind="numeric")
           for tw in numpyro_twins()]
    out.append(Example("symbolic_transform", "SymbolicTransform of the polar map against its derivation",
                       _symbolic_polar, _symbolic_polar_checks, kind="numeric"))
    return out + _nf_ppl_examples()


def _twin_checks(twin):
    rep = twin.check()
    return [(rep.details(), rep.passed)]


def _nf_ppl_examples():
    """Twins of the nf_ppl layers (skipped when nf_ppl or a layer is missing)."""
    try:
        import jax
        import jax.numpy as jnp
        from nf_ppl import layers as nl
    except ImportError:
        return []
    key = jax.random.PRNGKey(0)
    factories = {
        "ElementwiseAffine": lambda: nl.ElementwiseAffine(jnp.asarray([0.3, -1.0, 2.0]), jnp.asarray([0.5, -0.2, 0.1])),
        "LeakyReLU": lambda: nl.LeakyReLU(0.1),
        "ELU": lambda: nl.ELU(0.7),
        "Softplus": lambda: nl.Softplus(),
        "Tanh": lambda: nl.Tanh(),
        "SinhArcsinh": lambda: nl.SinhArcsinh(jnp.asarray([0.3, -0.2, 0.1]), jnp.asarray([0.2, -0.3, 0.1])),
        "AffineCoupling": lambda: nl.AffineCoupling(key, 4, hidden_dims=(8,)),
        "AdditiveCoupling": lambda: nl.AdditiveCoupling(key, 3, hidden_dims=(8,)),
        "MAF": lambda: nl.MaskedAffineAutoregressive(key, 3, hidden_dims=(8,), mode="maf"),
        "IAF": lambda: nl.MaskedAffineAutoregressive(key, 3, hidden_dims=(8,), mode="iaf"),
        "LULinear": lambda: _perturbed_lu(nl, key),
        "Permutation": lambda: nl.Permutation((2, 0, 1)),
    }
    out = []
    for name, make in factories.items():
        cls_name = {"MAF": "MaskedAffineAutoregressive", "IAF": "MaskedAffineAutoregressive"}.get(name, name)
        if not hasattr(nl, cls_name):
            continue
        out.append(Example(f"nf_ppl:{name}", f"nf_ppl {name} against its SymPy twin",
                           (lambda make=make: _twin_of(make())), _twin_checks, kind="numeric"))
    return out


def _twin_of(layer):
    from .twins import nf_ppl_twin

    return nf_ppl_twin(layer)


def _perturbed_lu(nl, key):
    """An LULinear layer away from the identity (random triangles and diagonal, a permutation)."""
    import jax

    k1, k2, k3, k4 = jax.random.split(key, 4)
    d = 3
    return nl.LULinear(jax.random.normal(k1, (d, d)), jax.random.normal(k2, (d, d)),
                       0.5 * jax.random.normal(k3, (d,)), jax.random.normal(k4, (d,)), perm=(2, 0, 1))


def _symbolic_polar():
    from .transform import SymbolicTransform

    x, y = sp.symbols("x y")
    inverse = [sp.sqrt(x**2 + y**2), sp.Mod(sp.atan2(y, x), 2 * sp.pi)]  # user-given: skips sympy.solve
    return SymbolicTransform([_r * sp.cos(_t), _r * sp.sin(_t)], [_r, _t], inverse=inverse, outputs=[x, y],
                             support={_r: (0, 1), _t: (0, 2 * sp.pi)}, name="polar")


def _symbolic_polar_checks(tr):
    import jax.numpy as jnp
    import numpy as np

    from .check import check_transform

    rep = check_transform(tr, [_r * sp.cos(_t), _r * sp.sin(_t)], [_r, _t], log_abs_det=sp.log(_r),
                          name="SymbolicTransform(polar)")
    pts = jnp.asarray([[0.5, 1.0], [0.9, 4.0], [0.2, 6.0]])
    back = np.asarray(tr.inv(tr(pts)))
    return [(rep.details(), rep.passed), ("inverse recovers (r, t)", np.allclose(back, np.asarray(pts), atol=1e-4))]


def _delta_affine():
    return change_of_variables(2 * _x + 1, _x, sp.DiracDelta(_x - 17), name="delta_affine")


def _delta_affine_checks(c):
    r"""The notes' pushforward of a point mass: :math:`f_\# \delta_{17} = \delta_{35}` for :math:`f(x) = 2x + 1`,
    i.e. :math:`\int h\, d(f_\#\pi) = h(f(17))` for every test function :math:`h`."""
    (y,) = c.outputs
    h = sp.exp(-y**2 / 100) * sp.cos(y)
    return [("density is delta(y - 35)", same(c.density, sp.DiracDelta(y - 35))),
            ("E[h(Y)] = h(35) for h(y) = exp(-y^2/100) cos(y)",
             same(sp.integrate(h * c.density, (y, -sp.oo, sp.oo)), h.subs(y, 35))),
            _mass_is_one(c)]


def catalogue(numeric: bool = True) -> list[Example]:
    """All examples: the notes' changes of variables, the layer families and (optionally) numeric twins."""
    examples = [
        Example("uniform_scale", "Uniform[0, 1] under x -> 2x", _uniform_scale, _uniform_scale_checks),
        Example("uniform_affine", "Uniform[0, 1] under x -> 2x + 1", _uniform_affine, _uniform_affine_checks),
        Example("normal_affine", "N(0, 1) under x -> 2x + 1", _normal_affine, _normal_affine_checks),
        Example("delta_affine", "point mass at 17 under x -> 2x + 1 (the notes' pushforward of a Dirac measure)",
                _delta_affine, _delta_affine_checks),
        Example("halfnormal_square", "half-normal under x -> x^2 (chi-square, 1 dof)", _halfnormal_square,
                _square_checks),
        Example("normal_square", "N(0, 1) under x -> x^2: two branches", _normal_square, _normal_square_checks),
        Example("polar", "Uniform([0, 1] x [0, 2 pi]) under polar coordinates", _polar, _polar_checks),
        Example("circle", "Uniform(0, 2 pi) under t -> (cos t, sin t): no density", _circle, _circle_checks),
    ]
    examples += _layer_examples()
    if numeric:
        examples += _numeric_examples()
    return examples


def get_example(name: str) -> Example:
    """The catalogue entry called ``name`` (``KeyError`` listing the names otherwise)."""
    table = {e.name: e for e in catalogue()}
    if name not in table:
        raise KeyError(f"no example {name!r}; available: {', '.join(table)}")
    return table[name]

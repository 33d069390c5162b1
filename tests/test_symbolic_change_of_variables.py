"""change_of_variables: the notes' examples against independent closed forms, and bad input."""

import math

import numpy as np
import pytest
import sympy as sp
from scipy import integrate
from sympy import stats

from symbolic import InverseNotFoundWarning, change_of_variables

x = sp.Symbol("x")
r, t = sp.symbols("r t")
phi = sp.exp(-x**2 / 2) / sp.sqrt(2 * sp.pi)


def same(a, b):
    return sp.simplify(a - b) == 0


def test_uniform_scaled_by_two():
    c = change_of_variables(2 * x, x, 1, sp.Interval(0, 1))
    assert c.density == sp.Rational(1, 2)
    assert c.output_support == sp.Interval(0, 2)
    assert c.det == 2 and c.log_abs_det == sp.log(2)
    assert c.normalization() == (1.0, "symbolic")


def test_uniform_affine_is_uniform_1_3():
    c = change_of_variables(2 * x + 1, x, 1, (0, 1))
    (y,) = c.outputs
    ref = stats.density(stats.Uniform("U", 1, 3))(y)
    assert c.output_support == sp.Interval(1, 3)
    for v in (1.1, 2.0, 2.9):
        assert float(c.density.subs(y, v)) == pytest.approx(float(ref.subs(y, v)))
    assert c.inverse == (y / 2 - sp.Rational(1, 2),)


def test_normal_affine_is_normal_1_4():
    c = change_of_variables(2 * x + 1, x, phi)
    (y,) = c.outputs
    assert same(c.density, stats.density(stats.Normal("N", 1, 2))(y))


def test_scale_family_with_parameters():
    mu = sp.Symbol("mu", real=True)
    sigma = sp.Symbol("sigma", positive=True)
    c = change_of_variables(sigma * x + mu, x, phi, parameters=[mu, sigma])
    (y,) = c.outputs
    assert same(c.density, stats.density(stats.Normal("N", mu, sigma))(y))
    assert same(c.log_abs_det, sp.log(sigma))


def _chi2(y):
    ypos = sp.Symbol(y.name, positive=True)
    return ypos, stats.density(stats.ChiSquared("C", 1))(ypos)


def test_half_normal_squared_is_chi_square_1():
    c = change_of_variables(x**2, x, 2 * phi, (0, sp.oo))
    ypos, ref = _chi2(c.outputs[0])
    assert len(c.branches) == 1
    assert same(c.density.subs(c.outputs[0], ypos), ref)
    assert c.output_support == sp.Interval(0, sp.oo)
    value, _ = c.normalization()
    assert value == pytest.approx(1.0, abs=1e-9)


def test_normal_squared_sums_two_branches():
    c = change_of_variables(x**2, x, phi)
    y = c.outputs[0]
    assert set(c.branches) == {(sp.sqrt(y),), (-sp.sqrt(y),)}
    ypos, ref = _chi2(y)
    assert same(c.density.subs(y, ypos), ref)
    with pytest.raises(ValueError, match="not injective"):
        c.inverse


def test_partial_second_branch_uses_piecewise_and_quadrature():
    # Uniform[-1, 2] under x^2: y in (0, 1) has two preimages, y in (1, 4) one.
    c = change_of_variables(x**2, x, sp.Rational(1, 3), (-1, 2))
    y = c.outputs[0]
    assert c.output_support == sp.Interval(0, 4)
    assert float(c.density.subs(y, 0.25)) == pytest.approx(1 / (3 * 0.5))
    assert float(c.density.subs(y, 2.25)) == pytest.approx(1 / (6 * 1.5))
    value, how = c.normalization()
    assert value == pytest.approx(1.0, abs=1e-6)


def test_polar_coordinates():
    X, Y = sp.symbols("x y")
    c = change_of_variables([r * sp.cos(t), r * sp.sin(t)], [r, t], 1 / (2 * sp.pi),
                            {r: (0, 1), t: (0, 2 * sp.pi)}, outputs=[X, Y])
    assert c.det == r
    assert c.jacobian == sp.Matrix([[sp.cos(t), -r * sp.sin(t)], [sp.sin(t), r * sp.cos(t)]])
    assert same(c.density, 1 / (2 * sp.pi * sp.sqrt(X**2 + Y**2)))
    assert c.output_support.subs({X: 0.3, Y: -0.5}) == sp.true
    assert c.output_support.subs({X: 0.9, Y: -0.5}) == sp.false
    # inverse: angle folded into [0, 2 pi), checked at a point of the lower half plane
    rr, tt = (float(e.subs({X: 0.3, Y: -0.4})) for e in c.inverse)
    assert (rr, tt) == pytest.approx((0.5, 2 * math.pi + math.atan2(-0.4, 0.3)))
    # independent check: integrate the density over the unit disc in Cartesian coordinates
    dens = sp.lambdify([X, Y], c.density)
    def integrand(yy, xx):  # the origin has measure zero (integrable 1/r singularity)
        return dens(xx, yy) if xx * xx + yy * yy > 0 else 0.0

    mass, _ = integrate.dblquad(integrand, -1, 1, lambda xx: -np.sqrt(1 - xx**2),
                                lambda xx: np.sqrt(1 - xx**2))
    assert mass == pytest.approx(1.0, abs=1e-6)
    assert c.normalization()[0] == pytest.approx(1.0)


def test_circle_has_no_density():
    with pytest.warns(UserWarning, match="not square"):
        c = change_of_variables([sp.cos(t), sp.sin(t)], [t], 1 / (2 * sp.pi), {t: (0, 2 * sp.pi)})
    assert not c.has_density
    assert "not square" in c.reason
    assert c.jacobian == sp.Matrix([[-sp.sin(t)], [sp.cos(t)]])
    with pytest.raises(ValueError, match="not square"):
        c.density


def test_identically_zero_determinant():
    a, b = sp.symbols("a b")
    with pytest.raises(ValueError, match="identically zero"):
        change_of_variables([a + b, 2 * a + 2 * b], [a, b])


def test_density_with_foreign_symbols():
    z = sp.Symbol("z")
    with pytest.raises(ValueError, match="base density contains the symbols z"):
        change_of_variables(2 * x, x, sp.exp(-z * x))


def test_support_with_foreign_symbols():
    z = sp.Symbol("z")
    with pytest.raises(ValueError, match="not an input"):
        change_of_variables(2 * x, x, 1, {z: (0, 1)})
    with pytest.raises(ValueError, match="support of x contains the symbols z"):
        change_of_variables(2 * x, x, 1, {x: (0, z)})


def test_unnormalised_base_density_warns_with_value():
    with pytest.warns(UserWarning, match="integrates to 2 over the support"):
        change_of_variables(2 * x, x, 2, (0, 1))


def test_sympy_cannot_solve():
    with pytest.warns(InverseNotFoundWarning, match="could not solve"):
        c = change_of_variables(x + sp.sin(x), x, phi)
    assert not c.has_density
    assert c.det == sp.cos(x) + 1
    with pytest.raises(ValueError, match="could not solve"):
        c.density


def test_incomplete_sympy_inverse_and_user_inverse():
    cube_root = sp.sign(x) * sp.Abs(x) ** sp.Rational(1, 3)
    # SymPy only finds y**3 for y >= 0: the coverage check catches it
    with pytest.warns(InverseNotFoundWarning, match="whole support"):
        c = change_of_variables(cube_root, x, phi)
    assert not c.has_density
    y = sp.Symbol("y")
    c = change_of_variables(cube_root, x, phi, inverse=y**3, outputs=[y])
    ref = 3 * y**2 * sp.exp(-y**6 / 2) / sp.sqrt(2 * sp.pi)
    for v in (-1.3, -0.2, 0.4, 1.1):
        assert float(c.density.subs(y, v)) == pytest.approx(float(ref.subs(y, v)))
    assert c.normalization()[0] == pytest.approx(1.0, abs=1e-6)


def test_wrong_user_inverse_is_rejected():
    y = sp.Symbol("y")
    with pytest.raises(ValueError, match="given inverse is not valid"):
        change_of_variables(2 * x + 1, x, phi, inverse=y / 2, outputs=[y])


def test_type_errors():
    with pytest.raises(TypeError, match="SymPy symbols"):
        change_of_variables(2 * x, [1], 1)
    with pytest.raises(TypeError, match="Interval"):
        change_of_variables(2 * x, x, 1, {x: "positive"})


def test_summary_formats():
    c = change_of_variables(2 * x + 1, x, phi)
    assert "pushforward density" in c.summary()
    assert "\\sqrt{" in c.summary("latex")
    assert c.summary("markdown").startswith("- map: $")
    with pytest.raises(ValueError, match="unknown format"):
        c.summary("html")

"""Monotone / triangular maps without a closed-form inverse: the numerical inverse and density.

References are independent of the code under test: the forward map itself (round trips), the
base's own CDF (``P(Y <= f(x0)) = Phi(x0)`` for an increasing map), grid quadrature and Monte
Carlo pushes of base samples.
"""

import math
import warnings

import numpy as np
import pytest
import sympy as sp
from scipy import integrate

from symbolic import change_of_variables

x = sp.Symbol("x", real=True)
x1, x2 = sp.symbols("x1 x2", real=True)
phi = sp.exp(-x**2 / 2) / sp.sqrt(2 * sp.pi)


def _derive(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return change_of_variables(*args, time_limit=2, **kwargs)


def _normal_cdf(v):
    return 0.5 * (1 + math.erf(v / math.sqrt(2)))


def _pushed(density, forward, xs):
    """``density(f(x)) |f'(x)|`` with the closed-form derivative: the density pulled back to the base coordinate."""
    f, df = sp.lambdify(x, forward, "numpy"), sp.lambdify(x, sp.diff(forward, x), "numpy")
    return density(f(xs)) * np.abs(df(xs))


def _pushed_integral(density, forward, lo, hi, nodes=400):
    """``int density(y) dy`` over ``y = f(x)``, ``x`` in ``(lo, hi)``: Gauss-Legendre in ``x`` on :func:`_pushed`
    (one vectorised call of ``density`` instead of quad's hundreds of scalar ones)."""
    t, w = np.polynomial.legendre.leggauss(nodes)
    xs = 0.5 * (hi - lo) * t + 0.5 * (hi + lo)
    return 0.5 * (hi - lo) * float(np.sum(w * _pushed(density, forward, xs)))


@pytest.mark.parametrize("forward, increasing", [(x + sp.tanh(x), True), (-x**5 - x, False)])
def test_monotone_map_without_closed_form_gets_a_marked_numerical_inverse_and_density(forward, increasing):
    c = _derive(forward, [x], phi)
    assert not c.has_density and "NUMERICAL inverse and density are offered" in c.reason
    f = sp.lambdify(x, forward, "numpy")
    x0 = np.array([-3.0, -0.7, 0.0, 0.4, 2.5])
    np.testing.assert_allclose(c.numerical_inverse(f(x0)), x0, atol=1e-10)
    grid = np.linspace(-4, 4, 33)  # pointwise: p_Y(f(x)) |f'(x)| is the base density
    assert bool(np.all(np.diff(f(grid)) > 0)) == increasing
    np.testing.assert_allclose(_pushed(c.numerical_density, forward, grid), np.exp(-grid ** 2 / 2) / math.sqrt(2 * math.pi), rtol=1e-8)
    assert _pushed_integral(c.numerical_density, forward, -12.0, 12.0) == pytest.approx(1.0, abs=1e-7)
    for v in (-1.3, 0.2, 1.1):  # the base's CDF through the map: P(x < v) = mass of f((-inf, v))
        below = _pushed_integral(c.numerical_density, forward, -12.0, v)
        assert below == pytest.approx(_normal_cdf(v), abs=1e-7)
    with pytest.raises(ValueError, match="has no density"):
        c.density


def test_bounded_support_gives_zero_density_and_nan_inverse_outside_the_image():
    c = _derive(x + sp.sin(x) / 2 + x**7, [x], sp.Integer(1), {x: (0, 1)})  # uniform base on (0, 1)
    if c.has_density:
        pytest.skip("SymPy found a closed form")
    top = 1 + math.sin(1) / 2 + 1
    inv = c.numerical_inverse(np.array([-0.5, top / 3, top + 0.5]))
    assert np.isnan(inv[0]) and np.isnan(inv[2]) and 0 < inv[1] < 1
    assert c.numerical_density(np.array([-0.5, top + 0.5])).tolist() == [0.0, 0.0]
    assert _pushed_integral(c.numerical_density, x + sp.sin(x) / 2 + x**7, 0.0, 1.0) == pytest.approx(1.0, abs=1e-6)


def test_triangular_two_dimensional_map_matches_monte_carlo():
    base = sp.exp(-(x1**2 + x2**2) / 2) / (2 * sp.pi)
    c = _derive([x1, x2 + sp.tanh(x2) + x1**2], [x1, x2], base)
    assert not c.has_density and c.numerical is not None
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(200_000, 2))
    ys = np.stack([xs[:, 0], xs[:, 1] + np.tanh(xs[:, 1]) + xs[:, 0] ** 2], axis=1)
    np.testing.assert_allclose(c.numerical_inverse(ys[:50]), xs[:50], atol=1e-9)
    a, b = np.linspace(-6, 6, 241), np.linspace(-12, 40, 1041)
    grid = np.stack(np.meshgrid(a, b, indexing="ij"), axis=-1).reshape(-1, 2)
    dens = c.numerical_density(grid).reshape(len(a), len(b))
    assert integrate.trapezoid(integrate.trapezoid(dens, b, axis=1), a) == pytest.approx(1.0, abs=2e-3)
    box = (a >= 0) & (a <= 1)
    inner = (b >= 0.5) & (b <= 2.5)
    prob = integrate.trapezoid(integrate.trapezoid(dens[np.ix_(box, inner)], b[inner], axis=1), a[box])
    mc = np.mean((ys[:, 0] >= 0) & (ys[:, 0] <= 1) & (ys[:, 1] >= 0.5) & (ys[:, 1] <= 2.5))
    assert prob == pytest.approx(mc, abs=4 * math.sqrt(mc * (1 - mc) / len(ys)) + 2e-3)


def test_non_monotone_or_non_triangular_maps_get_no_numerical_inverse_and_say_why():
    wiggle = _derive(x + 2 * sp.sin(x), [x], phi)
    assert not wiggle.has_density and wiggle.numerical is None
    with pytest.raises(ValueError, match="changes sign"):
        wiggle.numerical_inverse(np.zeros(3))
    coupled = _derive([x1 + sp.tanh(x2), x2 + sp.tanh(x1)], [x1, x2], phi.subs(x, x1) * phi.subs(x, x2))
    if coupled.has_density:
        pytest.skip("SymPy found a closed form")
    with pytest.raises(ValueError, match="not triangular"):
        coupled.numerical_density(np.zeros((1, 2)))


def test_wrong_number_of_columns_is_named():
    c = _derive([x1, x2 + sp.tanh(x2) + x1**2], [x1, x2], None)
    with pytest.raises(ValueError, match="2 columns"):
        c.numerical_inverse(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="no base density"):
        c.numerical_density(np.zeros((4, 2)))

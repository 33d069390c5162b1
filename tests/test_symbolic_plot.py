"""symbolic.plot: base draws from the gridded base density, pushed through the map, and the picture.

References: the closed-form moments of the pushforward (N(1, 2^2) for x -> 2x + 1), uniform radius
and angle for polar coordinates, Var(x1 + x2) = 2 for independent standard normals, and the histogram
heights of the drawn figure against the sympy.stats density at the bar centres.
"""

import math
import warnings

import matplotlib
import numpy as np
import pytest
import sympy as sp

from symbolic import change_of_variables, get_example
from symbolic.plot import plot, push_samples

matplotlib.use("Agg")

x1, x2, x3 = sp.symbols("x1 x2 x3", real=True)
N = 20_000


def _within(value, target, sd, n=N):
    return abs(value - target) <= 4 * sd / math.sqrt(n)


def test_pushed_draws_have_the_pushforward_moments():
    cov = get_example("normal_affine").build()
    x, y = push_samples(cov, N, seed=3)
    assert x.shape == (N, 1) and y.shape == (N, 1)
    assert _within(x.mean(), 0.0, 1.0) and abs(x.std() - 1.0) < 0.02
    np.testing.assert_allclose(y, 2 * x + 1)
    assert _within(y.mean(), 1.0, 2.0) and abs(y.std() - 2.0) < 0.04


def test_polar_draws_have_uniform_radius_and_angle():
    _, y = push_samples(get_example("polar").build(), N, seed=1)  # (r, t) uniform on [0, 1] x [0, 2 pi]
    radius = np.hypot(y[:, 0], y[:, 1])
    assert radius.max() <= 1.0 + 1e-9
    assert _within(np.mean(radius < 0.3), 0.3, math.sqrt(0.3 * 0.7))
    quadrant = np.mean((y[:, 0] > 0) & (y[:, 1] > 0))
    assert _within(quadrant, 0.25, math.sqrt(0.25 * 0.75))


def test_marginalised_sum_of_two_normals_has_variance_two():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cov = change_of_variables(x1 + x2, [x1, x2], sp.exp(-(x1**2 + x2**2) / 2) / (2 * sp.pi))
    _, y = push_samples(cov, N, seed=2)
    assert abs(y.var() - 2.0) < 0.08


def test_figure_histogram_matches_the_closed_form_density():
    import matplotlib.pyplot as plt

    fig = plot(get_example("normal_affine").build(), n=N, seed=0, bins=40)
    try:
        assert len(fig.axes) == 3
        assert "closed form" in fig.axes[1].get_title()
        bars = fig.axes[2].patches
        centres = np.array([b.get_x() + b.get_width() / 2 for b in bars])
        heights = np.array([b.get_height() for b in bars])
        pdf = np.exp(-(centres - 1) ** 2 / 8) / math.sqrt(8 * math.pi)
        assert len(bars) == 40 and np.max(np.abs(heights - pdf)) < 0.02
        curve = fig.axes[1].lines[0].get_ydata()
        assert curve.max() == pytest.approx(1 / math.sqrt(8 * math.pi), rel=1e-3)
    finally:
        plt.close(fig)


def test_bad_inputs_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="point mass"):
        push_samples(get_example("delta_affine").build())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        three = change_of_variables([x1, x2, x3], [x1, x2, x3], sp.Integer(1), [(0, 1)] * 3)
        no_base = change_of_variables(2 * x1, [x1])
    with pytest.raises(ValueError, match="one or two inputs"):
        push_samples(three)
    with pytest.raises(ValueError, match="base density"):
        push_samples(no_base)
    with pytest.raises(ValueError, match="positive integer"):
        push_samples(get_example("normal_affine").build(), n=0)

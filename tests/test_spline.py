"""Rational-quadratic spline layers and builders: knots, tails, inverses, bad input, and a fit."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jax_compat import enable_x64

import nf_ppl
from nf_ppl import flows as E
from nf_ppl.layers.spline import MaskedSplineAutoregressive, RationalQuadraticSpline, SplineCoupling
from nf_ppl.layers.transformers.spline import _knots, rational_quadratic_spline
from nf_ppl.nn import MADE


pytestmark = pytest.mark.usefixtures("x64")  # float64 for the whole module (tests/conftest.py)


def _random_spline(dim=3, bins=5, bound=2.0, scale=1.0, seed=0, dtype=jnp.float64):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    return RationalQuadraticSpline(scale * jax.random.normal(k1, (dim, bins), dtype),
                                   scale * jax.random.normal(k2, (dim, bins), dtype),
                                   scale * jax.random.normal(k3, (dim, bins - 1), dtype), bound)


def test_init_is_identity():
    layer = RationalQuadraticSpline.init(2, num_bins=6, tail_bound=3.0)
    x = jnp.linspace(-5, 5, 41)[:, None] * jnp.ones(2)
    y, ld = layer.forward_and_log_det(x)
    np.testing.assert_allclose(y, x, atol=1e-12)
    np.testing.assert_allclose(ld, 0.0, atol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_values_at_knots_bounds_and_far_tails(scale):
    """Knots map to knots, +-B to +-B, tails are the identity; inverse, log-det and gradients stay exact/finite."""
    bound = 2.0
    layer = _random_spline(bound=bound, scale=scale)
    xk = _knots(layer.raw_widths, bound, layer.min_bin_width).T            # (K+1, dim)
    yk = _knots(layer.raw_heights, bound, layer.min_bin_height).T
    eps = 1e-7
    edges = jnp.asarray([[-bound + eps] * 3, [bound - eps] * 3])  # just inside -B and +B
    tails = jnp.array([[-1e3, 1e3, -50.0], [50.0, -2.0 - 1e-12, 2.0 + 1e-12]])
    pts = jnp.concatenate([xk, tails, jnp.linspace(-3, 3, 101)[:, None] * jnp.ones(3)])

    def loss(l, v):
        a, la = l.forward_and_log_det(v)
        b, lb = l.inverse_and_log_det(v)
        return jnp.sum(a) + jnp.sum(la) + jnp.sum(b) + jnp.sum(lb)

    @jax.jit  # one program for every check (op by op they compile some 200 small ones)
    def report(l):
        return dict(knots=l.forward_and_log_det(xk), back=l.inverse_and_log_det(yk), edges=l(edges),
                    tails=l.forward_and_log_det(tails), jac=jax.vmap(jax.jacfwd(l))(pts),
                    ld_pts=l.forward_and_log_det(pts)[1],
                    grads=jax.grad(loss, argnums=(0, 1))(l, jnp.concatenate([xk, yk, tails])))

    r = report(layer)
    y, ld = r["knots"]
    np.testing.assert_allclose(y, yk, atol=1e-12)
    x_back, ld_back = r["back"]
    np.testing.assert_allclose(x_back, xk, atol=1e-12)
    np.testing.assert_allclose(ld_back, ld, atol=1e-10)
    # boundary derivative is 1 (log-det 0), continuous with the identity tails
    np.testing.assert_allclose(ld[0], 0.0, atol=1e-12)
    np.testing.assert_allclose(ld[-1], 0.0, atol=1e-12)
    np.testing.assert_allclose(r["edges"], edges, atol=1e-10)
    y, ld = r["tails"]
    np.testing.assert_array_equal(y, tails)
    np.testing.assert_array_equal(ld, 0.0)
    # log-det equals autodiff everywhere, knots and bounds included
    np.testing.assert_allclose(jnp.log(jnp.diagonal(r["jac"], axis1=1, axis2=2)), r["ld_pts"], atol=1e-10)
    # finite gradients through both directions, at knots and far out
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(r["grads"]))


def test_inverse_round_trip_is_exact_on_a_dense_grid_and_monotone():
    layer = _random_spline(bins=8, scale=3.0, seed=2)  # very uneven bins and derivatives
    x = jnp.linspace(-2.5, 2.5, 20001)[:, None] * jnp.ones(3)
    y = layer(x)
    assert bool(jnp.all(jnp.diff(y, axis=0) > 0))
    np.testing.assert_allclose(layer.inv(y), x, atol=1e-12)
    # float32 with moderate parameters (scale 3 makes bins with d/s ~ 200, where a float32
    # quadratic solve near the bin's end loses ~2 digits; float64 above stays exact there)
    layer32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), _random_spline(bins=8, scale=1.0, seed=2))
    x32 = x.astype(jnp.float32)
    y32 = layer32(x32)
    x_back, ld = layer32.inverse_and_log_det(y32)
    # float32: the error in x is that of y (a few ulps) over the slope, so check in y-space
    np.testing.assert_allclose(layer32(x_back), y32, atol=1e-5, rtol=1e-5)
    err_x = np.abs(np.asarray(x_back) - np.asarray(x32))
    bound = 2e-5 / np.exp(np.minimum(np.asarray(ld), 0.0))  # ~ulps of y over the slope
    assert np.all(err_x <= bound), float(np.max(err_x / bound))


def test_functional_spline_broadcasts_and_reports_base_side_log_det():
    w = jnp.zeros((4, 3))
    out, ld = rational_quadratic_spline(jnp.array([0.5, -0.2, 4.0, -4.0]), w, w + jnp.arange(3.0), w[:, :2] + 1.0,
                                        tail_bound=1.0)
    x, ld_inv = rational_quadratic_spline(out, w, w + jnp.arange(3.0), w[:, :2] + 1.0, tail_bound=1.0, inverse=True)
    np.testing.assert_allclose(x, [0.5, -0.2, 4.0, -4.0], atol=1e-12)
    np.testing.assert_allclose(ld_inv, ld, atol=1e-12)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8", None])
def test_bad_num_bins_is_rejected(bad):
    with pytest.raises((ValueError, TypeError), match="num_bins"):
        RationalQuadraticSpline.init(2, num_bins=bad)
    with pytest.raises((ValueError, TypeError), match="num_bins"):
        SplineCoupling(jax.random.PRNGKey(0), 2, num_bins=bad)
    with pytest.raises((ValueError, TypeError), match="num_bins"):
        MaskedSplineAutoregressive(jax.random.PRNGKey(0), 2, (4,), num_bins=bad)
    with pytest.raises((ValueError, TypeError), match="num_bins"):
        E.nsf(jax.random.PRNGKey(0), 2, num_bins=bad)
    with pytest.raises((ValueError, TypeError), match="num_bins"):
        E.spline_coupling(jax.random.PRNGKey(0), 2, num_bins=bad)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "3"])
def test_bad_tail_bound_is_rejected(bad):
    with pytest.raises(ValueError, match="tail_bound must be a positive finite number"):
        RationalQuadraticSpline.init(2, tail_bound=bad)
    with pytest.raises(ValueError, match="tail_bound"):
        SplineCoupling(jax.random.PRNGKey(0), 2, tail_bound=bad)
    with pytest.raises(ValueError, match="tail_bound"):
        E.nsf(jax.random.PRNGKey(0), 2, tail_bound=bad)
    with pytest.raises(ValueError, match="tail_bound"):
        E.spline_coupling(jax.random.PRNGKey(0), 2, tail_bound=bad)


def test_bad_shapes_and_options_are_rejected():
    with pytest.raises(ValueError, match=r"raw_derivatives must have shape \(2, 3\)"):
        RationalQuadraticSpline(jnp.zeros((2, 4)), jnp.zeros((2, 4)), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="raw_heights"):
        RationalQuadraticSpline(jnp.zeros((2, 4)), jnp.zeros((3, 4)), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="min_bin_width"):
        RationalQuadraticSpline.init(2, num_bins=4, min_bin_width=0.3)
    with pytest.raises(ValueError, match="mode"):
        MaskedSplineAutoregressive(jax.random.PRNGKey(0), 2, (4,), mode="forward")
    made = MADE.init(jax.random.PRNGKey(0), 2, (4,), 2)
    with pytest.raises(ValueError, match="num_params=11"):
        MaskedSplineAutoregressive.from_made(made, num_bins=4)
    layer = RationalQuadraticSpline.init(3)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        layer(jnp.zeros((2, 4)))


def test_coupling_keeps_conditioning_half_and_is_block_triangular():
    layer = SplineCoupling(jax.random.PRNGKey(1), 4, None, (8,), num_bins=4, tail_bound=2.0)
    layer = jax.tree_util.tree_map(lambda a: a + 0.5 * jax.random.normal(jax.random.PRNGKey(2), a.shape), layer)
    x = jax.random.normal(jax.random.PRNGKey(3), (5, 4))
    y = layer(x)
    np.testing.assert_array_equal(y[:, :2], x[:, :2])
    assert float(jnp.max(jnp.abs(y[:, 2:] - x[:, 2:]))) > 1e-3
    jac = jax.jit(lambda l, v: jax.jacfwd(l)(v))(layer, x[0])  # jitted: eager jacfwd is slow
    np.testing.assert_allclose(jac[:2, 2:], 0.0)


@pytest.mark.parametrize("mode", ["maf", "iaf"])
def test_autoregressive_spline_is_triangular_in_its_ordering(mode):
    layer = MaskedSplineAutoregressive(jax.random.PRNGKey(1), 4, (8, 8), num_bins=4, tail_bound=2.0,
                                       mode=mode, ordering=(2, 0, 3, 1))
    layer = jax.tree_util.tree_map(lambda a: a + 0.5 * jax.random.normal(jax.random.PRNGKey(2), a.shape), layer)
    x = jax.random.normal(jax.random.PRNGKey(3), (4,))
    order = [2, 0, 3, 1]
    jac = jax.jit(lambda l, v: jax.jacfwd(l)(v))(layer, x)[np.ix_(order, order)]  # jitted: eager is slow
    np.testing.assert_allclose(jnp.triu(jac, 1), 0.0, atol=1e-12)
    np.testing.assert_allclose(layer.inv(layer(x)), x, atol=1e-10)
    y, ld, info = layer.inverse_with_info(layer(x))
    assert bool(info.converged) and int(info.iterations) == 0


def test_conditional_spline_flows_depend_on_context():
    for builder in (E.nsf, E.spline_coupling):
        flow = builder(jax.random.PRNGKey(0), 2, num_layers=2, hidden_dims=(8,), num_bins=4, context_dim=2)
        flow = jax.tree_util.tree_map(lambda a: a + 0.3 * jax.random.normal(jax.random.PRNGKey(1), a.shape), flow)
        y = jnp.array([[0.3, -0.4], [0.3, -0.4]])  # same point, two contexts
        ctx = jnp.array([[1.0, 0.0], [-1.0, 2.0]])
        lp = flow.log_prob(y, context=ctx)
        assert lp.shape == (2,) and abs(float(lp[0] - lp[1])) > 1e-4


# -----------------------------------------------------------------------------------------
# a fit: splines capture the two moons far better than a same-size affine flow
# -----------------------------------------------------------------------------------------
def _moons(seed, n):
    from sklearn.datasets import make_moons

    x, _ = make_moons(n, noise=0.05, random_state=seed)
    return jnp.asarray((x - np.array([0.5, 0.25])) / np.array([0.87, 0.5]), jnp.float32)  # ~standardised


def _fit(flow, data, steps, lr):
    opt = optax.adam(lr)

    def loss(f):
        return -jnp.mean(f.log_prob(data))

    @jax.jit
    def train(f):
        def step(carry, _):
            f, state = carry
            value, grads = jax.value_and_grad(loss)(f)
            updates, state = opt.update(grads, state, f)
            return (optax.apply_updates(f, updates), state), value
        (f, _), losses = jax.lax.scan(step, (f, opt.init(f)), None, length=steps)
        return f, losses

    return train(flow)


def test_nsf_beats_realnvp_on_two_moons():
    """200 full-batch Adam steps on 512 points; held-out log-likelihood on 1024 fresh points."""
    start = time.perf_counter()
    with enable_x64(False):  # float32: the speed a user gets
        train, test = _moons(0, 512), _moons(1, 1024)
        k1, k2 = jax.random.split(jax.random.PRNGKey(2))
        spline = E.nsf(k1, 2, num_layers=2, hidden_dims=(16, 16), num_bins=8, tail_bound=3.0)
        affine = nf_ppl.realnvp(k2, 2, num_layers=4, hidden_dims=(24, 24))
        count = lambda f: sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(f))
        assert 0.6 < count(spline) / count(affine) < 1.0, (count(spline), count(affine))  # spline is smaller
        spline, losses = _fit(spline, train, 200, 5e-3)  # margin 0.55 nats at 200 steps, 0.43 at 400
        affine, _ = _fit(affine, train, 200, 5e-3)
        assert bool(jnp.all(jnp.isfinite(losses)))
        ll_spline = float(jnp.mean(spline.log_prob(test)))
        ll_affine = float(jnp.mean(affine.log_prob(test)))
    assert ll_spline > ll_affine + 0.2, (ll_spline, ll_affine)
    assert time.perf_counter() - start < 120

"""Neural autoregressive layers (BNAF, NAF-DSF) and the root solver behind their numerical inverses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nf_ppl import flows as E
from nf_ppl.layers.neural import (BlockNeuralAutoregressive, NeuralAutoregressive, leaky_tanh,
                                  log_leaky_tanh_derivative, sigmoidal_map)
from nf_ppl.roots import NumericalInverseError, default_tolerances, solve_increasing


pytestmark = pytest.mark.usefixtures("x64")  # float64 for the whole module (tests/conftest.py)


def _perturb(obj, seed=1, scale=0.3):
    leaves, treedef = jax.tree_util.tree_flatten(obj)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [a + scale * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])


TAILS = jnp.array([-1e3, -300.0, -20.0, -1.0, 0.0, 0.5, 20.0, 300.0, 1e3])


# -----------------------------------------------------------------------------------------
# the solver
# -----------------------------------------------------------------------------------------
def _cubic(t, args):
    (c,) = args
    return t ** 3 + c * t, 3 * t ** 2 + c


@pytest.mark.parametrize("newton", [True, False])
def test_solver_reaches_tolerance_and_brackets_far_tails(newton):
    target = jnp.concatenate([TAILS, jnp.array([1e6, -1e9])])
    res = jax.jit(lambda y, c: solve_increasing(_cubic, y, (c,), newton=newton, max_iter=200))(target, 0.5)
    assert bool(jnp.all(res.converged))
    x = res.x
    # error in x below the stated tolerance atol + rtol |x| (checked against the exact root)
    exact = np.array([np.real([r for r in np.roots([1, 0, 0.5, -float(y)]) if abs(r.imag) < 1e-9][0])
                      for y in target])
    atol, rtol = default_tolerances(jnp.float64)
    assert np.all(np.abs(np.asarray(x) - exact) <= 2 * (atol + rtol * np.abs(exact)))
    iters = np.asarray(res.iterations)
    if newton:  # the cubic is a hard case far out (Newton shrinks by 2/3 per step from x0 = y)
        assert iters.max() <= 60, iters
        assert np.all(iters[3:6] <= 8), iters
    else:
        assert iters.max() <= 200, iters


def test_solver_is_fast_in_linear_tails():
    # slope 1e-2 tails: the root of y = 1e3 is near 1e5, far from the initial guess x0 = y
    fn = lambda t, args: (args * t + jnp.tanh(t), args + 1 - jnp.tanh(t) ** 2)
    target = jnp.array([-1e3, -30.0, -1.0, 0.3, 2.0, 30.0, 1e3])
    res = solve_increasing(fn, target, 1e-2)
    assert bool(jnp.all(res.converged))
    assert int(jnp.max(res.iterations)) <= 12, res.iterations
    np.testing.assert_allclose(1e-2 * res.x + jnp.tanh(res.x), target, rtol=1e-12, atol=1e-12)


def test_solver_flags_unbracketable_and_unfinished_entries():
    bounded = lambda t, args: (jnp.tanh(t), 1 - jnp.tanh(t) ** 2)
    res = solve_increasing(bounded, jnp.array([0.3, 2.0]), max_expand=20)
    assert bool(res.converged[0]) and not bool(res.converged[1])
    res = solve_increasing(_cubic, jnp.array([0.3, 5.0, 700.0]), (0.5,), max_iter=2, newton=False)
    assert not bool(jnp.any(res.converged))


def test_solver_float32_tolerance():
    res = solve_increasing(_cubic, TAILS.astype(jnp.float32), (jnp.float32(0.5),))
    assert res.x.dtype == jnp.float32 and bool(jnp.all(res.converged))
    np.testing.assert_allclose(res.x ** 3 + 0.5 * res.x, TAILS, rtol=1e-5, atol=1e-4)


# -----------------------------------------------------------------------------------------
# scalar pieces
# -----------------------------------------------------------------------------------------
def test_leaky_tanh_log_derivative_is_stable():
    u = jnp.array([-1e4, -30.0, -1.0, 0.0, 2.0, 30.0, 1e4])
    deriv = jax.vmap(jax.grad(lambda v: leaky_tanh(v, 0.1)))(u)
    np.testing.assert_allclose(jnp.exp(log_leaky_tanh_derivative(u, 0.1)), deriv, rtol=1e-12)


def test_sigmoidal_map_is_monotone_onto_and_finite_in_tails():
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    params = [jax.random.normal(kk, (4,)) for kk in k]
    v = jnp.concatenate([jnp.linspace(-30, 30, 3001), TAILS])
    out, log_d = sigmoidal_map(v, *params)
    grid = jnp.linspace(-30, 30, 3001)
    assert bool(jnp.all(jnp.diff(sigmoidal_map(grid, *params)[0]) > 0))
    assert bool(jnp.all(jnp.isfinite(out))) and bool(jnp.all(jnp.isfinite(log_d)))
    assert float(out[-1]) > 1.0 and float(out[-9]) < -1.0  # onto R: linear tails
    deriv = jax.vmap(jax.grad(lambda t: sigmoidal_map(t, *params)[0]))(v)
    np.testing.assert_allclose(jnp.exp(log_d), deriv, rtol=1e-9)


# -----------------------------------------------------------------------------------------
# BNAF
# -----------------------------------------------------------------------------------------
def _grid(dim):
    pts = jax.random.normal(jax.random.PRNGKey(3), (6, dim))
    tails = jnp.stack([TAILS * (1 if i % 2 else -1) for i in range(dim)], -1)
    return jnp.concatenate([pts, tails])


@pytest.mark.parametrize("mode", ["iaf", "maf"])
def test_bnaf_numerical_inverse_accuracy_iterations_and_tails(mode):
    layer = _perturb(BlockNeuralAutoregressive(jax.random.PRNGKey(0), 3, (4, 4), mode=mode))
    v = _grid(3)
    if mode == "iaf":   # numerical inverse
        y = layer(v)
        x, log_det, info = jax.jit(lambda l, y: l.inverse_with_info(y))(layer, y)
        np.testing.assert_allclose(x, v, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(log_det, layer.forward_and_log_det(v)[1], rtol=1e-9, atol=1e-9)
    else:               # numerical forward, one-pass inverse
        y, log_det, info = jax.jit(lambda l, x: l.forward_with_info(x))(layer, v)
        np.testing.assert_allclose(layer.inv(y), v, rtol=1e-10, atol=1e-10)
    assert bool(jnp.all(info.converged))
    assert float(jnp.max(info.residual)) < 1e-9
    assert int(jnp.max(info.iterations)) <= 70, info.iterations     # tails: bracket doublings + Newton
    assert int(jnp.max(info.iterations[:6])) <= 25, info.iterations  # typical inputs


def test_bnaf_is_triangular_and_log_det_matches_autodiff():
    layer = _perturb(BlockNeuralAutoregressive(jax.random.PRNGKey(0), 4, (3, 2), mode="iaf"))
    x = _grid(4)
    jac = jax.jit(lambda l, v: jax.vmap(jax.jacfwd(l))(v))(layer, x)  # jitted: eager jacfwd is slow
    np.testing.assert_allclose(jnp.triu(jac, 1), 0.0, atol=1e-14)
    assert bool(jnp.all(jnp.diagonal(jac, axis1=1, axis2=2) > 0))
    np.testing.assert_allclose(jnp.linalg.slogdet(jac)[1], layer.forward_and_log_det(x)[1], rtol=1e-9, atol=1e-9)


def test_numerical_inverse_gradients_are_implicit_function_derivatives():
    layer = _perturb(BlockNeuralAutoregressive(jax.random.PRNGKey(0), 3, (3,), mode="iaf"))
    x = jax.random.normal(jax.random.PRNGKey(5), (3,))
    y = layer(x)
    jac_inv = jax.jacrev(layer.inv)(y)              # reverse mode through the solver
    np.testing.assert_allclose(jac_inv, jnp.linalg.inv(jax.jacfwd(layer)(x)), rtol=1e-8, atol=1e-10)
    # parameter gradient of x = N^{-1}(y) against finite differences
    def first(l):
        return l.inv(y)[2]
    g = jax.grad(first)(layer)
    direction = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.PRNGKey(6), a.shape), layer)
    eps = 1e-6
    plus = jax.tree_util.tree_map(lambda a, d: a + eps * d, layer, direction)
    minus = jax.tree_util.tree_map(lambda a, d: a - eps * d, layer, direction)
    fd = (first(plus) - first(minus)) / (2 * eps)
    ad = sum(jnp.sum(a * d) for a, d in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(direction)))
    np.testing.assert_allclose(ad, fd, rtol=1e-5, atol=1e-8)


def test_non_convergence_raises_eagerly_and_is_nan_under_jit():
    layer = _perturb(BlockNeuralAutoregressive(jax.random.PRNGKey(0), 2, (3,), mode="iaf", max_iter=2), scale=1.0)
    y = jnp.array([[0.3, -0.2], [1.5, 0.7], [-2.0, 0.1]])
    with pytest.raises(NumericalInverseError, match="did not converge .* max_iter=2"):
        layer.inverse_and_log_det(y)
    x, log_det = jax.jit(lambda l, v: l.inverse_and_log_det(v))(layer, y)
    _, _, info = layer.inverse_with_info(y)
    failed = ~np.asarray(info.converged)
    assert failed.any() and int(jnp.max(info.iterations)) == 2
    assert float(jnp.max(info.residual)) > 1e-8
    # under jit: exactly the failed rows are NaN (values and log-det)
    np.testing.assert_array_equal(np.isnan(np.asarray(x)).all(-1), failed)
    np.testing.assert_array_equal(np.isnan(np.asarray(log_det)), failed)
    naf = _perturb(NeuralAutoregressive(jax.random.PRNGKey(0), 2, (4,), num_components=3, mode="maf", max_iter=2))
    with pytest.raises(NumericalInverseError, match="NeuralAutoregressive: numerical inverse did not converge"):
        naf(y)


def test_flow_level_non_convergence():
    y = jnp.array([[0.3, -0.2], [1.5, 0.7]])
    unrolled = E.bnaf(jax.random.PRNGKey(0), 2, num_layers=2, hidden_dims=(3,), mode="iaf", max_iter=2, scan=False)
    with pytest.raises(NumericalInverseError):
        unrolled.log_prob(y)
    scanned = E.bnaf(jax.random.PRNGKey(0), 2, num_layers=2, hidden_dims=(3,), mode="iaf", max_iter=2)
    lp = scanned.log_prob(y)
    _, _, infos = E.numerical_info(scanned, y)
    failed = ~np.asarray(infos[0].converged & infos[1].converged)
    assert len(infos) == 2 and failed.any()
    np.testing.assert_array_equal(np.isnan(np.asarray(lp)), failed)
    good = E.bnaf(jax.random.PRNGKey(0), 2, num_layers=2, hidden_dims=(3,), mode="iaf")
    x, log_det, infos = E.numerical_info(good, y)
    assert all(bool(jnp.all(i.converged)) for i in infos)
    np.testing.assert_allclose(good.transform(x), y, atol=1e-10)
    np.testing.assert_allclose(good.log_prob(y), good.base_dist.log_prob(x) - log_det, atol=1e-10)


@pytest.mark.parametrize("kwargs, match", [
    (dict(slope=0.0), "slope must be positive"),
    (dict(max_iter=0), "max_iter must be a positive int"),
    (dict(max_iter=2.5), "max_iter must be a positive int"),
    (dict(atol=-1.0), "atol must be a finite number >= 0"),
    (dict(mode="both"), "mode must be one of"),
    (dict(hidden_dims=(0,)), "hidden_dims"),
    (dict(skip=1.0), r"skip \(the initial share of the linear skip term\) must be in \[0, 1\)"),
    (dict(skip=-0.5), r"skip \(the initial share of the linear skip term\) must be in \[0, 1\); got -0.5"),
    (dict(skip="half"), r"skip \(the initial share of the linear skip term\) must be in \[0, 1\); got 'half'"),
])
def test_bnaf_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        E.bnaf(jax.random.PRNGKey(0), 2, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_components=0), "num_components must be a positive int"),
    (dict(max_expand=0), "max_expand must be a positive int"),
    (dict(rtol=float("nan")), "rtol must be a finite number"),
])
def test_naf_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        E.naf(jax.random.PRNGKey(0), 2, hidden_dims=(4,), **kwargs)


# -----------------------------------------------------------------------------------------
# NAF
# -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["iaf", "maf"])
def test_naf_numerical_direction_accuracy_and_tails(mode):
    layer = _perturb(NeuralAutoregressive(jax.random.PRNGKey(0), 3, (6,), num_components=4, mode=mode))
    v = _grid(3)
    if mode == "iaf":
        y = layer(v)
        x, _, info = jax.jit(lambda l, y: l.inverse_with_info(y))(layer, y)
        # typical inputs: exact; tails: the conditioner sees |x_0| up to 1e3 and returns extreme
        # parameters whose sigmoidal map has numerically flat plateaus (slope ~ e^-100), where
        # x is not determined by y in floating point: there the check is in y-space
        np.testing.assert_allclose(x[:6], v[:6], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(x[:, 0], v[:, 0], rtol=1e-10, atol=1e-10)
        # y-space: coordinate i where x_<i is determined (equals v_<i); past a plateau the conditioner
        # sees an undetermined input (|x| ~ 1e5) and its output is ill-conditioned, so there the
        # solver's own residual (below) is the check
        same = np.isclose(np.asarray(x), np.asarray(v), rtol=1e-10, atol=1e-10)
        determined = np.concatenate([np.ones((len(v), 1), bool), np.cumprod(same, axis=1)[:, :-1] > 0], axis=1)
        np.testing.assert_allclose(np.asarray(layer(x))[determined], np.asarray(y)[determined], rtol=1e-10,
                                   atol=1e-10)
    else:
        y, _, info = jax.jit(lambda l, x: l.forward_with_info(x))(layer, v)
        np.testing.assert_allclose(layer.inv(y), v, rtol=1e-10, atol=1e-10)
    assert bool(jnp.all(info.converged)) and float(jnp.max(info.residual)) < 1e-9
    assert int(jnp.max(info.iterations)) <= 80, info.iterations


def test_conditional_neural_flows_depend_on_context():
    y = jnp.array([[0.3, -0.4], [0.3, -0.4]])  # same point, two contexts
    ctx = jnp.array([[1.0, 0.0], [-1.0, 2.0]])
    for builder, kw in ((E.bnaf, dict(hidden_dims=(3,))), (E.naf, dict(hidden_dims=(4,), num_components=3))):
        flow = _perturb(builder(jax.random.PRNGKey(0), 2, num_layers=1, context_dim=2, **kw))
        lp = flow.log_prob(y, context=ctx)
        assert lp.shape == (2,) and abs(float(lp[0] - lp[1])) > 1e-4
        draws = flow.condition(ctx).sample(jax.random.PRNGKey(1), (3,))
        assert draws.shape == (3, 2, 2) and bool(jnp.all(jnp.isfinite(draws)))

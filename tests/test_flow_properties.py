"""Property harness for flows: every builder in ``layer_cases.BUILDERS`` gets every check below.

The density is checked against independent references: it must integrate to 1 on a grid, and
samples drawn with ``sample`` must agree with it (moments and Kolmogorov-Smirnov tests against
the grid's CDF).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_compat import trapezoid
from scipy import stats

from layer_cases import BUILDERS, CONTEXT_DIM, make_flow, trainable

NAMES = sorted(BUILDERS)
N_SAMPLES = 20_000


pytestmark = pytest.mark.usefixtures("x64")  # float64 for the whole module (tests/conftest.py)


def _grid_bounds(samples):
    lo, hi = np.quantile(samples, [0.0005, 0.9995], axis=0)
    width = hi - lo
    return lo - width, hi + width


@pytest.mark.parametrize("name", NAMES)
def test_density_integrates_to_one_and_matches_samples_1d(name):
    flow = make_flow(name, 1, scale=0.15)
    samples = np.asarray(jax.jit(lambda f, k: f.sample(k, (N_SAMPLES,)))(flow, jax.random.PRNGKey(3)))[:, 0]
    lo, hi = _grid_bounds(samples)
    grid = np.linspace(lo, hi, 8001)
    dens = np.exp(np.asarray(jax.jit(lambda f, g: f.log_prob(g))(flow, jnp.asarray(grid)[:, None])))
    mass = trapezoid(dens, grid)
    assert abs(mass - 1) < 1e-2
    cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(grid))]) / mass
    ks = stats.kstest(samples, lambda v: np.interp(v, grid, cdf))
    assert ks.pvalue > 1e-3, ks
    mean = trapezoid(grid * dens, grid) / mass
    sd = np.sqrt(trapezoid((grid - mean) ** 2 * dens, grid) / mass)
    assert abs(samples.mean() - mean) < 5 * sd / np.sqrt(N_SAMPLES)


@pytest.mark.parametrize("name", NAMES)
def test_density_integrates_to_one_and_matches_samples_2d(name):
    flow = make_flow(name, 2, scale=0.15)
    samples = np.asarray(jax.jit(lambda f, k: f.sample(k, (N_SAMPLES,)))(flow, jax.random.PRNGKey(4)))
    lo, hi = _grid_bounds(samples)
    gx, gy = np.linspace(lo[0], hi[0], 401), np.linspace(lo[1], hi[1], 401)
    pts = np.stack(np.meshgrid(gx, gy, indexing="ij"), -1)
    dens = np.exp(np.asarray(jax.jit(lambda f, g: f.log_prob(g))(flow, jnp.asarray(pts))))
    mass = trapezoid(trapezoid(dens, gy, axis=1), gx)
    assert abs(mass - 1) < 1e-2
    # marginals of the grid density against the samples' marginals
    for axis, (g, marg) in enumerate([(gx, trapezoid(dens, gy, axis=1)), (gy, trapezoid(dens, gx, axis=0))]):
        cdf = np.concatenate([[0.0], np.cumsum((marg[1:] + marg[:-1]) / 2 * np.diff(g))]) / mass
        ks = stats.kstest(samples[:, axis], lambda v: np.interp(v, g, cdf))
        assert ks.pvalue > 1e-3, (axis, ks)
    # the cross moment, which the marginals do not see
    xy = trapezoid(trapezoid(dens * pts[..., 0] * pts[..., 1], gy, axis=1), gx) / mass
    emp = samples[:, 0] * samples[:, 1]
    assert abs(emp.mean() - xy) < 5 * emp.std() / np.sqrt(N_SAMPLES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sample_shape", [(), (7,), (3, 4)])
def test_sample_and_log_prob_shapes(name, sample_shape):
    flow = make_flow(name, 3)
    y = jax.eval_shape(lambda f, k: f.sample(k, sample_shape), flow, jax.random.PRNGKey(0))
    assert y.shape == sample_shape + (3,)
    lp = jax.eval_shape(lambda f, v: f.log_prob(v), flow, y)
    assert lp.shape == sample_shape
    assert flow.event_shape == (3,) and flow.batch_shape == ()


@pytest.mark.parametrize("name", ["maf-conditional", "realnvp-conditional"])
def test_conditional_flow_batch_shape_follows_context(name):
    flow = make_flow(name, 3).replace(context=None)
    context = jax.random.normal(jax.random.PRNGKey(1), (7, CONTEXT_DIM))
    cond = flow.condition(context)
    assert cond.batch_shape == (7,)
    y = cond.sample(jax.random.PRNGKey(2), (5,))
    assert y.shape == (5, 7, 3)
    lp = cond.log_prob(y)
    assert lp.shape == (5, 7)
    # row i of the batched flow equals the flow conditioned on context[i] alone
    single = flow.condition(context[2]).log_prob(y[:, 2])
    np.testing.assert_allclose(lp[:, 2], single, rtol=1e-10)
    np.testing.assert_allclose(flow.log_prob(y, context=context), lp, rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_intermediates_jit_and_vmap_agree(name):
    flow = make_flow(name, 3)

    @jax.jit  # one compiled program for every path but the eager reference (the eager sampler is slow to run op by op)
    def paths(f, key):
        y, inter = f.sample_with_intermediates(key, (6,))
        return y, f.log_prob(y, inter), f.log_prob(y), jax.vmap(f.log_prob)(y), f.sample_and_log_prob(key, (6,))

    y, with_inter, jitted, mapped, (y2, lp2) = paths(flow, jax.random.PRNGKey(5))
    plain = flow.log_prob(y)  # eager
    np.testing.assert_allclose(with_inter, plain, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(jitted, plain, rtol=1e-10)
    np.testing.assert_allclose(mapped, plain, rtol=1e-10)
    np.testing.assert_allclose(y2, y, rtol=1e-12)
    np.testing.assert_allclose(lp2, plain, rtol=1e-9, atol=1e-10)


# flows whose trainable leaves are exactly their transform's, which the layer harness checks already
# (tests/test_layer_properties.py, cases "<name>.transform")
CHECKED_AS_TRANSFORMS = ("maf", "iaf", "realnvp", "maf-conditional", "maf-random-perm-unrolled")


@pytest.mark.parametrize("name", [n for n in NAMES if n not in CHECKED_AS_TRANSFORMS])
def test_every_flow_parameter_gets_finite_nonzero_gradient(name):
    flow = make_flow(name, 3)
    context = flow.context
    params = trainable(flow)
    data = flow.sample(jax.random.PRNGKey(6), (32,))

    @jax.jit
    @jax.grad
    def grads(p):
        bound = p if context is None else p.condition(context)
        return -bound.log_prob(data).mean()

    for g in jax.tree_util.tree_leaves(grads(params)):
        if g.size:
            assert jnp.all(jnp.isfinite(g)) and jnp.any(g != 0)
    if name == "iaf-trainable-base":
        assert params.base_loc is not None and params.base_log_scale is not None


def test_base_is_fixed_unless_asked():
    flow = make_flow("maf", 2)
    assert flow.base_loc is None and flow.base_log_scale is None
    n_fixed = len(jax.tree_util.tree_leaves(flow))
    n_trainable = len(jax.tree_util.tree_leaves(make_flow("iaf-trainable-base", 2)))
    assert n_trainable == len(jax.tree_util.tree_leaves(make_flow("iaf", 2))) + 2
    assert n_fixed > 0


def test_maf_sequential_sampling_inverts_one_pass_density_direction():
    """MAF samples by d sequential passes; its one-pass inverse must undo them (and IAF vice versa)."""
    for name in ("maf", "iaf"):
        flow = make_flow(name, 5)
        z = jax.random.normal(jax.random.PRNGKey(7), (10, 5))
        t = flow.transform
        y = t(z)
        np.testing.assert_allclose(t.inv(y), z, rtol=1e-9, atol=1e-9)

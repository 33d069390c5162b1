"""Autoregressive density models (nf_ppl.models.autoregressive_density) against independent references.

References: the product of conditionals computed one dimension at a time (calling the MADE on
inputs whose not-yet-generated coordinates hold junk, and scoring each coordinate with numpyro /
scipy univariate distributions), exact enumeration of small discrete spaces, numerical
integration on 1-D/2-D grids, chi-square / KS tests of samples against the density, and a
per-pixel categorical baseline on sklearn's digits.
"""

from __future__ import annotations

import itertools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest

from jax_compat import enable_x64, trapezoid
from scipy import stats
from scipy.special import logsumexp as np_logsumexp

from nf_ppl.models.autoregressive_density import AutoregressiveModel, autoregressive_model, bits_per_dim, random_orderings
from nf_ppl.nn import MADE

CONTINUOUS = ("gaussian", "laplace", "mixture")
FAMILIES = CONTINUOUS + ("categorical",)
BOUND = 5.0  # default log_scale_bound


pytestmark = pytest.mark.usefixtures("x64")  # float64 for the whole module (tests/conftest.py)


def randomize(model, seed, scale=0.5):
    """Same structure, every MADE weight/bias redrawn as N(0, scale^2) (so conditionals differ)."""
    leaves, tree = jax.tree.flatten(model.made)
    rng = np.random.default_rng(seed)
    new = [jnp.asarray(scale * rng.normal(size=l.shape), l.dtype) for l in leaves]
    return model._replace(made=jax.tree.unflatten(tree, new))


def make(family, dim, *, seed=0, scale=0.5, ordering="natural", context_dim=0, K=3, V=3, hidden=(8,), dtype=None,
         bound=BOUND):
    m = autoregressive_model(jax.random.PRNGKey(seed), dim, conditional=family, hidden_dims=hidden,
                             num_components=K, num_levels=V, ordering=ordering, context_dim=context_dim,
                             log_scale_bound=bound, dtype=dtype or jnp.float64)
    return randomize(m, seed + 100, scale) if scale else m


def data(family, n, dim, seed=0, V=3):
    rng = np.random.default_rng(seed)
    if family == "categorical":
        return rng.integers(0, V, size=(n, dim))
    return rng.normal(size=(n, dim))


# ---------------------------------------------------------------- explicit reference
def reference_log_prob(model, y, context=None, seed=0):
    """sum_t log p(y_{o_t} | y_{o_<t}) with one MADE call per dimension and numpyro densities.

    Coordinates not yet generated are filled with junk, so any leak through the masks shows.
    """
    made = model.made
    order = made.ordering
    y = np.asarray(y)
    n, d = y.shape
    rng = np.random.default_rng(seed)
    V = model.num_levels
    total = np.zeros(n)
    for t, i in enumerate(order):
        if model.family == "categorical":
            inp = rng.integers(0, V, size=y.shape).astype(np.float64)
        else:
            inp = rng.normal(scale=3.0, size=y.shape)
        known = list(order[:t])
        inp[:, known] = y[:, known]
        if model.family == "categorical":
            inp = inp / (V - 1)
        out = np.asarray(made(jnp.asarray(inp), None if context is None else jnp.asarray(context)))
        col = out[:, :, i]  # (n, num_params)
        yi = jnp.asarray(y[:, i])
        if model.family in ("gaussian", "laplace"):
            loc, log_s = col[:, 0], BOUND * np.tanh(col[:, 1] / BOUND)
            cls = dist.Normal if model.family == "gaussian" else dist.Laplace
            lp = cls(jnp.asarray(loc), jnp.asarray(np.exp(log_s))).log_prob(yi)
        elif model.family == "mixture":
            K = model.num_components
            logits, loc, log_s = col[:, :K], col[:, K:2 * K], BOUND * np.tanh(col[:, 2 * K:] / BOUND)
            lp = dist.MixtureSameFamily(dist.Categorical(logits=jnp.asarray(logits)),
                                        dist.Normal(jnp.asarray(loc), jnp.asarray(np.exp(log_s)))).log_prob(yi)
        else:
            lp = dist.Categorical(logits=jnp.asarray(col)).log_prob(yi.astype(jnp.int32))
        total += np.asarray(lp)
    return total


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("ordering", ["natural", "random"])
def test_log_prob_matches_product_of_explicit_conditionals(family, ordering):
    m = make(family, 4, ordering=ordering, seed=1)
    y = data(family, 6, 4, seed=2)
    np.testing.assert_allclose(np.asarray(m.log_prob(y)), reference_log_prob(m, y), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("family", FAMILIES)
def test_conditional_log_prob_matches_explicit_conditionals(family):
    m = make(family, 3, context_dim=2, seed=3)
    y = data(family, 5, 3, seed=4)
    ctx = np.random.default_rng(5).normal(size=(5, 2))
    lp = np.asarray(m.condition(ctx).log_prob(y))
    np.testing.assert_allclose(lp, reference_log_prob(m, y, ctx), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.asarray(m.log_prob(y, context=ctx)), lp, rtol=1e-12)
    # the context matters
    assert np.max(np.abs(lp - np.asarray(m.condition(ctx + 1.0).log_prob(y)))) > 1e-3


def test_conditional_log_probs_sum_to_log_prob():
    m = make("mixture", 4, seed=6)
    y = data("mixture", 7, 4)
    np.testing.assert_allclose(np.asarray(m.conditional_log_probs(y).sum(-1)), np.asarray(m.log_prob(y)), rtol=1e-12)


# ---------------------------------------------------------------- normalisation
ALL_LEVELS = np.array(list(itertools.product(range(3), repeat=3)))


@pytest.mark.parametrize("ordering", ["natural", "reversed", (1, 2, 0), "random"])
def test_categorical_normalised_by_enumeration(ordering):
    m = make("categorical", 3, V=3, ordering=ordering, scale=1.0, seed=7)
    lp = np.asarray(m.log_prob(ALL_LEVELS))
    assert len(lp) == 27
    assert abs(np.exp(np_logsumexp(lp)) - 1) < 1e-10
    assert np.std(lp) > 0.1  # not trivially uniform


def test_categorical_normalised_under_every_redrawn_ordering_and_connectivity():
    m = make("categorical", 3, V=3, scale=1.0, seed=8, hidden=(6, 6))
    for i, o in enumerate(random_orderings(jax.random.PRNGKey(0), 3, 2)):
        for ck in (None, jax.random.PRNGKey(i)):
            mo = m.with_ordering(o, connectivity_key=ck)
            assert mo.ordering == o
            lp = np.asarray(mo.log_prob(ALL_LEVELS))
            assert abs(np.exp(np_logsumexp(lp)) - 1) < 1e-10
            np.testing.assert_allclose(lp, reference_log_prob(mo, ALL_LEVELS), rtol=1e-9, atol=1e-9)


def test_ensemble_over_orderings_is_normalised():
    m = make("categorical", 3, V=3, scale=1.0, seed=9)
    orders = random_orderings(jax.random.PRNGKey(1), 3, 4)
    lp = np.asarray(m.ensemble_log_prob(ALL_LEVELS, orders))
    assert abs(np.exp(np_logsumexp(lp)) - 1) < 1e-10
    per = np.stack([np.asarray(m.with_ordering(o).log_prob(ALL_LEVELS)) for o in orders])
    np.testing.assert_allclose(lp, np_logsumexp(per, axis=0) - np.log(4), rtol=1e-10)


def test_conditional_categorical_normalised_for_each_context():
    m = make("categorical", 3, V=3, scale=1.0, context_dim=2, seed=10)
    ctx = np.random.default_rng(0).normal(size=(4, 2))
    lp = np.asarray(m.condition(ctx[:, None, :]).log_prob(ALL_LEVELS))  # (4, 27)
    assert lp.shape == (4, 27)
    np.testing.assert_allclose(np.exp(np_logsumexp(lp, axis=1)), 1.0, atol=1e-10)


def _grid_1d(samples):
    lo, hi = np.quantile(samples, [0.0005, 0.9995])
    w = hi - lo
    return np.linspace(lo - w, hi + w, 8001)


@pytest.mark.parametrize("family", CONTINUOUS)
def test_continuous_1d_integrates_to_one_and_matches_samples(family):
    m = make(family, 1, seed=11, scale=0.7)
    s = np.asarray(m.sample(jax.random.PRNGKey(0), (20000,)))[:, 0]
    g = _grid_1d(s)
    dens = np.exp(np.asarray(m.log_prob(g[:, None])))
    mass = trapezoid(dens, g)
    assert abs(mass - 1) < 1e-2
    cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(g))]) / mass
    assert stats.kstest(s, lambda v: np.interp(v, g, cdf)).pvalue > 1e-3


@pytest.mark.parametrize("family", CONTINUOUS)
@pytest.mark.parametrize("ordering", ["reversed"])  # the natural order's conditionals: test_log_prob_matches_product_of_explicit_conditionals
def test_continuous_2d_integrates_to_one_and_matches_samples(family, ordering):
    # log_scale_bound=1.5 keeps every conditional scale in (0.22, 4.5) so a 1201^2 grid resolves it (Laplace kinks need the fine grid)
    m = make(family, 2, seed=12, scale=0.5, ordering=ordering, bound=1.5)
    n = 20000
    s = np.asarray(m.sample(jax.random.PRNGKey(1), (n,)))
    lo, hi = np.quantile(s, [0.0005, 0.9995], axis=0)
    w = hi - lo
    gx, gy = np.linspace(lo[0] - w[0], hi[0] + w[0], 1201), np.linspace(lo[1] - w[1], hi[1] + w[1], 1201)
    pts = np.stack(np.meshgrid(gx, gy, indexing="ij"), -1)
    dens = np.exp(np.asarray(m.log_prob(pts)))
    mass = trapezoid(trapezoid(dens, gy, axis=1), gx)
    assert abs(mass - 1) < 1e-2
    for axis, (g, marg) in enumerate([(gx, trapezoid(dens, gy, axis=1)), (gy, trapezoid(dens, gx, axis=0))]):
        cdf = np.concatenate([[0.0], np.cumsum((marg[1:] + marg[:-1]) / 2 * np.diff(g))]) / mass
        assert stats.kstest(s[:, axis], lambda v: np.interp(v, g, cdf)).pvalue > 1e-3, axis
    xy = trapezoid(trapezoid(dens * pts[..., 0] * pts[..., 1], gy, axis=1), gx) / mass
    emp = s[:, 0] * s[:, 1]
    assert abs(emp.mean() - xy) < 5 * emp.std() / np.sqrt(n)


# ---------------------------------------------------------------- sampling (discrete)
from stats_checks import chi2_pvalue  # noqa: E402


def _codes(y):
    return (np.asarray(y) * np.array([9, 3, 1])).sum(-1)


@pytest.mark.parametrize("ordering", ["natural", "reversed", (2, 0, 1)])
def test_categorical_samples_match_enumerated_probabilities(ordering):
    m = make("categorical", 3, V=3, scale=1.0, ordering=ordering, seed=13)
    y = np.asarray(m.sample(jax.random.PRNGKey(2), (20000,)))
    assert y.dtype == np.int32 and y.min() >= 0 and y.max() < 3
    counts = np.bincount(_codes(y), minlength=27).astype(float)
    probs = np.exp(np.asarray(m.log_prob(ALL_LEVELS)))  # ALL_LEVELS is in code order
    assert chi2_pvalue(counts, probs) > 1e-3
    # and a wrong distribution (another ordering's) is rejected, so the test can fail
    other = np.exp(np.asarray(m.with_ordering((1, 0, 2) if ordering != (1, 0, 2) else (0, 1, 2)).log_prob(ALL_LEVELS)))
    assert chi2_pvalue(counts, other) < 1e-3


def test_conditional_categorical_samples_per_context():
    m = make("categorical", 3, V=3, scale=1.0, context_dim=2, seed=14)
    ctx = np.array([[2.0, -1.0], [-2.0, 1.0]])
    c = m.condition(ctx)
    y = np.asarray(c.sample(jax.random.PRNGKey(3), (20000,)))
    assert y.shape == (20000, 2, 3)
    for b in range(2):
        counts = np.bincount(_codes(y[:, b]), minlength=27).astype(float)
        probs = np.exp(np.asarray(m.condition(ctx[b]).log_prob(ALL_LEVELS)))
        assert chi2_pvalue(counts, probs) > 1e-3


@pytest.mark.parametrize("family", CONTINUOUS)
def test_conditional_continuous_sample_moments(family):
    """Sample means per context against the mean of the grid density (2-D)."""
    m = make(family, 2, context_dim=1, seed=15, scale=0.5, bound=1.5)
    ctx = np.array([[-1.5], [1.5]])
    s = np.asarray(m.condition(ctx).sample(jax.random.PRNGKey(4), (20000,)))
    for b in range(2):
        sb = s[:, b]
        lo, hi = np.quantile(sb, [0.0005, 0.9995], axis=0)
        w = hi - lo
        gx, gy = np.linspace(lo[0] - w[0], hi[0] + w[0], 301), np.linspace(lo[1] - w[1], hi[1] + w[1], 301)
        pts = np.stack(np.meshgrid(gx, gy, indexing="ij"), -1)
        dens = np.exp(np.asarray(m.condition(ctx[b]).log_prob(pts)))
        mass = trapezoid(trapezoid(dens, gy, axis=1), gx)
        assert abs(mass - 1) < 1e-2
        for a in range(2):
            mu = trapezoid(trapezoid(dens * pts[..., a], gy, axis=1), gx) / mass
            assert abs(sb[:, a].mean() - mu) < 5 * sb[:, a].std() / np.sqrt(len(sb))


# ---------------------------------------------------------------- autoregressive property
@pytest.mark.parametrize("family", CONTINUOUS)
@pytest.mark.parametrize("ordering", ["natural", (2, 0, 3, 1)])
def test_autoregressive_property_by_autodiff(family, ordering):
    m = make(family, 4, ordering=ordering, seed=16, scale=0.7)
    y = jnp.asarray(data(family, 1, 4, seed=3)[0])
    jac = np.asarray(jax.jacfwd(lambda v: m._conditional_log_probs_core(v))(y))  # jac[i, j] = d lp_i / d y_j
    pos = np.empty(4, int)
    pos[np.asarray(m.ordering)] = np.arange(4)
    for i in range(4):
        for j in range(4):
            if pos[j] > pos[i]:
                assert jac[i, j] == 0.0, (i, j)
            elif pos[j] < pos[i]:
                assert abs(jac[i, j]) > 1e-8, (i, j)  # the connectivity is really used


@pytest.mark.parametrize("ordering", ["natural", (3, 1, 0, 2)])
def test_categorical_autoregressive_property_by_perturbation(ordering):
    m = make("categorical", 4, V=4, ordering=ordering, seed=17, scale=1.0)
    y = data("categorical", 1, 4, seed=5, V=4)
    base = np.asarray(m.conditional_log_probs(y))[0]
    order = m.ordering
    for t, j in enumerate(order):
        y2 = y.copy()
        y2[0, j] = (y2[0, j] + 1) % 4
        new = np.asarray(m.conditional_log_probs(y2))[0]
        earlier = list(order[:t])
        later = list(order[t + 1:])
        np.testing.assert_array_equal(new[earlier], base[earlier])
        if later:
            assert np.max(np.abs(new[later] - base[later])) > 1e-6


# ---------------------------------------------------------------- order-agnostic training
def test_with_ordering_keeps_weights_and_changes_masks():
    m = make("gaussian", 5, seed=18)
    mo = m.with_ordering("random", key=jax.random.PRNGKey(3))
    for a, b in zip(jax.tree.leaves(m), jax.tree.leaves(mo)):
        assert a is b
    assert mo.ordering != m.ordering and sorted(mo.ordering) == list(range(5))
    assert m.with_ordering("reversed").ordering == (4, 3, 2, 1, 0)


def test_order_agnostic_log_prob_picks_one_ordering_per_key_without_retracing():
    m = make("mixture", 3, seed=19)
    y = data("mixture", 8, 3)
    orders = random_orderings(jax.random.PRNGKey(4), 3, 4)
    per = {o: np.asarray(m.with_ordering(o).log_prob(y)) for o in orders}
    traces = []

    @jax.jit
    def f(model, key):
        traces.append(1)
        return model.order_agnostic_log_prob(y, key, orders)

    seen = set()
    for s in range(12):
        key = jax.random.PRNGKey(s)
        idx = int(jax.random.randint(key, (), 0, 4))
        np.testing.assert_allclose(np.asarray(f(m, key)), per[orders[idx]], rtol=1e-10)
        seen.add(idx)
    assert len(traces) == 1 and len(seen) > 1


def test_order_agnostic_training_step_reduces_loss():
    y = jnp.asarray(np.random.default_rng(0).normal(size=(256, 3)) @ np.array([[1, 0.8, 0], [0, 1, 0.5], [0, 0, 1]]))
    m = autoregressive_model(jax.random.PRNGKey(0), 3, conditional="gaussian", hidden_dims=(16,))
    orders = random_orderings(jax.random.PRNGKey(1), 3, 3)
    opt = optax.adam(2e-2)

    @jax.jit
    def step(m, st, key):
        l, g = jax.value_and_grad(lambda mm: -mm.order_agnostic_log_prob(y, key, orders).mean())(m)
        u, st = opt.update(g, st, m)
        return optax.apply_updates(m, u), st, l

    before = float(-m.ensemble_log_prob(y, orders).mean())

    @jax.jit
    def fit(m, key):
        def body(carry, k):
            m, st, _ = step(*carry, k)
            return (m, st), None

        return jax.lax.scan(body, (m, opt.init(m)), jax.random.split(key, 60))[0][0]

    m = fit(m, jax.random.PRNGKey(2))
    after = float(-m.ensemble_log_prob(y, orders).mean())
    assert after < before - 0.3
    for o in orders:  # every ordering of the ensemble learned
        assert float(-m.with_ordering(o).log_prob(y).mean()) < before - 0.3


# ---------------------------------------------------------------- pytree, shapes, dtypes
@pytest.mark.parametrize("family", FAMILIES)
def test_grad_reaches_every_leaf(family):
    m = make(family, 3, context_dim=2, seed=20)
    y = data(family, 16, 3)
    ctx = jnp.asarray(np.random.default_rng(1).normal(size=(16, 2)))
    g = jax.grad(lambda mm: -mm.log_prob(y).mean())(m.condition(ctx))
    assert isinstance(g, AutoregressiveModel)
    for leaf in jax.tree.leaves(g.made):
        assert np.all(np.isfinite(leaf)) and np.any(leaf != 0)
    u = make(family, 3, seed=20)
    g = jax.grad(lambda mm: -mm.log_prob(y).mean())(u)
    assert all(np.any(leaf != 0) for leaf in jax.tree.leaves(g))


@pytest.mark.parametrize("family", FAMILIES)
def test_shapes(family):
    m = make(family, 3, context_dim=2, seed=21)
    c = m.condition(jnp.zeros((4, 2)))
    u = make(family, 3, seed=21)
    assert c.batch_shape == (4,) and c.event_shape == (3,) and u.batch_shape == ()
    for sample_shape in [(), (5,), (2, 3)]:
        y = jax.eval_shape(lambda mm, k: mm.sample(k, sample_shape), c, jax.random.PRNGKey(0))
        assert y.shape == sample_shape + (4, 3)
        assert jax.eval_shape(lambda mm, v: mm.log_prob(v), c, y).shape == sample_shape + (4,)
        y = jax.eval_shape(lambda mm, k: mm.sample(k, sample_shape), u, jax.random.PRNGKey(0))
        assert y.shape == sample_shape + (3,)
        assert jax.eval_shape(lambda mm, v: mm.log_prob(v), u, y).shape == sample_shape
    # a value batch broadcasts against the context batch
    assert jax.eval_shape(lambda mm, v: mm.log_prob(v), c, jnp.zeros((7, 1, 3), jnp.int32)).shape == (7, 4)


@pytest.mark.parametrize("family", FAMILIES)
def test_jit_vmap_and_dtypes(family):
    y = data(family, 5, 3)
    m32 = make(family, 3, seed=22, dtype=jnp.float32)
    v32 = y if family == "categorical" else jnp.asarray(y, jnp.float32)
    assert m32.log_prob(v32).dtype == jnp.float32
    s = jax.eval_shape(lambda mm, k: mm.sample(k, (3,)), m32, jax.random.PRNGKey(0))
    assert s.dtype == (jnp.int32 if family == "categorical" else jnp.float32)
    m = make(family, 3, seed=22)
    lp = np.asarray(m.log_prob(y))
    assert lp.dtype == np.float64
    np.testing.assert_allclose(np.asarray(m32.log_prob(v32)), lp, rtol=1e-4, atol=1e-4)  # same weights, float32
    np.testing.assert_allclose(np.asarray(jax.jit(lambda mm, v: mm.log_prob(v))(m, y)), lp, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(jax.vmap(lambda v: m.log_prob(v))(jnp.asarray(y))), lp, rtol=1e-12)


@pytest.mark.parametrize("family", CONTINUOUS)
def test_extreme_inputs_finite_values_and_gradients(family):
    m = make(family, 3, seed=23)
    y = jnp.array([[1e3, -1e3, 1e3], [-1e3, 0.0, 1e3]])
    lp = m.log_prob(y)
    assert np.all(np.isfinite(np.asarray(lp)))
    g = jax.grad(lambda mm: mm.log_prob(y).sum())(m)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(g))


def test_in_a_numpyro_model():
    import numpyro
    from numpyro.infer.util import log_density

    m = make("categorical", 3, V=3, seed=24)
    y = ALL_LEVELS[:5]

    def model():
        numpyro.sample("y", m, obs=y)

    ld, _ = log_density(model, (), {}, {})
    np.testing.assert_allclose(float(ld), float(m.log_prob(y).sum()), rtol=1e-10)


def test_bits_per_dim():
    m = make("categorical", 3, V=3, seed=25)
    lp = np.asarray(m.log_prob(ALL_LEVELS))
    np.testing.assert_allclose(np.asarray(m.bits_per_dim(ALL_LEVELS)), -lp / (3 * math.log(2)), rtol=1e-12)
    np.testing.assert_allclose(float(bits_per_dim(-3 * math.log(2), 3)), 1.0)
    # a uniform categorical over V levels has log2(V) bits per dimension
    u = make("categorical", 3, V=3, seed=25, scale=0.0)
    u = u._replace(made=jax.tree.map(jnp.zeros_like, u.made))
    np.testing.assert_allclose(np.asarray(u.bits_per_dim(ALL_LEVELS)), math.log2(3), rtol=1e-12)
    with pytest.raises(ValueError, match="num_dims must be a positive integer"):
        bits_per_dim(1.0, 0)


# ---------------------------------------------------------------- bad input
def test_bad_categorical_values():
    m = make("categorical", 3, V=3, seed=26)
    with pytest.raises(ValueError, match=r"integer levels in \[0, num_levels=3\)"):
        m.log_prob(np.array([[0, 1, 3]]))
    with pytest.raises(ValueError, match=r"integer levels in \[0, num_levels=3\)"):
        m.log_prob(np.array([[0, -1, 2]]))
    with pytest.raises(ValueError, match="non-integer"):
        m.log_prob(np.array([[0.5, 1.0, 2.0]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        m.log_prob(np.array([[np.nan, 1.0, 2.0]]))


@pytest.mark.parametrize("family", CONTINUOUS)
def test_bad_continuous_values(family):
    m = make(family, 3, seed=27)
    for bad in (np.nan, np.inf, -np.inf):
        y = np.zeros((4, 3))
        y[2, 1] = bad
        with pytest.raises(ValueError, match="value contains NaN or inf"):
            m.log_prob(y)
    with pytest.raises(ValueError, match=r"value must have shape \(\.\.\., 3\)"):
        m.log_prob(np.zeros((4, 2)))


def test_bad_context():
    m = make("gaussian", 3, context_dim=2, seed=28)
    with pytest.raises(ValueError, match="needs a context"):
        m.log_prob(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="needs a context"):
        m.sample(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., 2\)"):
        m.condition(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., 2\)"):
        m.log_prob(np.zeros((1, 3)), context=np.zeros(5))
    with pytest.raises(ValueError, match="context contains NaN or inf"):
        m.condition(np.array([[0.0, np.nan]]))
    u = make("gaussian", 3, seed=28)
    with pytest.raises(ValueError, match="not conditional"):
        u.condition(np.zeros(2))


def test_bad_construction():
    key = jax.random.PRNGKey(0)
    for v in (0, -2, None, 2.5):
        with pytest.raises(ValueError, match="num_levels must be a positive integer"):
            autoregressive_model(key, 3, conditional="categorical", num_levels=v, hidden_dims=(4,))
    for k in (0, -1):
        with pytest.raises(ValueError, match="num_components must be a positive integer"):
            autoregressive_model(key, 3, conditional="mixture", num_components=k, hidden_dims=(4,))
    with pytest.raises(ValueError, match="conditional must be one of"):
        autoregressive_model(key, 3, conditional="poisson", hidden_dims=(4,))
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        autoregressive_model(key, 0, hidden_dims=(4,))
    with pytest.raises(ValueError, match="hidden_dims"):
        autoregressive_model(key, 6, hidden_dims=(4,))
    with pytest.raises(ValueError, match="must output 6 parameters"):
        AutoregressiveModel(MADE.init(key, 3, (4,), 2), "mixture", num_components=2)
    with pytest.raises(ValueError, match="orderings must be a non-empty tuple"):
        make("gaussian", 3).order_agnostic_log_prob(np.zeros((1, 3)), key, ())
    with pytest.raises(ValueError, match="permutation"):
        make("gaussian", 3).with_ordering((0, 0, 1))


# ---------------------------------------------------------------- sklearn digits
def test_categorical_made_beats_per_pixel_baseline_on_digits():
    from sklearn.datasets import load_digits

    t0 = time.time()
    with enable_x64(False):
        X = load_digits().data.astype(np.int32)  # (1797, 64), levels 0..16
        perm = np.random.default_rng(0).permutation(len(X))
        train, test = X[perm[:1400]], X[perm[1400:]]
        # independent per-pixel categorical with Laplace (add-one) smoothing
        counts = np.stack([np.bincount(train[:, j], minlength=17) for j in range(64)]) + 1.0
        probs = counts / counts.sum(1, keepdims=True)
        baseline_bpd = -np.log(probs[np.arange(64), test]).sum(1).mean() / (64 * np.log(2))

        m = autoregressive_model(jax.random.PRNGKey(0), 64, conditional="categorical", num_levels=17,
                                 hidden_dims=(64,))
        opt = optax.adam(1e-2)
        tr = jnp.asarray(train)

        @jax.jit
        def fit(m, key):
            def body(carry, k):
                m, st = carry
                batch = tr[jax.random.randint(k, (128,), 0, tr.shape[0])]
                loss, g = jax.value_and_grad(lambda mm: -mm.log_prob(batch).mean())(m)
                u, st = opt.update(g, st, m)
                return (optax.apply_updates(m, u), st), loss

            (m, _), losses = jax.lax.scan(body, (m, opt.init(m)), jax.random.split(key, 300))
            return m, losses

        m, losses = fit(m, jax.random.PRNGKey(1))
        test_bpd = float(m.bits_per_dim(test).mean())
        test_nats = float(-m.log_prob(test).mean())
    assert np.isfinite(test_bpd)
    np.testing.assert_allclose(test_bpd, test_nats / (64 * math.log(2)), rtol=1e-5)
    assert test_bpd < baseline_bpd - 0.1, (test_bpd, baseline_bpd)
    assert time.time() - t0 < 120


@pytest.mark.parametrize("family", FAMILIES)
def test_sampling_stops_at_the_fixed_point_with_the_draws_and_gradients_of_d_passes(family):
    """Above ``FIXED_SWEEPS_UP_TO`` coordinates the ancestral passes stop once one moves no value by
    more than rounding: the same draws (to rounding) as ``d`` passes (the plain loop, forced by raising the threshold),
    and for continuous families the same reparametrisation gradients."""
    from nf_ppl import fixed_point

    dim = 8
    m = make(family, dim, hidden=(16,), scale=0.7, seed=21)
    key = jax.random.PRNGKey(5)
    draw = lambda made: m._replace(made=made)._sample_core(key, (50,))
    # a new function object for each trace: jit caches traces by function, and the threshold is read when tracing
    run = lambda: jax.jit(lambda made: draw(made))(m.made)
    grad = lambda: jax.jit(jax.grad(lambda made: jnp.sum(jnp.sin(draw(made)))))(m.made)
    got, got_grad = run(), grad() if family != "categorical" else None
    saved = fixed_point.FIXED_SWEEPS_UP_TO
    fixed_point.FIXED_SWEEPS_UP_TO = 10 ** 9  # every call runs d passes
    try:
        want, want_grad = run(), grad() if family != "categorical" else None
    finally:
        fixed_point.FIXED_SWEEPS_UP_TO = saved
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    if got_grad is not None:
        for a, b in zip(jax.tree.leaves(got_grad), jax.tree.leaves(want_grad)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)

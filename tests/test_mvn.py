"""Conditional multivariate normal baseline (nf_ppl.models.mvn) against scipy / numpyro with explicit covariances."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from scipy import stats

from nf_ppl.models.mvn import ConditionalMVN, conditional_mvn


pytestmark = pytest.mark.usefixtures("x64")  # float64 for the whole module (tests/conftest.py)


def softplus(v):
    return np.log1p(np.exp(-np.abs(v))) + np.maximum(v, 0)


def explicit_cov(loc, raw, dim, floor=1e-6):
    """Sigma = C C^T with C built entry by entry from the documented layout."""
    c = np.zeros((dim, dim))
    for i in range(dim):
        c[i, i] = softplus(raw[i]) + floor
    k = dim
    for i in range(dim):
        for j in range(i):
            c[i, j] = raw[k]
            k += 1
    return np.asarray(loc), c @ c.T


def randomize(model, seed, scale=0.5):
    leaves, tree = jax.tree.flatten(model)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(tree, [jnp.asarray(scale * rng.normal(size=l.shape), l.dtype) for l in leaves])


def test_unconditional_log_prob_matches_scipy_and_numpyro():
    d = 4
    m = randomize(conditional_mvn(jax.random.PRNGKey(0), d), 1, scale=0.8)
    loc, cov = explicit_cov(m.loc_param, np.asarray(m.raw_tril), d)
    y = np.random.default_rng(2).normal(size=(10, d))
    lp = np.asarray(m.log_prob(y))
    np.testing.assert_allclose(lp, stats.multivariate_normal(loc, cov).logpdf(y), rtol=1e-9)
    ref = dist.MultivariateNormal(jnp.asarray(loc), covariance_matrix=jnp.asarray(cov)).log_prob(y)
    np.testing.assert_allclose(lp, np.asarray(ref), rtol=1e-9)
    np.testing.assert_allclose(np.asarray(m.covariance_matrix), cov, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(m.mean), loc, rtol=1e-12)
    assert m.batch_shape == () and m.event_shape == (d,)


def test_conditional_log_prob_matches_scipy_per_context():
    d, c = 3, 2
    m = randomize(conditional_mvn(jax.random.PRNGKey(0), d, c, hidden_dims=(8,)), 3, scale=0.7)
    x = np.random.default_rng(4).normal(size=(6, c))
    y = np.random.default_rng(5).normal(size=(6, d))
    lp = np.asarray(m.log_prob(y, context=x))
    assert lp.shape == (6,)
    for b in range(6):
        out = np.asarray(m.net(jnp.asarray(x[b])))
        loc, cov = explicit_cov(out[:d], out[d:], d)
        ref = stats.multivariate_normal(loc, cov).logpdf(y[b])
        assert abs(lp[b] - ref) < 1e-9 * max(1.0, abs(ref))
    np.testing.assert_allclose(np.asarray(m.condition(x).log_prob(y)), lp, rtol=1e-12)
    cond = m.condition(x)
    assert cond.batch_shape == (6,) and cond.covariance_matrix.shape == (6, d, d)
    # the context changes the density
    assert np.max(np.abs(lp - np.asarray(m.log_prob(y, context=x + 1)))) > 1e-3


def test_init_is_standard_normal():
    m = conditional_mvn(jax.random.PRNGKey(0), 3)
    np.testing.assert_allclose(np.asarray(m.covariance_matrix), np.eye(3), atol=1e-5)
    mc = conditional_mvn(jax.random.PRNGKey(0), 3, 2, hidden_dims=(8,)).condition(jnp.zeros(2))
    np.testing.assert_allclose(np.asarray(mc.covariance_matrix), np.eye(3), atol=0.05)


def test_samples_match_mean_and_covariance():
    d = 3
    m = randomize(conditional_mvn(jax.random.PRNGKey(0), d, 1, hidden_dims=(8,)), 6, scale=0.6)
    x = np.array([[-1.0], [1.0]])
    n = 40000
    s = np.asarray(m.sample(jax.random.PRNGKey(1), (n,), context=x))
    assert s.shape == (n, 2, d)
    cond = m.condition(x)
    for b in range(2):
        mu, cov = np.asarray(cond.mean[b]), np.asarray(cond.covariance_matrix[b])
        assert np.all(np.abs(s[:, b].mean(0) - mu) < 5 * np.sqrt(np.diag(cov) / n))
        np.testing.assert_allclose(np.cov(s[:, b], rowvar=False), cov, atol=0.05 * np.abs(cov).max())
        # Mahalanobis distances are chi-square(d)
        z = np.linalg.solve(np.linalg.cholesky(cov), (s[:5000, b] - mu).T)
        assert stats.kstest((z ** 2).sum(0), stats.chi2(d).cdf).pvalue > 1e-3


def test_fit_is_the_maximum_likelihood_estimate():
    rng = np.random.default_rng(7)
    a = np.array([[1.0, 0, 0], [0.7, 0.5, 0], [-0.3, 0.2, 0.4]])
    y = rng.normal(size=(500, 3)) @ a.T + np.array([1.0, -2.0, 0.5])
    m = ConditionalMVN.fit(y)
    np.testing.assert_allclose(np.asarray(m.mean), y.mean(0), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(m.covariance_matrix), np.cov(y, rowvar=False, bias=True), rtol=1e-6)
    ll = float(m.log_prob(y).mean())
    np.testing.assert_allclose(ll, stats.multivariate_normal(y.mean(0), np.cov(y.T, bias=True)).logpdf(y).mean(),
                               rtol=1e-9)
    # gradient vanishes at the MLE
    g = jax.grad(lambda mm: mm.log_prob(y).mean())(m)
    assert all(np.max(np.abs(leaf)) < 1e-6 for leaf in jax.tree.leaves(g))


def test_training_conditional_mvn_recovers_heteroscedastic_truth():
    rng = np.random.default_rng(8)
    x = rng.uniform(-1, 1, size=(2000, 1))
    sd = np.exp(0.8 * x[:, 0])
    y = np.stack([2 * x[:, 0] + sd * rng.normal(size=2000), -x[:, 0] + 0.3 * rng.normal(size=2000)], -1)
    true_ll = (stats.norm(2 * x[:, 0], sd).logpdf(y[:, 0]) + stats.norm(-x[:, 0], 0.3).logpdf(y[:, 1])).mean()
    m = conditional_mvn(jax.random.PRNGKey(0), 2, 1, hidden_dims=(16,))
    opt = optax.adam(1e-2)
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    @jax.jit
    def fit(m):
        def body(carry, _):
            m, st = carry
            g = jax.grad(lambda mm: -mm.log_prob(yj, context=xj).mean())(m)
            u, st = opt.update(g, st, m)
            return (optax.apply_updates(m, u), st), None

        return jax.lax.scan(body, (m, opt.init(m)), None, length=400)[0][0]

    m = fit(m)
    ll = float(m.log_prob(y, context=x).mean())
    assert ll > true_ll - 0.05, (ll, true_ll)


def test_grad_and_jit():
    m = conditional_mvn(jax.random.PRNGKey(0), 3, 2, hidden_dims=(8,))
    y = np.random.default_rng(0).normal(size=(16, 3))
    x = np.random.default_rng(1).normal(size=(16, 2))
    g = jax.grad(lambda mm: -mm.log_prob(y, context=x).mean())(m)
    assert isinstance(g, ConditionalMVN)
    assert all(np.any(leaf != 0) and np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(g.net))
    u = conditional_mvn(jax.random.PRNGKey(0), 3)
    g = jax.grad(lambda mm: -mm.log_prob(y).mean())(u)
    assert all(np.any(leaf != 0) for leaf in jax.tree.leaves(g))
    j = jax.jit(lambda mm, v: mm.log_prob(v))(u, y)
    np.testing.assert_allclose(np.asarray(j), np.asarray(u.log_prob(y)), rtol=1e-12)
    for dtype in (jnp.float32, jnp.float64):
        md = conditional_mvn(jax.random.PRNGKey(0), 3, dtype=dtype)
        assert md.log_prob(jnp.asarray(y, dtype)).dtype == dtype
        assert md.sample(jax.random.PRNGKey(0), (2,)).dtype == dtype


def test_extreme_values_finite():
    m = conditional_mvn(jax.random.PRNGKey(0), 2)
    y = jnp.array([[1e3, -1e3]])
    assert np.isfinite(float(m.log_prob(y)[0]))
    g = jax.grad(lambda mm: mm.log_prob(y).sum())(m)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(g))
    # a very negative raw diagonal stays a valid (floored) Cholesky factor
    low = m.tree_unflatten(m.tree_flatten()[1], (None, m.loc_param, m.raw_tril.at[:2].set(-1e3), None))
    assert np.all(np.asarray(jnp.diagonal(low.scale_tril)) >= 1e-6)
    assert np.isfinite(float(low.log_prob(jnp.zeros(2))))


def test_bad_input():
    m = conditional_mvn(jax.random.PRNGKey(0), 3, 2, hidden_dims=(8,))
    with pytest.raises(ValueError, match="needs a context"):
        m.log_prob(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="needs a context"):
        m.sample(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., 2\)"):
        m.condition(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="context contains NaN or inf"):
        m.condition(np.array([np.inf, 0.0]))
    with pytest.raises(ValueError, match="value contains NaN or inf"):
        m.log_prob(np.array([[0.0, np.nan, 1.0]]), context=np.zeros(2))
    with pytest.raises(ValueError, match=r"value must have shape \(\.\.\., 3\)"):
        m.log_prob(np.zeros((1, 4)), context=np.zeros(2))
    u = conditional_mvn(jax.random.PRNGKey(0), 3)
    with pytest.raises(ValueError, match="not conditional"):
        u.condition(np.zeros(2))
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        conditional_mvn(jax.random.PRNGKey(0), 0)
    with pytest.raises(ValueError, match="context_dim must be a non-negative integer"):
        conditional_mvn(jax.random.PRNGKey(0), 2, -1)
    with pytest.raises(ValueError, match="diagonal > diag_floor"):
        ConditionalMVN.from_loc_scale_tril(np.zeros(2), np.array([[1.0, 0], [0.3, -1.0]]))
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        ConditionalMVN.fit(np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]))


def test_from_loc_scale_tril_round_trip():
    c = np.array([[1.5, 0, 0], [0.2, 0.7, 0], [-1.0, 0.4, 0.3]])
    m = ConditionalMVN.from_loc_scale_tril(np.array([1.0, 2.0, 3.0]), c)
    np.testing.assert_allclose(np.asarray(m.scale_tril), c, rtol=1e-10, atol=1e-12)
    y = np.random.default_rng(0).normal(size=(4, 3))
    np.testing.assert_allclose(np.asarray(m.log_prob(y)),
                               stats.multivariate_normal([1.0, 2.0, 3.0], c @ c.T).logpdf(y), rtol=1e-9)
    assert math.isclose(float(m.variance[2]), (c @ c.T)[2, 2], rel_tol=1e-10)

"""The Pathfinder-style Gaussian start of flow guides (inference.warm_start) and AutoFlow's use of it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer import SVI, Trace_ELBO

import inference
from inference.warm_start import gaussian_path_start

# an unstandardised regression: intercept and slope of a predictor on the scale of 100 (kidiq-like),
# known noise sd, flat priors, so the posterior is Gaussian with closed-form mean and covariance
RNG = np.random.default_rng(0)
XP = RNG.normal(100.0, 15.0, size=60)
X = np.stack([np.ones_like(XP), XP], -1)
Y = X @ np.array([26.0, 0.6]) + RNG.normal(0, 2.0, size=60)
POST_COV = np.linalg.inv(X.T @ X / 4.0)
POST_MEAN = POST_COV @ (X.T @ Y / 4.0)


def regression(y=Y):
    beta = numpyro.sample("beta", dist.ImproperUniform(dist.constraints.real_vector, (), (2,)))
    numpyro.sample("y", dist.Normal(jnp.asarray(X) @ beta, 2.0), obs=y)


@pytest.mark.usefixtures("x64")
def test_path_start_finds_the_exact_gaussian_of_a_badly_scaled_gaussian_posterior():
    def log_density(z):
        r = jnp.asarray(Y) - jnp.asarray(X) @ z
        return -0.5 * jnp.sum(r ** 2) / 4.0

    start = jax.jit(lambda z0: gaussian_path_start(log_density, z0, jax.random.PRNGKey(0)))(jnp.zeros(2))
    assert int(start.iteration) > 0  # a point of the path, not the plain start
    np.testing.assert_allclose(start.loc, POST_MEAN, rtol=1e-6)
    np.testing.assert_allclose(start.scale_tril @ start.scale_tril.T, POST_COV, rtol=1e-6)


def test_path_start_stops_short_of_a_degenerate_mode():
    """Neal's funnel: the mode is at v -> very negative; the best Gaussian is part of the way there."""
    def log_density(z):
        v, x = z[0], z[1:]
        return (dist.Normal(0.0, 3.0).log_prob(v) + jnp.sum(dist.Normal(0.0, jnp.exp(v / 2)).log_prob(x)))

    z0 = jnp.asarray([1.0, 0.5, -0.5, 0.3, 0.2])
    start = jax.jit(lambda z: gaussian_path_start(log_density, z, jax.random.PRNGKey(0), max_iters=60))(z0)
    # the mode is at x = 0, v* = -9 (d - 1) / 2 = -18 for d = 5 (L-BFGS gets there); the chosen Gaussian
    # stays less than half-way, within two prior sds of v's N(0, 3)
    assert -9.0 < float(start.loc[0]) < 3.0 and int(start.iteration) >= 0
    assert np.isfinite(float(start.elbo))


def test_autoflow_starts_at_the_posterior_of_a_badly_scaled_regression():
    """Before any SVI step the warm-started guide's draws match the exact posterior; the plain start is far off."""
    draws = {}
    for warm in ("pathfinder", None):
        guide = inference.AutoFlow(regression, "iaf", num_layers=1, hidden_dims=(4,), warm_start=warm)
        svi = SVI(regression, guide, optax.adam(1e-2), Trace_ELBO())
        params = svi.get_params(svi.init(jax.random.PRNGKey(0)))  # the initial parameters
        draws[warm] = np.asarray(guide.sample_posterior(jax.random.PRNGKey(1), params, sample_shape=(4000,))["beta"])
    post_sd = np.sqrt(np.diag(POST_COV))
    warm = draws["pathfinder"]
    assert np.all(np.abs(warm.mean(0) - POST_MEAN) < 0.1 * post_sd)
    np.testing.assert_allclose(warm.std(0), post_sd, rtol=0.1)
    assert np.corrcoef(warm.T)[0, 1] == pytest.approx(POST_COV[0, 1] / post_sd.prod(), abs=0.02)
    assert np.abs(draws[None].mean(0) - POST_MEAN)[0] > 10 * post_sd[0]  # without it: far from the posterior


def test_warm_start_argument_is_checked():
    with pytest.raises(ValueError, match="warm_start must be 'pathfinder' or None"):
        inference.AutoFlow(regression, "iaf", warm_start="laplace")

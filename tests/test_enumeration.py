"""AutoFlow on models with enumerated discrete sites (TraceEnum_ELBO), against NUTS with enumeration.

References: NUTS on the same models (NumPyro sums the discrete sites out of its potential), for a
Gaussian mixture with unknown means, scales and weights and for a two-state hidden Markov model
with unknown emission means (that one in bench/bench_inference.py, for time); the discrete posterior from ``Predictive(..., infer_discrete=True)``
against the exact responsibilities given the continuous draws.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, NUTS, Predictive

import inference

funsor = pytest.importorskip("funsor")  # NumPyro's enumeration needs funsor (the test extra installs it)
from inference.autoguide import ENUMERATION_MIN_NUMPYRO, _numpyro_version  # noqa: E402

if _numpyro_version() < ENUMERATION_MIN_NUMPYRO:  # AutoFlow refuses these models there, with the reason
    pytest.skip(f"NumPyro {numpyro.__version__} < {ENUMERATION_MIN_NUMPYRO}", allow_module_level=True)
from numpyro.contrib.funsor import config_enumerate, markov  # noqa: E402
from numpyro.infer import TraceEnum_ELBO  # noqa: E402

RNG = np.random.default_rng(0)
MIX_DATA = jnp.asarray(np.concatenate([RNG.normal(-2.0, 0.6, 30), RNG.normal(2.5, 1.0, 20)]))


@config_enumerate
def mixture(data):
    weights = numpyro.sample("w", dist.Dirichlet(jnp.ones(2)))
    with numpyro.plate("components", 2):
        # informative prior means keep the labels apart (no label-switched mode), so NUTS and the guide agree on which is which
        mu = numpyro.sample("mu", dist.Normal(jnp.array([-2.0, 2.0]), 0.5))
        sigma = numpyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with numpyro.plate("data", len(data)):
        c = numpyro.sample("c", dist.Categorical(weights))
        numpyro.sample("obs", dist.Normal(mu[c], sigma[c]), obs=data)


HMM_STATES = np.array([0] * 8 + [1] * 8 + [0] * 6)
HMM_DATA = jnp.asarray(np.where(HMM_STATES == 0, -1.0, 1.5) + RNG.normal(0.0, 0.5, len(HMM_STATES)))
TRANSITION = jnp.array([[0.9, 0.1], [0.1, 0.9]])


@config_enumerate
def hmm(data):
    means = numpyro.sample("means", dist.Normal(jnp.array([-1.0, 1.0]), 1.0).to_event(1))
    scale = numpyro.sample("scale", dist.LogNormal(-0.5, 0.5))
    state = 0
    for t in markov(range(len(data))):
        state = numpyro.sample(f"s_{t}", dist.Categorical(TRANSITION[state]))
        numpyro.sample(f"y_{t}", dist.Normal(means[state], scale), obs=data[t])


def _nuts(model, data):
    mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=1000, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), data)
    return {k: np.asarray(v) for k, v in mcmc.get_samples().items()}


def _guide_draws(model, data, steps):
    guide = inference.AutoFlow(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        params, _, _ = inference.run_svi(model, guide, data, num_steps=steps, seed=0, loss=TraceEnum_ELBO())
    draws = guide.sample_posterior(jax.random.PRNGKey(1), params, data, sample_shape=(4000,))
    return guide, params, {k: np.asarray(v) for k, v in draws.items()}


def test_autoflow_with_enumerated_sites_matches_nuts_and_gives_the_discrete_posterior():
    # the hidden Markov model (hmm above) is checked the same way in bench/bench_inference.py --sections discrete
    # (its 22 enumerated steps cost a minute of compilation, too much for the suite)
    guide, params, draws = _guide_draws(mixture, MIX_DATA, 800)
    assert guide.enumerated_sites == ("c",) and "c" not in draws
    reference = _nuts(mixture, MIX_DATA)
    for name in ("w", "mu", "sigma"):
        sd = reference[name].std(0)
        np.testing.assert_array_less(np.abs(draws[name].mean(0) - reference[name].mean(0)) / sd, 0.2)
        np.testing.assert_array_less(np.abs(draws[name].std(0) / sd - 1), 0.25)

    predictive = Predictive(mixture, guide=guide, params=params, num_samples=300, infer_discrete=True,
                            return_sites=["c", "w", "mu", "sigma"])
    out = {k: np.asarray(v) for k, v in predictive(jax.random.PRNGKey(2), MIX_DATA).items()}
    # exact responsibilities given each draw's continuous values, averaged over draws
    x = np.asarray(MIX_DATA)[None, :, None]
    log_r = (np.log(out["w"])[:, None, :] - np.log(out["sigma"])[:, None, :]
             - 0.5 * ((x - out["mu"][:, None, :]) / out["sigma"][:, None, :]) ** 2)
    r = np.exp(log_r - log_r.max(-1, keepdims=True))
    r = (r / r.sum(-1, keepdims=True))[..., 1].mean(0)
    np.testing.assert_allclose(out["c"].mean(0), r, atol=0.12)  # 300 Bernoulli draws per point
    assert np.all(out["c"][:, :30].mean(0) < 0.2) and np.all(out["c"][:, 30:].mean(0) > 0.6)


def test_discrete_sites_not_marked_for_enumeration_are_refused():
    def unmarked(data):
        c = numpyro.sample("c", dist.Bernoulli(0.5))
        numpyro.sample("obs", dist.Normal(c, 1.0), obs=data)

    with pytest.raises(ValueError, match="config_enumerate"):
        inference.run_svi(unmarked, inference.AutoFlow(unmarked), 0.3, num_steps=2)


ONE_MEAN_DATA = jnp.array([2.1, 1.8, -0.2, 2.5, 0.1, 1.9, 2.2, -0.4])


@config_enumerate
def one_mean(data):
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
    with numpyro.plate("n", data.shape[0]):
        c = numpyro.sample("c", dist.Categorical(jnp.array([0.3, 0.7])))
        numpyro.sample("x", dist.Normal(jnp.where(c == 1, mu, 0.0), 1.0), obs=data)


def test_run_svi_keeps_and_diagnose_weighs_an_enumerated_guide_by_the_enumerated_model():
    """Exact references by quadrature over mu.  run_svi used to score its start and its trained guide with
    Trace_ELBO, which draws c from the prior: the start won (-22.2 against -22.5) and training was thrown
    away; diagnose's weights did the same (ELBO -21.8 where log p(x) = -13.97)."""
    from scipy.special import logsumexp as np_logsumexp
    from scipy.stats import norm

    grid = np.linspace(-15, 15, 60001)
    x = np.asarray(ONE_MEAN_DATA, np.float64)[:, None]
    log_joint = norm.logpdf(grid, 0, 3) + np.sum(np.logaddexp(np.log(0.3) + norm.logpdf(x, 0, 1),
                                                              np.log(0.7) + norm.logpdf(x, grid, 1)), 0)
    log_evidence = np_logsumexp(log_joint) + np.log(grid[1] - grid[0])
    post = np.exp(log_joint - log_joint.max())
    post /= post.sum()
    mean = np.sum(post * grid)
    sd = np.sqrt(np.sum(post * grid ** 2) - mean ** 2)

    guide = inference.AutoFlow(one_mean, hidden_dims=(8, 8), num_layers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "training ended below its start" would fail here
        params, _, _ = inference.run_svi(one_mean, guide, ONE_MEAN_DATA, num_steps=500, loss=TraceEnum_ELBO())
    mu = np.asarray(guide.sample_posterior(jax.random.PRNGKey(0), params, ONE_MEAN_DATA, sample_shape=(4000,))["mu"])
    assert abs(mu.mean() - mean) < 0.1 * sd and abs(mu.std() / sd - 1) < 0.1
    report = inference.diagnose(one_mean, guide, params, ONE_MEAN_DATA)
    assert abs(report["iw_bound"] - log_evidence) < 0.02 and log_evidence - 0.1 < report["elbo"] <= log_evidence + 0.01
    assert report["reliable"] and "worse" not in report["reading"]

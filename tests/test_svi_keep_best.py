"""run_svi never returns a guide worse than its start without saying so; step sizes scale with the latent dimension.

Reference: a Gaussian linear regression, whose posterior is Gaussian and known in closed form.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import optax
import pytest

import inference
from inference.svi import learning_rate_factor


def _regression(dim, n=200, seed=0):
    """The bench's model (bench/bench_svi_dimension.py): ``(model, x, y, exact mean, exact sds)``."""
    from bench.bench_svi_dimension import regression
    return regression(dim, n, seed)


def _start_params(model, guide, x, y, seed=0):
    """The parameters run_svi starts from (same seed): AutoFlow's warm start."""
    from numpyro.infer import SVI, Trace_ELBO
    svi = SVI(model, guide, optax.adam(0.0), Trace_ELBO())
    return svi.get_params(svi.init(jax.random.PRNGKey(seed), x, y))


def _mean_error(guide, params, x, y, mean, sd):
    draws = guide.sample_posterior(jax.random.PRNGKey(1), params, x, y, sample_shape=(2000,))["b"]
    return float(np.max(np.abs(np.asarray(draws.mean(0)) - mean) / sd))


def test_learning_rate_factor_and_the_optimiser_that_uses_it():
    assert [learning_rate_factor(d) for d in (None, 1, 30)] == [1.0, 1.0, 1.0]
    assert learning_rate_factor(100) == pytest.approx(0.3) and learning_rate_factor(3000) == pytest.approx(0.01)

    class Guide:  # what the optimiser reads at init: SVI sets the guide up before it initialises the optimiser
        latent_dim = 300

    params = {"w": np.ones(3, np.float32)}
    grads = {"w": np.asarray([1.0, -2.0, 0.5], np.float32)}
    plain, scaled = inference.suggest_optimizer(100), inference.suggest_optimizer(100, guide=Guide())
    u_plain, _ = plain.update(grads, plain.init(params), params)
    u_scaled, _ = scaled.update(grads, scaled.init(params), params)
    np.testing.assert_allclose(np.asarray(u_scaled["w"]), 0.1 * np.asarray(u_plain["w"]), rtol=1e-5)
    by_dim = inference.suggest_optimizer(100, latent_dim=300)
    np.testing.assert_allclose(np.asarray(by_dim.update(grads, by_dim.init(params), params)[0]["w"]),
                               np.asarray(u_scaled["w"]), rtol=1e-6)


def test_a_guide_can_name_the_parameters_its_factor_applies_to():
    class Guide:
        def learning_rate_factor(self):
            return {"flow": 0.1}

    params = {"loc": np.zeros(2, np.float32), "flow": [np.zeros(3, np.float32), np.zeros((), np.float32)]}
    grads = {"loc": np.asarray([1.0, -1.0], np.float32), "flow": [np.asarray([1.0, 2.0, -3.0], np.float32),
                                                                  np.asarray(0.5, np.float32)]}
    plain, scaled = inference.suggest_optimizer(100), inference.suggest_optimizer(100, guide=Guide())
    u_plain, _ = plain.update(grads, plain.init(params), params)
    u_scaled, _ = scaled.update(grads, scaled.init(params), params)
    np.testing.assert_allclose(np.asarray(u_scaled["loc"]), np.asarray(u_plain["loc"]), rtol=1e-6)
    for a, b in zip(u_scaled["flow"], u_plain["flow"]):
        np.testing.assert_allclose(np.asarray(a), 0.1 * np.asarray(b), rtol=1e-5)

    class Wrong:
        def learning_rate_factor(self):
            return {"flows": 0.1}

    with pytest.raises(ValueError, match=r"names parameters the guide does not have: \['flows'\]"):
        inference.suggest_optimizer(100, guide=Wrong()).init(params)


def test_run_svi_returns_the_warm_start_when_training_makes_it_worse():
    """A step size far too large for 40 dimensions wrecks the (near exact) warm start: run_svi says so
    with both ELBO figures and returns the start, which is as accurate as the exact posterior allows."""
    model, x, y, mean, sd = _regression(40)
    guide = inference.AutoFlow(model)
    with pytest.warns(RuntimeWarning, match=r"training ended below its start \(ELBO estimate -?\d+\.\d\d after "
                                            r"training vs -?\d+\.\d\d at the start"):
        params, elbo, _ = inference.run_svi(model, guide, x, y, num_steps=200,
                                            optimizer=optax.adam(5e-2))
    start = _start_params(model, inference.AutoFlow(model), x, y)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, params, start))  # the start itself
    assert _mean_error(guide, params, x, y, mean, sd) < 0.25  # Monte-Carlo floor of the max over 40 coords ~0.06
    assert guide.warm_start_info is not None and np.isfinite(elbo).all()
    # NumPyro's own SVI.run keeps the wrecked parameters; diagnose says what happened
    from numpyro.infer import SVI, Trace_ELBO
    wrecked = SVI(model, guide, optax.adam(5e-2), Trace_ELBO()).run(jax.random.PRNGKey(0), 200, x, y,
                                                                    progress_bar=False).params
    report = inference.diagnose(model, guide, wrecked, x, y, num_samples=500)
    assert "below its warm start's" in report["reading"] and "training made it worse" in report["reading"]
    assert report["elbo"] < float(guide.warm_start_info["elbo"]) - 1.0


def test_run_svi_defaults_keep_a_100_dimensional_guide_at_least_as_accurate_as_its_warm_start():
    model, x, y, mean, sd = _regression(100)
    guide = inference.AutoFlow(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # returning the start is allowed (and says so)
        params, _, _ = inference.run_svi(model, guide, x, y, num_steps=300)
    # the same guide, set up already, starts SVI from the same warm start (loc, scale, L; its flow's
    # near-identity random start comes from SVI's key): no second L-BFGS run
    start_error = _mean_error(guide, _start_params(model, guide, x, y), x, y, mean, sd)
    assert _mean_error(guide, params, x, y, mean, sd) <= start_error + 0.03


def test_the_closing_check_compiled_in_the_background_scores_like_the_elbo_it_estimates():
    """``run_svi``'s closing check: the ELBO estimate of each candidate with the same keys, whether the
    parameters match the start's (the program compiled on the background thread) or not (traced anew)."""
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    from inference.svi import _ElboScore

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = jax.numpy.asarray([0.3, 1.1, 0.7])
    guide = AutoNormal(model)
    svi = SVI(model, guide, optax.adam(0.0), Trace_ELBO())
    start = svi.get_params(svi.init(jax.random.PRNGKey(0), y))
    score = _ElboScore(model, guide, (y,), {}, 3, 64, start)
    elbo = Trace_ELBO()
    for params in (start, {k: v + 0.25 for k, v in start.items()}):  # the start, and another point of its shapes
        draws = np.asarray([-elbo.loss(k, params, model, guide, y) for k in score.keys])
        mean, se = score(params)
        np.testing.assert_allclose(mean, draws.mean(), rtol=1e-5)
        np.testing.assert_allclose(se, draws.std() / np.sqrt(draws.size), rtol=1e-4)
    other = {**start, "extra": np.zeros(2, np.float32)}  # another structure: traced anew, same numbers for the shared sites
    assert score(other)[0] == pytest.approx(score(start)[0], rel=1e-6)


def test_a_wrecked_final_loses_to_the_start_on_the_shared_keys_even_when_its_standard_error_is_huge():
    """The closing check's rules on given draws: a final guide whose draws are astronomically heavy-tailed has
    a standard error wider than its gap to the start (jax 0.12.1 no longer overflowed it to inf), but the
    start is higher on 7 of 8 shared keys; a start higher on 5 of 8 by less than two standard errors is not."""
    from inference.svi import PAIRED_WIN, _better_of, _ElboScore

    class Draws:
        num_draws = 8
        summary = _ElboScore.summary

        def __init__(self, table):
            self.table = table

        def draws(self, name):
            return np.asarray(self.table[name], np.float64)

    wrecked = Draws({"start": [-378.0] * 8, "final": [-1e17] * 7 + [6e17]})
    mean, se = wrecked.summary(wrecked.draws("final"))
    assert -378.0 < mean + 2 * np.hypot(se, 0.0) and PAIRED_WIN <= 7 / 8  # the standard errors alone keep it
    with pytest.warns(RuntimeWarning, match=r"training ended below its start"):
        assert _better_of(wrecked, "start", "final", None) == "start"
    close = Draws({"start": [1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0],
                   "final": [0.9, 0.9, 0.9, 0.9, 0.9, -0.5, -0.5, -0.5]})
    assert _better_of(close, "start", "final", None) == "final"

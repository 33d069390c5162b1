"""Pareto smoothed importance sampling (inference.psis) against ArviZ and against known tails."""

from __future__ import annotations

import math

import numpy as np
import pytest

import inference
from inference.psis import gpd_fit, psis_khat


def _arviz_psis(log_w):
    """ArviZ's own PSIS, in whichever major version is installed (an independent implementation).

    Returns ``(smoothed, khat, same_tail)``: ArviZ 1.x takes ``floor`` of the tail length as we
    do; ArviZ 0.x (like R's loo) takes ``ceil(min(0.2 S, 3 sqrt(S)))``, one draw more in most
    cases, which moves k-hat by a few hundredths.
    """
    import arviz as az

    if int(az.__version__.split(".")[0]) >= 1:
        from arviz_stats.base import array_stats

        smoothed, khat = array_stats.psislw(-np.asarray(log_w))  # arviz-stats takes log ratios negated
        return np.asarray(smoothed), float(np.asarray(khat)), True
    smoothed, khat = az.psislw(np.asarray(log_w))
    return np.asarray(smoothed), float(np.asarray(khat)), False


@pytest.mark.parametrize("num_samples", [60, 1000, 4000])
@pytest.mark.parametrize("tail_index", [0.2, 0.6, 0.9])
def test_psis_matches_arviz(num_samples, tail_index):
    rng = np.random.default_rng(int(10 * tail_index) + num_samples)
    log_w = tail_index * np.log(rng.pareto(1.0, num_samples) + 1) + rng.normal(0, 0.1, num_samples)
    smoothed, khat = inference.psis(log_w)
    ref_smoothed, ref_khat, same_tail = _arviz_psis(log_w)
    if not same_tail:
        assert khat == pytest.approx(ref_khat, abs=0.05)
        return
    assert khat == pytest.approx(ref_khat, abs=1e-9)
    np.testing.assert_allclose(smoothed, ref_smoothed - np.log(np.sum(np.exp(ref_smoothed))), atol=1e-9)


@pytest.mark.parametrize("k_true", [0.3, 0.6, 0.9])
def test_khat_recovers_the_tail_index_of_pareto_weights(k_true):
    """Weights with a generalized-Pareto upper tail of shape k: P(w > t) ~ t^(-1/k)."""
    rng = np.random.default_rng(1)
    estimates = [inference.psis_khat(np.log(rng.pareto(1 / k_true, 10000) + 1)) for _ in range(5)]
    assert np.mean(estimates) == pytest.approx(k_true, abs=0.08)


def test_gpd_fit_recovers_shape_and_scale():
    rng = np.random.default_rng(2)
    k, sigma = 0.4, 2.0
    u = rng.uniform(size=5000)
    x = np.sort(sigma * (u ** -k - 1) / k)  # generalized Pareto quantile function
    k_hat, sigma_hat = gpd_fit(x)
    assert k_hat == pytest.approx(k, abs=0.06) and sigma_hat == pytest.approx(sigma, rel=0.08)


def test_sample_size_aware_threshold():
    assert inference.khat_threshold(100) == pytest.approx(0.5)
    assert inference.khat_threshold(1000) == pytest.approx(2 / 3)
    assert inference.khat_threshold(10 ** 6) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="num_samples must be at least 2"):
        inference.khat_threshold(1)


def test_psis_refuses_nonfinite_weights():
    with pytest.raises(ValueError, match="log_w must be a non-empty array of finite log weights"):
        inference.psis(np.array([0.0, np.nan, 1.0]))


def test_psis_expectation_removes_the_bias_of_guide_draws():
    """q = N(0, 1), p = N(0.5, 1.2^2): the plain average of q draws says 0; PSIS recovers 0.5 and E[z^2]."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=20000)
    log_p = -0.5 * ((z - 0.5) / 1.2) ** 2 - math.log(1.2)
    log_q = -0.5 * z ** 2
    est = inference.psis_expectation(np.stack([z, z ** 2], -1), log_p - log_q)
    assert est[0] == pytest.approx(0.5, abs=0.03)
    assert est[1] == pytest.approx(0.5 ** 2 + 1.2 ** 2, abs=0.1)
    with pytest.raises(ValueError, match="values must have the draws on axis 0"):
        inference.psis_expectation(z[:10], log_p - log_q)


def _normal_guide_params(loc, scale):
    import jax
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    def model():
        numpyro.sample("z", dist.Normal(0.0, 10.0))

    guide = AutoNormal(model, init_loc_fn=numpyro.infer.init_to_value(values={"z": loc}), init_scale=scale)
    svi = SVI(model, guide, numpyro.optim.Adam(1e-3), Trace_ELBO())
    return model, guide, svi.get_params(svi.init(jax.random.PRNGKey(0)))


def test_diagnose_reports_threshold_and_reads_in_words():
    """Posterior N(0, 10^2).  A guide N(0, 10^2) is exact; N(3, 1) misses most of the mass."""
    model, guide, params = _normal_guide_params(0.0, 10.0)
    good = inference.diagnose(model, guide, params, num_samples=400)
    assert good["khat_threshold"] == pytest.approx(inference.khat_threshold(400))
    assert good["reliable"] and good["reading"].startswith("good")
    assert good["iw_bound"] == pytest.approx(0.0, abs=1e-4) and good["elbo"] == pytest.approx(0.0, abs=1e-4)
    model, guide, params = _normal_guide_params(3.0, 1.0)
    bad = inference.diagnose(model, guide, params, num_samples=400)
    assert not bad["reliable"] and bad["khat"] > bad["khat_threshold"]
    assert bad["reading"].startswith("unreliable") and "threshold for 400 draws" in bad["reading"]
    assert "heavier-tailed base" in bad["reading"]
    assert ("nats above the ELBO" in bad["reading"]) == (bad["iw_bound"] - bad["elbo"] > 1.0)


def test_reading_warns_when_the_iw_bound_is_far_above_the_elbo():
    from inference.diagnostics import _reading

    words = _reading(0.3, 0.7, 2000, elbo=-10.0, iw=-6.5)
    assert words.startswith("good") and "3.5 nats above the ELBO" in words and "misses part of it" in words
    assert "nats above" not in _reading(0.3, 0.7, 2000, elbo=-10.0, iw=-9.8)
    assert _reading(math.inf, 0.7, 5, elbo=-10.0, iw=-9.8, num_draws=2000).startswith("unreliable: too few finite")
    assert _reading(math.inf, 0.7, 20, elbo=-10.0, iw=-9.8) == (
        "unknown: 20 importance weights are too few for a k-hat (PSIS fits the largest fifth and needs at least "
        "25); pass num_samples=2000 (the default)")
    assert _reading(0.4954, 0.7, 2000, elbo=-10.0, iw=-9.8).startswith("good (k-hat 0.495 < 0.5;")


def test_weights_rounded_to_a_few_values_get_arviz_khat_and_a_near_exact_guide_reads_good():
    """A near-exact guide's log weights span 1e-4; rounded in float32 to a few values, a quarter of the
    Pareto tail tied the cutoff, the fit gave NaN and diagnose said "too few finite importance weights ...
    check the model's log-density".  Values tied with the cutoff are not the tail (as in ArviZ): the
    k-hats below are ArviZ's psislw on the same weights (arviz 0.23)."""
    for mean, spread, arviz_khat in ((-50.0, 1e-5, -0.395374496), (-300.0, 1e-4, -0.347446332)):
        rng = np.random.default_rng(0)
        log_w = (np.float32(mean) + np.float32(spread) * rng.normal(size=2000).astype(np.float32)).astype(np.float64)
        assert len(np.unique(log_w)) < 30  # rounded to a few values
        assert psis_khat(log_w) == pytest.approx(arviz_khat, abs=1e-6)
    model, guide, params = _normal_guide_params(0.0, 10.0)  # the guide is the posterior: equal weights up to rounding
    report = inference.diagnose(model, guide, params, num_samples=2000)
    assert report["reliable"] and report["reading"].startswith("good (k-hat")


def test_draws_to_inference_data_feeds_arviz_summary_and_plots():
    """InferenceData (ArviZ 0.x) or DataTree (ArviZ 1.x): az.summary and az.plot_forest accept it."""
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    rng = np.random.default_rng(4)
    draws = {"a": rng.normal(1.0, 2.0, size=(2, 500)), "b": rng.normal(size=(2, 500, 3))}
    data = inference.draws_to_inference_data(draws)
    assert data.posterior["b"].shape == (2, 500, 3)
    summary = az.summary(data, kind="stats")
    assert summary.loc["a", "mean"] == pytest.approx(draws["a"].mean(), abs=0.01)
    assert summary.loc["b[2]", "sd"] == pytest.approx(draws["b"][..., 2].std(), abs=0.01)
    az.plot_forest(data, var_names=["a"])
    assert float(az.ess(draws["a"][:1])) == pytest.approx(500, rel=0.25)  # independent draws


def test_diagnose_refuses_a_subsampled_plate_and_a_latent_site_the_guide_misses_and_sets_up_a_fresh_guide():
    import jax
    import numpyro
    import numpyro.distributions as dist

    def regression(x, y=None, batch=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        with numpyro.plate("N", x.shape[0], subsample_size=batch) as idx:
            numpyro.sample("y", dist.Normal(w * x[idx], 1.0), obs=None if y is None else y[idx])

    x = jax.numpy.linspace(-1.0, 1.0, 40)
    y = 0.5 * x + jax.numpy.asarray(np.random.default_rng(0).normal(size=40))
    guide = inference.AutoFlow(regression, num_layers=1, hidden_dims=(4,))  # never trained: set up by diagnose
    params = {}
    with pytest.raises(ValueError, match=r"^diagnose weighs draws by the whole model, but plate 'N' subsamples 10 of "
                                         r"40: each weight would see another subsample\. Pass the model without "
                                         r"subsample_size \(all the data\) to diagnose$"):
        inference.diagnose(regression, guide, params, x, y, batch=10, num_samples=50)
    with pytest.raises(ValueError, match=r"^the model's latent site 'y' is not in the guide: diagnose needs the model "
                                         r"and the arguments the guide was trained with \(a data argument left out "
                                         r"makes an observed site latent\)$"):
        inference.diagnose(regression, guide, params, x, num_samples=50)
    svi = numpyro.infer.SVI(regression, guide, numpyro.optim.Adam(1e-3), numpyro.infer.Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.PRNGKey(0), x, y))
    fresh = inference.AutoFlow(regression, num_layers=1, hidden_dims=(4,))  # its first call is diagnose's
    report = inference.diagnose(regression, fresh, params, x, y, num_samples=200)
    assert np.isfinite(report["elbo"]) and report["num_nonfinite"] == 0

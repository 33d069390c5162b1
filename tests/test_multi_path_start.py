"""Multi-path warm start: modes found and weighed against closed forms; a mass-covering guide keeps them.

References: a two-component Gaussian mixture (its modes, masses, mean and variance are known in
closed form) and single-mode targets (a Gaussian, a banana) where no second mode may be reported.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import inference
from inference.warm_start import dispersed_points, gaussian_path_start, multi_path_start

MINOR = 0.3
MODES = np.array([[-2.5, 0.0], [2.5, 0.0]])
MODE_SD = 0.5


def mixture():
    return dist.MixtureSameFamily(dist.Categorical(jnp.array([1 - MINOR, MINOR])),
                                  dist.MultivariateNormal(jnp.asarray(MODES), jnp.eye(2)[None] * MODE_SD ** 2))


def bimodal_model():
    numpyro.sample("z", mixture())


def banana_log_density(x):
    return -0.5 * x[0] ** 2 - 0.5 * (x[1] - 0.5 * x[0] ** 2) ** 2 / 0.25


def _start(log_density, pooling="best", num_paths=6, dim=2):
    x0s = dispersed_points(jnp.zeros(dim) + 0.3, jax.random.PRNGKey(0), num_paths)
    return multi_path_start(log_density, x0s, jax.random.PRNGKey(1), pooling=pooling)


def test_both_modes_are_found_with_their_masses_and_the_pooled_start_has_the_mixture_moments():
    found = _start(mixture().log_prob)
    assert found.num_modes == 2
    order = np.argsort(found.mode_locs[:, 0])
    np.testing.assert_allclose(found.mode_locs[order], MODES, atol=0.05)
    np.testing.assert_allclose(found.mode_weights[order], [1 - MINOR, MINOR], atol=0.03)
    np.testing.assert_allclose(np.asarray(found.start.loc), MODES[0], atol=0.05)  # best: the heavier mode
    pooled = _start(mixture().log_prob, "resample").start
    mean = (1 - MINOR) * MODES[0] + MINOR * MODES[1]
    var_x = MODE_SD ** 2 + MINOR * (1 - MINOR) * (MODES[1, 0] - MODES[0, 0]) ** 2
    np.testing.assert_allclose(np.asarray(pooled.loc), mean, atol=0.15)
    cov = np.asarray(pooled.scale_tril @ pooled.scale_tril.T)
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), [np.sqrt(var_x), MODE_SD], rtol=0.1)


def test_a_single_mode_is_reported_as_one_and_the_start_is_no_worse_than_one_path():
    log_density, dim = banana_log_density, 2  # curved: paths from different points end in the one mode
    found = _start(log_density, dim=dim)
    assert found.num_modes == 1 and np.all(found.mode_of_path[found.mode_of_path >= 0] == 0)
    one = gaussian_path_start(log_density, jnp.zeros(dim) + 0.3, jax.random.PRNGKey(1))
    assert float(found.start.elbo) >= float(one.elbo) - 1e-4
    assert float(found.paths.elbo[0]) == pytest.approx(float(one.elbo), abs=1e-4)  # path 0 is the single path


def test_refusals():
    with pytest.raises(ValueError, match="pooling"):
        multi_path_start(banana_log_density, jnp.zeros((2, 2)), jax.random.PRNGKey(0), pooling="mean")
    with pytest.raises(ValueError, match="x0s"):
        multi_path_start(banana_log_density, jnp.zeros(2), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="num_paths"):
        inference.AutoFlow(bimodal_model, num_paths=0)
    from inference.autoguide import default_num_paths
    assert [default_num_paths(d) for d in (2, 32, 33, 100)] == [4, 4, 1, 1]  # extra paths where they are cheap
    with pytest.raises(ValueError, match="path_pooling"):
        inference.AutoFlow(bimodal_model, path_pooling="mean")


def _minor_mass(guide, params):
    draws = np.asarray(guide.sample_posterior(jax.random.PRNGKey(1), params, sample_shape=(20000,))["z"])
    return float(np.mean(draws[:, 0] > 0))


def test_the_elbo_guide_warns_and_drops_a_mode_where_the_mass_covering_guide_keeps_both():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        guide = inference.AutoFlow(bimodal_model)
        params, _, _ = inference.run_svi(bimodal_model, guide, num_steps=200, seed=0)
    assert any("2 separate modes" in str(w.message) for w in caught)
    assert guide.warm_start_info["num_modes"] == 2 and guide.num_paths == 4
    assert min(_minor_mass(guide, params), 1 - _minor_mass(guide, params)) < 0.02  # one mode only
    assert "2 separate modes" in inference.diagnose(bimodal_model, guide, params, num_samples=400)["reading"]

    covering = inference.AutoFlow(bimodal_model, "maf", stl=False, path_pooling="resample")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        params, _, _ = inference.run_svi(bimodal_model, covering, num_steps=1000, seed=0,
                                         loss=inference.MassCovering())
    assert not any("separate modes" in str(w.message) for w in caught)
    assert _minor_mass(covering, params) == pytest.approx(MINOR, abs=0.05)

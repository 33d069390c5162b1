"""IWAE (with doubly-reparametrised gradients) and the mass-covering objective, against closed forms.

References: a conjugate Gaussian model (exact evidence and posterior), a correlated Gaussian target
(the inclusive-KL optimum of a diagonal Gaussian is the marginal sds, the ELBO's is the conditional
ones), and gradient expectations of the plain reparametrised estimator.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

import inference
from inference import IWAE, MassCovering

X_OBS = 1.3  # z ~ N(0, 1), x ~ N(z, 1): p(x) = N(x; 0, 2), p(z | x) = N(x / 2, 1 / 2)


def conjugate_model():
    z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    numpyro.sample("x", dist.Normal(z, 1.0), obs=X_OBS)


def gaussian_guide(loc_init, scale_init):
    def guide():
        loc = numpyro.param("loc", jnp.asarray(loc_init))
        scale = numpyro.param("scale", jnp.asarray(scale_init), constraint=dist.constraints.positive)
        numpyro.sample("z", dist.Normal(loc, scale))
    return guide


def _params(loc, scale):
    return {"loc": jnp.asarray(loc), "scale": jnp.asarray(scale)}


def _loss_and_grad(objective, params, key):
    guide = gaussian_guide(0.0, 1.0)
    return jax.value_and_grad(lambda p: objective.loss(key, p, conjugate_model, guide))(params)


def test_the_bound_is_the_exact_evidence_at_the_exact_posterior_and_its_dreg_gradient_is_zero(x64):
    exact = _params(X_OBS / 2, np.sqrt(0.5))
    log_evidence = float(dist.Normal(0.0, np.sqrt(2.0)).log_prob(X_OBS))
    for objective in (IWAE(5), IWAE(5, estimator="reparam"), MassCovering(5)):
        loss, grad = _loss_and_grad(objective, exact, jax.random.PRNGKey(3))
        assert -float(loss) == pytest.approx(log_evidence, abs=1e-10)  # every weight is p(x)
    _, grad = _loss_and_grad(IWAE(5), exact, jax.random.PRNGKey(3))
    assert all(abs(float(g)) < 1e-10 for g in jax.tree_util.tree_leaves(grad))  # zero variance at the optimum


def test_iwae_bound_lies_between_the_elbo_and_the_evidence_and_tightens_with_k(x64):
    params = _params(0.2, 1.1)  # not the posterior
    log_evidence = float(dist.Normal(0.0, np.sqrt(2.0)).log_prob(X_OBS))
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)

    def mean_bound(k):
        objective = IWAE(k)
        guide = gaussian_guide(0.0, 1.0)
        values = jax.vmap(lambda key: -objective.loss(key, params, conjugate_model, guide))(keys)
        return float(values.mean()), float(values.std() / np.sqrt(len(keys)))

    elbo, se1 = mean_bound(1)
    exact_elbo = float(  # closed form of E_q[log p(x, z) - log q(z)] for Gaussians
        dist.Normal(0.0, 1.0).log_prob(0.2) - 0.5 * 1.1 ** 2 + dist.Normal(0.2, 1.0).log_prob(X_OBS) - 0.5 * 1.1 ** 2
        + 0.5 * np.log(2 * np.pi * np.e * 1.1 ** 2))
    assert elbo == pytest.approx(exact_elbo, abs=4 * se1)
    b4, se4 = mean_bound(4)
    b32, se32 = mean_bound(32)
    assert elbo < b4 - 3 * se4 and b4 < b32 and b32 < log_evidence
    assert log_evidence - b32 < 0.3 * (log_evidence - elbo)


def test_dreg_gradient_is_unbiased_and_less_noisy_than_the_reparametrised_one(x64):
    params = _params(0.2, 1.1)
    keys = jax.random.split(jax.random.PRNGKey(1), 3000)

    def grads(objective):
        g = jax.vmap(lambda key: _loss_and_grad(objective, params, key)[1])(keys)
        return np.stack([np.asarray(g["loc"]), np.asarray(g["scale"])], -1)

    dreg, plain = grads(IWAE(16)), grads(IWAE(16, estimator="reparam"))
    se = np.sqrt(dreg.var(0) / len(keys) + plain.var(0) / len(keys))
    assert np.all(np.abs(dreg.mean(0) - plain.mean(0)) < 4 * se)
    assert np.all(dreg.std(0) < 0.7 * plain.std(0))


def correlated_model():
    numpyro.sample("z", dist.MultivariateNormal(jnp.zeros(2), jnp.array([[1.0, 0.8], [0.8, 1.0]])))


@pytest.mark.parametrize("objective, expected_sd", [(None, 0.6), ("mass", 1.0)])
def test_mass_covering_fits_the_marginal_sds_where_the_elbo_fits_the_conditional_ones(objective, expected_sd):
    # a diagonal Gaussian q against N(0, [[1, .8], [.8, 1]]): argmin KL(q || p) has sds 1/sqrt(precision_ii) =
    # sqrt(1 - 0.64) = 0.6; argmin KL(p || q) matches the marginals, sd 1
    guide = AutoNormal(correlated_model)
    loss = MassCovering(64) if objective else Trace_ELBO(num_particles=16)
    svi = SVI(correlated_model, guide, optax.adam(0.02), loss)
    result = svi.run(jax.random.PRNGKey(0), 1500, progress_bar=False)
    sds = np.asarray(result.params["z_auto_scale"])
    np.testing.assert_allclose(sds, expected_sd, atol=0.08)


def model_with_a_parameter():
    mu = numpyro.param("mu", 0.0)
    z = numpyro.sample("z", dist.Normal(mu, 1.0))
    numpyro.sample("x", dist.Normal(z, 1.0), obs=X_OBS)


@pytest.mark.parametrize("objective", [IWAE(8), MassCovering(8)])
def test_model_parameters_get_the_weighted_score(objective, x64):
    # d/dmu log p(x; mu) = (x - mu) / 2 is the limit; at the exact posterior every weight is equal, so the
    # estimator's gradient is the posterior mean of d/dmu log p(x, z; mu) = E[z - mu] = x / 2 exactly
    guide = gaussian_guide(X_OBS / 2, np.sqrt(0.5))
    params = {"mu": jnp.asarray(0.0), **_params(X_OBS / 2, np.sqrt(0.5))}
    keys = jax.random.split(jax.random.PRNGKey(2), 2000)
    grad = jax.vmap(lambda k: jax.grad(lambda p: objective.loss(k, p, model_with_a_parameter, guide))(params)["mu"])(keys)
    assert float(-grad.mean()) == pytest.approx(X_OBS / 2, abs=4 * float(grad.std()) / np.sqrt(len(keys)) + 1e-9)


def test_refusals():
    with pytest.raises(ValueError, match="num_particles"):
        IWAE(0)
    with pytest.raises(ValueError, match="estimator"):
        IWAE(4, estimator="vimco")
    guide = inference.AutoFlow(conjugate_model, "maf", warm_start=None)  # stl on by default
    with pytest.raises(ValueError, match="stl=False"):  # the loss SVI calls refuses before any tracing
        MassCovering(4).loss(jax.random.PRNGKey(0), {}, conjugate_model, guide)

    def subsampled():
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", 10, subsample_size=5):
            numpyro.sample("x", dist.Normal(z, 1.0), obs=jnp.zeros(5))

    svi = SVI(subsampled, AutoNormal(subsampled), optax.adam(1e-2), IWAE(4))
    with pytest.raises(ValueError, match="subsampl"):
        svi.update(svi.init(jax.random.PRNGKey(0)))


def test_degenerate_weights_turn_the_mass_covering_step_into_an_elbo_step(x64):
    # with elbo_below_ess larger than K the step is rho * inclusive + (1 - rho) * ELBO with rho = ESS / 4 < 1;
    # compare with both pure gradients from the same particles
    params = _params(0.2, 1.1)
    key = jax.random.PRNGKey(4)
    guide = gaussian_guide(0.0, 1.0)
    pure = jax.grad(lambda p: MassCovering(3, elbo_below_ess=None).loss(key, p, conjugate_model, guide))(params)
    mixed = jax.grad(lambda p: MassCovering(3, elbo_below_ess=4.0).loss(key, p, conjugate_model, guide))(params)
    elbo = jax.grad(lambda p: -jnp.mean(_log_weights(p, key, 3)))(params)
    w = jax.nn.softmax(_log_weights(params, key, 3))
    rho = float(1.0 / jnp.sum(w ** 2)) / 4.0
    assert 0.25 < rho < 0.75
    for name in params:
        assert float(mixed[name]) == pytest.approx(rho * float(pure[name]) + (1 - rho) * float(elbo[name]), rel=1e-8)
    with pytest.raises(ValueError, match="elbo_below_ess"):
        MassCovering(8, elbo_below_ess=0)


def _log_weights(params, key, k):
    """The K particles' log-weights as MassCovering draws them (same keys), with reparametrised gradients."""
    from numpyro.infer.util import log_density
    from numpyro import handlers

    guide = gaussian_guide(0.0, 1.0)

    def one(kk):
        k_guide, k_model = jax.random.split(kk)
        log_q, tr = log_density(handlers.seed(guide, k_guide), (), {}, params)
        log_p, _ = log_density(handlers.replay(handlers.seed(conjugate_model, k_model), tr), (), {}, params)
        return log_p - log_q

    return jax.vmap(one)(jax.random.split(key, k))

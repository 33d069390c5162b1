"""AutoFlow's structure by latent dimension (issue 21): dense up to 256 coordinates, linear-cost "globals" above."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import SVI, Trace_ELBO

import inference
import nf_ppl
from inference.autoguide import DENSE_MAX_DIM
from nf_ppl.layers import Chain, ElementwiseAffine

TAU, SIGMA = 1.0, 1.0  # prior sd of the locals around the global, observation noise


def shared_mean_model(dim, seed=0):
    """``g ~ N(0, 1)``, ``x_i ~ N(g, TAU^2)`` (``dim - 1`` of them), ``y_i ~ N(x_i, SIGMA^2)``: a Gaussian
    posterior in which every ``x_i`` correlates with ``g`` (a rank-one direction), known exactly."""
    n = dim - 1
    y = np.random.default_rng(seed).normal(1.0, np.sqrt(TAU ** 2 + SIGMA ** 2), n)

    def model(y):
        g = numpyro.sample("g", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", n):
            x = numpyro.sample("x", dist.Normal(g, TAU))
            numpyro.sample("y", dist.Normal(x, SIGMA), obs=y)

    # joint Gaussian over (g, x): precision from the prior, the observations add 1/SIGMA^2 to each x_i
    prec = np.zeros((dim, dim))
    prec[0, 0] = 1.0 + n / TAU ** 2
    prec[0, 1:] = prec[1:, 0] = -1.0 / TAU ** 2
    prec[np.arange(1, dim), np.arange(1, dim)] = 1.0 / TAU ** 2 + 1.0 / SIGMA ** 2
    cov = np.linalg.inv(prec)
    mean = cov @ np.concatenate([[0.0], y / SIGMA ** 2])
    return model, jnp.asarray(y), mean, np.sqrt(np.diag(cov))


def multivariate_normal_logpdf(x, cov):
    chol = np.linalg.cholesky(cov)
    w = np.linalg.solve(chol, x)
    return float(-0.5 * w @ w - np.log(np.diag(chol)).sum() - 0.5 * len(x) * np.log(2 * np.pi))


def _set_up(guide, model, y):
    svi = SVI(model, guide, inference.suggest_optimizer(10, guide=guide), Trace_ELBO())
    return svi.get_params(svi.init(jax.random.PRNGKey(0), y))


def test_auto_structure_switches_to_globals_above_the_threshold_with_linear_parameter_count():
    sizes = {}
    for dim in (DENSE_MAX_DIM, DENSE_MAX_DIM + 1, 2 * DENSE_MAX_DIM + 2):
        model, y, _, _ = shared_mean_model(dim)
        guide = inference.AutoFlow(model, warm_start=None)  # the structure and the counts do not depend on the start
        params = _set_up(guide, model, y)
        sizes[dim] = (guide.structure, sum(np.size(p) for p in jax.tree_util.tree_leaves(params)), guide.flow_dim)
    assert sizes[DENSE_MAX_DIM][0] == "dense"
    assert sizes[DENSE_MAX_DIM + 1][0] == sizes[2 * DENSE_MAX_DIM + 2][0] == "globals"
    # the dense guide holds O(D^2) parameters (L and conditioners of width D)
    assert sizes[DENSE_MAX_DIM][1] > DENSE_MAX_DIM ** 2
    # globals: a loc shift and a scale per latent coordinate; the flow (over the global g only) is the
    # same size at any D
    assert sizes[DENSE_MAX_DIM + 1][2] == 1
    growth = sizes[2 * DENSE_MAX_DIM + 2][1] - sizes[DENSE_MAX_DIM + 1][1]
    assert growth == 2 * (DENSE_MAX_DIM + 1)


def _sites_model(sizes):
    def model():
        for name, size in sizes.items():
            numpyro.sample(name, dist.Normal(0, 1).expand([size]).to_event(1))
    return model


@pytest.mark.parametrize("sizes, flow_dim, expected", [
    # whole sites, smallest first, while they fit: c (2) and a (3); d (5) would make 10 > 8
    ({"a": 3, "b": 300, "c": 2, "d": 5}, None, [0, 1, 2, 303, 304]),
    ({"a": 3, "b": 300, "c": 2, "d": 5}, 10, [0, 1, 2, 303, 304, 305, 306, 307, 308, 309]),
    # no site small enough: the first `flow_dim` coordinates of the smallest site
    ({"a": 400, "b": 300}, 4, [400, 401, 402, 403]),
])
def test_globals_flow_acts_on_the_coordinates_of_the_smallest_sites(sizes, flow_dim, expected):
    model = _sites_model(sizes)
    guide = inference.AutoFlow(model, structure="globals", flow_dim=flow_dim, num_layers=1, hidden_dims=(16,))
    svi = SVI(model, guide, inference.suggest_optimizer(10), Trace_ELBO())
    svi.init(jax.random.PRNGKey(0))
    assert list(guide.flow_coordinates) == expected and guide.flow_dim == len(expected)


def _exact_parameters(guide, params, mean, sd):
    """The globals guide (cross=True)'s parameters at the exact posterior of ``shared_mean_model`` (affine flow, g first):
    ``g = mean_g + sd_g v``, ``x_i = mean_i + s (u_i + c v)`` with ``s = sd(x_i | g)`` and ``s c = Cov(x_i, g) / sd_g``."""
    cond_sd = 1.0 / np.sqrt(1.0 / TAU ** 2 + 1.0 / SIGMA ** 2)
    cov_xg = sd[0] ** 2 * (1.0 / TAU ** 2) / (1.0 / TAU ** 2 + 1.0 / SIGMA ** 2)  # E[x | g] has slope tau^-2 / prec
    p = dict(params)
    p["auto_loc_shift"] = jnp.asarray(mean) - guide._init_latent
    p["auto_scale"] = jnp.asarray(np.concatenate([[sd[0]], np.full(len(mean) - 1, cond_sd)]))
    cross = np.zeros((len(mean), 1))
    cross[1:, 0] = cov_xg / sd[0] / cond_sd
    p["auto_cross"] = jnp.asarray(cross)
    return p


def test_globals_family_with_cross_holds_the_exact_posterior_of_a_gaussian_hierarchical_model(x64):
    dim = 301
    model, y, mean, sd = shared_mean_model(dim)
    n = dim - 1
    log_z = multivariate_normal_logpdf(np.asarray(y), (TAU ** 2 + SIGMA ** 2) * np.eye(n) + np.ones((n, n)))
    identity = lambda key, d, **kw: nf_ppl.Flow(Chain([ElementwiseAffine.init(d)]), (d,))
    guide = inference.AutoFlow(model, flow=identity, cross=True)
    exact = _exact_parameters(guide, _set_up(guide, model, y), mean, sd)
    elbo = jax.jit(jax.vmap(lambda p, k: -Trace_ELBO().loss(k, p, model, guide, y), in_axes=(None, 0)))
    keys = jax.random.split(jax.random.PRNGKey(3), 2000)
    at_exact = np.asarray(elbo(exact, keys))
    # at q = p every draw's ELBO is log Z (no Monte-Carlo error at all)
    assert np.allclose(at_exact, log_z, atol=1e-6)
    without_cross = dict(exact, auto_cross=jnp.zeros_like(exact["auto_cross"]))
    assert np.mean(np.asarray(elbo(without_cross, keys))) < log_z - 0.3  # the coupling is what makes it exact


def test_globals_guide_trains_to_the_marginals_of_an_exact_gaussian_posterior():
    dim = 301
    model, y, mean, sd = shared_mean_model(dim)
    guide = inference.AutoFlow(model, seed=0)
    params, _, _ = inference.run_svi(model, guide, y, num_steps=1500)
    assert guide.structure == "globals" and not guide.stl and guide.flow_coordinates == (0,)
    draws = guide.sample_posterior(jax.random.PRNGKey(1), params, y, sample_shape=(4000,))
    z = np.concatenate([np.asarray(draws["g"])[:, None], np.asarray(draws["x"])], axis=1)
    mean_err = np.abs(z.mean(0) - mean) / sd
    sd_ratio = z.std(0) / sd
    # Monte-Carlo sd of a mean estimate from 4000 draws: 0.016 posterior sds
    assert np.sqrt(np.mean(mean_err ** 2)) < 0.1 and mean_err.max() < 0.35
    assert np.sqrt(np.mean((sd_ratio[1:] - 1) ** 2)) < 0.1
    # without cross the locals are independent of g in the guide, whose best sd for g is then its
    # conditional one: sqrt((1 + n/2) / (1 + n)) = 0.71 of the marginal (cross=True can reach 1)
    n = dim - 1
    assert np.sqrt((1 + n / 2) / (1 + n)) - 0.1 < sd_ratio[0] < 1.1


def test_globals_structure_can_be_chosen_at_any_dimension_and_its_log_density_is_exact(x64):
    model = _sites_model({"a": 2, "b": 1, "c": 6})
    guide = inference.AutoFlow(model, structure="globals", flow_dim=3, cross=True, seed=1)
    svi = SVI(model, guide, inference.suggest_optimizer(10), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.PRNGKey(0)))
    params = jax.tree_util.tree_map(lambda p: p + 0.2 * jnp.sin(jnp.arange(p.size).reshape(p.shape) + 1.0), params)
    assert guide.structure == "globals" and guide.flow_coordinates == (0, 1, 2)  # a and b: 3 coordinates
    flow = guide.get_flow(params)
    u = jax.random.normal(jax.random.PRNGKey(2), (5, 9))

    @jax.jit  # one program: op by op, the Jacobian alone compiles some 250 small ones
    def check(flow, u):
        z = flow.transform(u)
        # change of variables with an autodiff Jacobian: log q(z) = log N(u) - log|det dz/du|
        jac = jax.vmap(jax.jacfwd(flow.transform))(u)
        expected = dist.Normal(0, 1).log_prob(u).sum(-1) - jnp.linalg.slogdet(jac)[1]
        return flow.log_prob(z), expected, flow.transform.inv(z)

    log_q, expected, u_back = check(flow, u)
    assert np.allclose(log_q, expected, atol=1e-8)
    assert np.allclose(u_back, u, atol=1e-8)


def test_learning_rate_factor_follows_the_structure():
    model, y, _, _ = shared_mean_model(100)
    dense = inference.AutoFlow(model)
    globals_ = inference.AutoFlow(model, structure="globals")
    _set_up(dense, model, y), _set_up(globals_, model, y)
    assert dense.warm_start_info is not None and dense.learning_rate_factor() == pytest.approx(0.3)
    assert globals_.learning_rate_factor() == {"auto_flow$params": 0.1}  # loc and scale at the full step
    cold = inference.AutoFlow(model, warm_start=None)  # nothing to keep: it travels like AutoNormal
    _set_up(cold, model, y)
    assert cold.structure == "dense" and cold.learning_rate_factor() == 1.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(structure="sparse"), "structure must be one of"),
    (dict(flow_dim=0), "flow_dim must be a positive int"),
    (dict(flow_dim=2.5), "flow_dim must be a positive int"),
    (dict(stl="yes"), "stl must be"),
    (dict(flow_dim=True), "flow_dim must be a positive int"),
])
def test_bad_structure_options_are_refused_before_set_up(kwargs, match):
    model, _, _, _ = shared_mean_model(6)
    with pytest.raises(ValueError, match=match):
        inference.AutoFlow(model, **kwargs)


def test_globals_with_another_affine_part_is_refused_with_the_reason():
    model, y, _, _ = shared_mean_model(6)
    guide = inference.AutoFlow(model, structure="globals", affine="diag")
    with pytest.raises(ValueError, match="brings its own affine part"):
        _set_up(guide, model, y)


def test_globals_guide_works_with_predictive_diagnose_and_neutra_nuts():
    model, y, mean, sd = shared_mean_model(6)
    guide = inference.AutoFlow(model, structure="globals", flow_dim=3, seed=0)
    params, _, _ = inference.run_svi(model, guide, y, num_steps=300)
    report = inference.diagnose(model, guide, params, y)
    assert np.isfinite(report["khat"]) and report["iw_bound"] >= report["elbo"] - 0.05  # IW bound >= ELBO
    from numpyro.infer import Predictive
    assert Predictive(model, guide=guide, params=params, num_samples=5)(jax.random.PRNGKey(0), y)["y"].shape == (5, 5)
    _, samples = inference.neutra_nuts(model, guide, params, y, num_warmup=200, num_samples=400)
    assert abs(float(np.mean(samples["g"])) - mean[0]) < 0.25 * sd[0]  # NUTS on the reparametrised model is exact

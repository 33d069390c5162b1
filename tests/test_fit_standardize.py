"""``fit``'s data standardisation (``standardize=``): a data-end affine layer at the training rows' moments."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy import stats

import inference
import nf_ppl
from inference._standardize import standardized
from nf_ppl.layers import Chain, ElementwiseAffine

MEAN = np.array([20.0, -5.0])
COV = np.array([[25.0, 0.3], [0.3, 0.01]])  # sds 5 and 0.1, correlation 0.6
QUICK = dict(max_epochs=40, batch_size=128, progress=False)


def _gaussian_rows(n, seed):
    return np.random.default_rng(seed).multivariate_normal(MEAN, COV, size=n).astype(np.float32)


def _structure(flow):
    return jax.tree_util.tree_structure(flow)


def test_data_off_the_standard_scale_are_fitted_in_their_own_units(tmp_path):
    """A spline flow on rows with sds 5 and 0.1 and means 20 and -5: standardised by default, it reaches
    the true Gaussian's held-out log-likelihood, the history and the returned flow report it in the
    data's units, and it saves and loads like any built flow; without the layer the rows sit outside
    the splines' interval and the fit is hopeless."""
    train, val, test = _gaussian_rows(2000, 0), _gaussian_rows(500, 1), _gaussian_rows(2000, 2)
    truth = float(np.mean(stats.multivariate_normal(MEAN, COV).logpdf(test)))
    flow = inference.build_flow("nsf", 0, 2, num_layers=2, hidden_dims=(16, 16))
    fitted, hist = inference.fit(flow, train, val_data=val, **QUICK)
    layer = fitted.transform.layers[-1]
    assert isinstance(fitted.transform, Chain) and isinstance(layer, ElementwiseAffine)
    assert float(np.mean(np.asarray(fitted.log_prob(test)))) == pytest.approx(truth, abs=0.1)
    assert float(np.mean(np.asarray(fitted.log_prob(val)))) == pytest.approx(-hist.best_val_loss, abs=1e-3)
    loaded = inference.load(inference.save(fitted, tmp_path / "nsf.npz"))  # rebuilt from the file's spec alone
    np.testing.assert_array_equal(np.asarray(loaded.log_prob(test[:50])), np.asarray(fitted.log_prob(test[:50])))
    with pytest.warns(RuntimeWarning, match="no evaluation improved on the starting parameters"):  # identity tails
        raw, _ = inference.fit(flow, train, val_data=val, standardize=False, **dict(QUICK, max_epochs=2))
    assert _structure(raw) == _structure(flow)
    assert float(np.mean(np.asarray(raw.log_prob(test)))) < truth - 5.0


def test_the_layer_starts_at_the_training_rows_moments_and_a_constant_column_is_only_shifted():
    rows = np.stack([np.linspace(10.0, 30.0, 50), np.full(50, 3.0)], 1)
    flow = nf_ppl.maf(jax.random.PRNGKey(0), 2, num_layers=2, hidden_dims=(8,))
    layer = standardized(flow, rows, "auto").transform.layers[-1]
    np.testing.assert_allclose(np.asarray(layer.loc), [20.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(np.exp(np.asarray(layer.log_scale)), [rows[:, 0].std(), 1.0], rtol=1e-5)
    assert layer.loc.dtype == np.float32
    standard = np.random.default_rng(0).normal(size=(200, 2))
    assert standardized(flow, standard, "auto") is flow  # already standard: nothing added
    assert standardized(flow, rows, False) is flow
    added = standardized(flow, standard, True)
    np.testing.assert_allclose(np.asarray(added.transform.layers[-1].loc), standard.mean(0), rtol=1e-5, atol=1e-7)


def test_a_refit_looks_through_the_flow_s_own_layer_and_keeps_what_it_learned():
    train = _gaussian_rows(1000, 3)
    flow = standardized(nf_ppl.maf(jax.random.PRNGKey(0), 2, num_layers=2, hidden_dims=(8,)), train, True)
    layer = flow.transform.layers[-1]
    learned = ElementwiseAffine(layer.loc + 0.1 * np.exp(layer.log_scale), layer.log_scale)  # as if trained a little
    flow = flow.replace(transform=Chain([flow.transform.layers[0], learned]))
    again, _ = inference.fit(flow, train, max_steps=1, learning_rate=1e-4, progress=False)
    assert _structure(again) == _structure(flow)  # no second standardising layer
    np.testing.assert_allclose(np.asarray(again.transform.layers[-1].loc), np.asarray(learned.loc), atol=2e-4)


def test_conditional_flows_standardise_the_rows_and_use_the_context_as_given():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2.0, 2.0, size=(3000, 1)).astype(np.float32)
    y = (50.0 + 10.0 * x + 2.0 * rng.normal(size=(3000, 1))).astype(np.float32)  # y | x ~ N(50 + 10 x, 2^2)
    flow = inference.build_flow("maf", 0, 1, context_dim=1, num_layers=2)
    fitted, _ = inference.fit(flow, y[:2500], context=x[:2500], **QUICK)
    truth = float(np.mean(stats.norm(50.0 + 10.0 * x[2500:], 2.0).logpdf(y[2500:])))
    assert float(np.mean(np.asarray(fitted.log_prob(y[2500:], context=x[2500:])))) == pytest.approx(truth, abs=0.05)


def test_bad_standardize_values_are_refused_by_name():
    flow = nf_ppl.maf(jax.random.PRNGKey(0), 2, num_layers=2, hidden_dims=(8,))
    with pytest.raises(ValueError, match=r"^standardize must be 'auto', True or False; got 'yes'$"):
        inference.fit(flow, np.zeros((10, 2)), standardize="yes")
    image = nf_ppl.glow(jax.random.PRNGKey(0), (1, 4, 4), num_levels=1, num_steps=1, hidden_channels=4)
    with pytest.raises(ValueError, match=r"^standardize=True needs a flow over vectors; this flow's event shape is "
                                         r"\(1, 4, 4\) \(scale images yourself, e.g. to \[0, 1\]\)$"):
        inference.fit(image, np.zeros((10, 1, 4, 4)), standardize=True)


def test_the_data_end_layer_learns_in_standardised_units_so_the_fit_ignores_the_data_units():
    """The same correlated Gaussian rows at sd 1e-6 and at sd 1: the standardised fits agree in
    standardised nats and reach the Gaussian's held-out log-likelihood.  (Before, the data-end
    location stepped by Adam's learning rate in the data's units, a thousand sds a step at 1e-6: that
    fit ended 0.26 nats a row below the one at sd 1.)"""
    rows = np.random.default_rng(3).normal(size=(2500, 2)) @ np.array([[1.0, 0.6], [0.0, 0.8]])
    train, test = rows[:2000], rows[2000:]
    truth = float(np.mean(stats.multivariate_normal(train.mean(0), np.cov(train.T)).logpdf(test)))
    got = {}
    for scale in (1e-6, 1.0):
        flow = inference.build_flow("maf", 0, 2, num_layers=2, hidden_dims=(16, 16))
        fitted, _ = inference.fit(flow, scale * train, standardize=True, **QUICK)
        got[scale] = float(np.mean(np.asarray(fitted.log_prob(scale * test)))) + 2 * np.log(scale)
    assert got[1e-6] == pytest.approx(got[1.0], abs=0.02)
    assert got[1e-6] == pytest.approx(truth, abs=0.05)

"""MaskedAffineAutoregressive: MAF is the exact inverse of IAF with the same MADE, for both scales."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layer_cases import perturb
from nf_ppl import MADE
from nf_ppl.layers import MaskedAffineAutoregressive
from nf_ppl.layers.autoregressive import log_softplus_scale


@pytest.mark.parametrize("scale", ["exp", "softplus"])
def test_maf_is_the_inverse_of_iaf_and_log_dets_match_autodiff(scale, x64):
    made = perturb(MADE.init(jax.random.PRNGKey(0), 4, (8,), 2, dtype=jnp.float64), jax.random.PRNGKey(1), 0.7)
    iaf = MaskedAffineAutoregressive.from_made(made, "iaf", scale=scale)
    maf = MaskedAffineAutoregressive.from_made(made, "maf", scale=scale)
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 4), jnp.float64)
    y, ld_iaf = iaf.forward_and_log_det(x)
    # MAF's forward is IAF's inverse: same map, negated log-det
    x_back, ld_maf = maf.forward_and_log_det(y)
    np.testing.assert_allclose(x_back, x, atol=1e-10)
    np.testing.assert_allclose(ld_maf, -ld_iaf, atol=1e-10)
    jac = jax.vmap(jax.jacfwd(iaf))(x)
    np.testing.assert_allclose(ld_iaf, jnp.linalg.slogdet(jac)[1], atol=1e-10)
    # the one-pass direction of each mode is g(v) = v exp(s(v)) + mu(v)
    shift, log_scale = iaf.transformer_params(x)
    np.testing.assert_allclose(y, x * jnp.exp(log_scale) + shift, atol=1e-12)
    np.testing.assert_allclose(maf.inverse_and_log_det(x)[0], y, atol=1e-12)


def test_softplus_scale_is_one_at_zero_and_finite_far_below(x64):
    raw = jnp.array([0.0, 3.0, -5.0, -60.0, -1e4])
    expected = np.log(np.logaddexp(0.0, np.asarray(raw) + np.log(np.e - 1)))
    got = log_softplus_scale(raw)
    np.testing.assert_allclose(got[:4], expected[:4], rtol=1e-12, atol=1e-15)
    assert abs(got[0]) < 1e-15 and np.isfinite(got[4])
    grad = jax.grad(lambda r: log_softplus_scale(r).sum())(raw)
    assert np.all(np.isfinite(grad)) and grad[4] == 1.0  # log softplus(r) ~ r far below


def test_defaults_and_bad_scale():
    key = jax.random.PRNGKey(0)
    assert MaskedAffineAutoregressive(key, 3, (4,), mode="maf").scale == "softplus"
    assert MaskedAffineAutoregressive(key, 3, (4,), mode="iaf").scale == "exp"
    with pytest.raises(ValueError, match="scale must be one of"):
        MaskedAffineAutoregressive(key, 3, (4,), scale="sigmoid")

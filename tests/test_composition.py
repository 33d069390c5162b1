"""Stack (lax.scan over stacked layers) against Chain (a Python loop) with the same layers and permutations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nf_ppl

pytestmark = pytest.mark.usefixtures("x64")


@pytest.mark.parametrize("permutation", ["reverse", "random", None])
def test_stack_matches_chain_with_constant_and_per_layer_permutations(permutation):
    """'reverse' takes the constant-permutation path (jnp.flip), 'random' scans per-layer indices."""
    key = jax.random.PRNGKey(0)
    kw = dict(num_layers=3, hidden_dims=(8,), permutation=permutation, dtype=jnp.float64)
    stacked, chained = nf_ppl.maf(key, 5, scan=True, **kw), nf_ppl.maf(key, 5, scan=False, **kw)
    assert type(stacked.transform).__name__ == "Stack" and type(chained.transform).__name__ == "Chain"
    if permutation == "random":
        assert len(set(stacked.transform.permutations)) > 1
    y = jax.random.normal(jax.random.PRNGKey(1), (7, 5), jnp.float64)
    np.testing.assert_allclose(stacked.log_prob(y), chained.log_prob(y), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stacked.sample(key, (4,)), chained.sample(key, (4,)), rtol=1e-10, atol=1e-10)


def test_bound_transform_is_the_transform_or_its_conditioning_on_the_flows_context():
    flow = nf_ppl.maf(jax.random.PRNGKey(0), 2, num_layers=2, hidden_dims=(8,))
    assert flow.bound_transform() is flow.transform
    cond = nf_ppl.maf(jax.random.PRNGKey(0), 2, num_layers=2, hidden_dims=(8,), context_dim=3)
    ctx = jnp.asarray([[0.5, -1.0, 2.0]])
    x = jnp.asarray([[0.3, -0.2]])
    bound = cond.condition(ctx).bound_transform()
    np.testing.assert_allclose(np.asarray(bound(x)), np.asarray(cond.transform.condition(ctx)(x)), rtol=1e-6)
    with pytest.raises(ValueError, match="context"):
        cond.bound_transform()  # a conditional flow without a context names what is missing

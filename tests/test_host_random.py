"""Initial parameters drawn on the host (nf_ppl/host_random.py): the same key gives the same flow,
the distributions are those documented in ``nf_ppl.nn._dense_init`` on both paths (a concrete key
on the host, a traced key with ``jax.random``), and a new weight shape compiles nothing."""

from __future__ import annotations

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest

import nf_ppl
from nf_ppl.nn import MLP, _dense_init


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


def test_the_same_key_builds_the_same_flow_and_another_key_another():
    a, b = nf_ppl.iaf(jax.random.PRNGKey(4), 5), nf_ppl.iaf(jax.random.PRNGKey(4), 5)
    c = nf_ppl.iaf(jax.random.PRNGKey(5), 5)
    assert all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b)))
    assert not all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(c)) if x.size and np.any(x))
    typed = MLP.init(jax.random.key(4), 3, (8,), 2)  # a typed key reads the same bits as the raw one
    raw = MLP.init(jax.random.key_data(jax.random.key(4)), 3, (8,), 2)
    assert all(np.array_equal(x, y) for x, y in zip(_leaves(typed), _leaves(raw)))


@pytest.mark.parametrize("weight_init", ["normal", "uniform"])
def test_host_and_traced_keys_draw_the_documented_distributions(weight_init):
    fan_in, fan_out, lim = 50, 400, 1 / np.sqrt(50)
    host = _dense_init(jax.random.PRNGKey(0), fan_in, fan_out, jnp.float32, weight_init=weight_init)
    traced = jax.jit(lambda k: _dense_init(k, fan_in, fan_out, jnp.float32, weight_init=weight_init))(jax.random.PRNGKey(0))
    for w, b in (host, traced):
        w, b = np.asarray(w), np.asarray(b)
        assert w.dtype == np.float32 and w.shape == (fan_out, fan_in) and b.shape == (fan_out,)
        assert np.var(w) == pytest.approx(lim ** 2 / (3 if weight_init == "uniform" else 1), rel=0.05)
        assert np.abs(b).max() <= lim and np.var(b) == pytest.approx(lim ** 2 / 3, rel=0.25)
    w_out, b_out = _dense_init(jax.random.PRNGKey(0), fan_in, fan_out, jnp.float32, out_scale=0.01, weight_init=weight_init)
    np.testing.assert_allclose(np.asarray(w_out), 0.01 * np.asarray(host[0]), rtol=1e-6)  # an output layer: scaled
    assert not np.any(np.asarray(b_out))


def test_a_new_weight_shape_compiles_nothing_on_the_host_path():
    compiles, listening = [], [True]
    jax.monitoring.register_event_duration_secs_listener(  # (stays registered: it only listens during this test)
        lambda event, duration, **kw: compiles.append(event) if listening[0] and "backend_compile" in event else None)
    key = jax.block_until_ready(jax.random.PRNGKey(11))
    try:
        before = len(compiles)
        _dense_init(key, 37, 53, jnp.float32)  # a shape no other test draws
        assert len(compiles) == before
        jax.random.normal(key, (53, 37))  # the listener hears what jax.random compiles for that shape
        assert len(compiles) > before
    finally:
        listening[0] = False


@pytest.mark.parametrize("name", ["maf", "realnvp", "nsf"])  # autoregressive, coupling, spline: one _permutations
def test_builders_run_under_jit_with_a_traced_key_and_keep_their_structure(name):
    """Under ``jit`` the key is traced: the weights come from ``jax.random`` and the default permutations
    (``"auto"``, a fixed draw) are still concrete, so the flow has the structure built outside ``jit``
    (before: maf, iaf, realnvp, nsf and spline_coupling at dim >= 3 raised a bare ConcretizationTypeError)."""
    build = nf_ppl.builders()[name]
    points = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
    flow, values = jax.jit(lambda k: (build(k, 3), build(k, 3).log_prob(points)))(jax.random.PRNGKey(2))
    assert jax.tree_util.tree_structure(flow) == jax.tree_util.tree_structure(build(jax.random.PRNGKey(2), 3))
    np.testing.assert_allclose(np.asarray(flow.log_prob(points)), np.asarray(values), rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(np.asarray(values)))


def test_a_random_permutation_under_jit_is_refused_by_name():
    with pytest.raises(ValueError, match=r"^a random permutation needs a concrete key: the permutation is the flow's "
                       r"structure, not a traced value; build the flow outside jit/vmap, or use permutation='auto' "
                       r"\(a fixed draw\) or 'reverse'(\n|$)"):  # (JAX adds a note about its traceback)
        jax.jit(lambda k: nf_ppl.maf(k, 3, permutation="random").log_prob(jnp.zeros((2, 3))))(jax.random.PRNGKey(0))

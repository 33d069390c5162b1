"""Conditioners that read soft-clamped inputs (``conditioner_bound``): the networks read ``B tanh(v / B)``,
realnvp and the spline builders bound theirs by default, and a flow with bounded conditioners becomes affine far
from the data, where an unbounded one compounds its networks' growth layer after layer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inference
import nf_ppl
from inference.autoguide import default_flow_options
from layer_cases import perturb
from nf_ppl.layers.base import inverse_and_log_det
from nf_ppl.nn import MADE, MLP

BOUNDED_BY_DEFAULT = ("realnvp", "nsf", "spline_coupling")


def _nets(flow):
    layer = flow.transform.layer
    return [getattr(layer, "made", None) or layer.net]


def test_bounded_networks_read_the_soft_clamped_input_and_the_context_as_it_is(x64):
    key = jax.random.PRNGKey(0)
    x = 4.0 * jax.random.normal(jax.random.PRNGKey(1), (5, 3), jnp.float64)
    ctx = 4.0 * jax.random.normal(jax.random.PRNGKey(2), (5, 2), jnp.float64)
    mlp = MLP.init(key, 5, (8,), 4, out_scale=1.0, dtype=jnp.float64)
    made = MADE.init(key, 3, (8, 8), 2, context_dim=2, out_scale=1.0, dtype=jnp.float64)
    squashed = 2.0 * np.tanh(np.asarray(x) / 2.0)  # numpy's, an independent tanh
    np.testing.assert_allclose(mlp.with_input_bound(2.0)(x, ctx), mlp(jnp.concatenate([squashed, ctx], -1)), rtol=1e-13)
    np.testing.assert_allclose(made.with_input_bound(2.0)(x, ctx), made(squashed, ctx), rtol=1e-13)
    np.testing.assert_array_equal(mlp(x, ctx), mlp(jnp.concatenate([x, ctx], -1)))  # unbounded: the input itself
    # far out the outputs are those at the corner of the box, whatever the distance
    far = mlp.with_input_bound(2.0)(1e6 * jnp.sign(x), ctx)
    np.testing.assert_allclose(far, mlp(jnp.concatenate([2.0 * jnp.sign(x), ctx], -1)), rtol=1e-12)
    # the bound is static: it survives flattening, and an unbounded network's structure has none
    leaves, treedef = jax.tree_util.tree_flatten(made.with_input_bound(2.0))
    assert jax.tree_util.tree_unflatten(treedef, leaves).input_bound == 2.0
    assert jax.tree_util.tree_structure(made) == jax.tree_util.tree_structure(made.with_input_bound(None))


@pytest.mark.parametrize("bound", [0, -1.0, float("nan"), float("inf"), "3", True])
def test_a_bad_bound_is_refused_by_name(bound):
    with pytest.raises(ValueError) as err:
        nf_ppl.realnvp(jax.random.PRNGKey(0), 3, conditioner_bound=bound)
    assert str(err.value) == f"conditioner_bound must be a positive number or None; got {bound!r}"
    with pytest.raises(ValueError) as err:
        MLP.init(jax.random.PRNGKey(0), 2, (4,), 2).with_input_bound(bound)
    assert str(err.value) == f"input_bound must be a positive number or None; got {bound!r}"


@pytest.mark.parametrize("name", BOUNDED_BY_DEFAULT + ("maf", "iaf"))
def test_realnvp_and_the_spline_builders_bound_their_conditioners_but_not_maf_iaf_or_the_guides(name):
    flow = inference.build_flow(name, 0, 4)
    assert [net.input_bound for net in _nets(flow)] == [3.0 if name in BOUNDED_BY_DEFAULT else None]
    guide_flow = inference.builders()[name](jax.random.PRNGKey(0), 4, **default_flow_options(name, 4))
    assert [net.input_bound for net in _nets(guide_flow)] == [None]
    assert [net.input_bound for net in _nets(inference.build_flow(name, 0, 4, conditioner_bound=1.5))] == [1.5]


def _to_base(flow, y):
    return np.asarray(inverse_and_log_det(flow.transform, y)[0])


@pytest.mark.parametrize("name", ["maf", "realnvp"])
def test_far_from_the_data_a_bounded_affine_flow_is_affine(name, x64):
    """Along a ray ``y = s u``, each bounded layer's shifts and scales stop changing once ``s u`` is far
    outside the box, so the data -> base map becomes affine in ``s``: ``z(4s) - 2 z(2s) = z(2s) - 2 z(s)``
    (both ``-c``).  Without the bound the networks' linear growth compounds through the layers (the
    same parameters fail the check), which is how one unusual test row of dequantised digits scored
    -12563 nats under realnvp (bench/RESULTS.md).  "Far" means every layer's inputs far outside the box:
    a layer may shrink a coordinate a thousandfold (maf's first layer here), so the ray goes out to 4e6."""
    flow = inference.builders()[name](jax.random.PRNGKey(0), 4, num_layers=4, hidden_dims=(16, 16), dtype=jnp.float64,
                                      conditioner_bound=3.0)
    bounded = perturb(flow, jax.random.PRNGKey(1), 0.5)
    unbounded = _with_bound(bounded, None)
    u = jnp.asarray([0.6, -0.5, 0.4, -0.48])

    def curvature(f, s=1e6):
        z1, z2, z4 = (_to_base(f, k * s * u) for k in (1.0, 2.0, 4.0))
        return np.abs((z4 - 2 * z2) - (z2 - 2 * z1)).max() / np.abs(z4).max()

    assert curvature(bounded) < 1e-9
    assert curvature(unbounded) > 1e-3


def _with_bound(flow, bound):
    """``flow`` (a scanned stack) with its layers' networks reading inputs bounded by ``bound``."""
    layer = flow.transform.layer
    name = "made" if hasattr(layer, "made") else "net"
    layer = layer.replace(**{name: getattr(layer, name).with_input_bound(bound)})
    stack = flow.transform
    return flow.replace(transform=type(stack)(layer, stack.num_layers, stack.permutations))

"""Property harness: every layer in ``layer_cases.LAYERS`` gets every check below.

Checks are jitted (one compile per layer and shape) to keep the suite fast; a separate test
checks that jit and vmap agree with eager execution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.distributions import constraints

from layer_cases import LAYERS, cast, make_layer, trainable
from nf_ppl.layers import forward_and_log_det, inverse_and_log_det

NAMES = sorted(LAYERS)
TIGHT = dict(rtol=1e-8, atol=1e-8)


pytestmark = pytest.mark.usefixtures("x64")  # float64 for the whole module (tests/conftest.py)


def domain_points(shape, seed=1, dtype=jnp.float64):
    # every layer's domain is the real line (elementwise) or real vectors
    return 1.5 * jax.random.normal(jax.random.PRNGKey(seed), shape, dtype)


def _is_real(constraint):
    base = getattr(constraint, "base_constraint", constraint)
    return base is constraints.real or constraint is constraints.real_vector


@jax.jit
def _bijection_report(layer, x, x_other):
    y, ld = forward_and_log_det(layer, x)
    x_back, ld_inv = inverse_and_log_det(layer, y)
    y_other = layer(x_other)
    y_back = layer(layer.inv(y_other))
    jac = jax.vmap(jax.jacfwd(layer))(x)
    sign, autodiff_ld = jnp.linalg.slogdet(jac)
    numpyro_inv_ld = layer.inv.log_abs_det_jacobian(y, x_back)
    return dict(x_back=x_back, y_other=y_other, y_back=y_back, ld=ld, ld_inv=ld_inv, sign=sign,
                autodiff_ld=autodiff_ld, numpyro_inv_ld=numpyro_inv_ld)


@pytest.mark.parametrize("dim", [1, 3])  # the edge (one coordinate) and a generic odd size (uneven halves); d = 2 is in the flow tests
@pytest.mark.parametrize("name", NAMES)
def test_round_trips_and_log_det_match_autodiff(name, dim):
    """inverse(forward(x)) == x, forward(inverse(y)) == y, log|det| == slogdet(jax.jacobian)."""
    layer = make_layer(name, dim)
    x, x_other = domain_points((6, dim), 1), domain_points((6, dim), 2)
    r = _bijection_report(layer, x, x_other)
    np.testing.assert_allclose(r["x_back"], x, **TIGHT)
    np.testing.assert_allclose(r["y_back"], r["y_other"], **TIGHT)
    assert np.all(r["sign"] != 0)
    np.testing.assert_allclose(r["ld"], r["autodiff_ld"], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(r["ld_inv"], r["ld"], rtol=1e-8, atol=1e-10)
    inv_ld = r["numpyro_inv_ld"]
    inv_ld = inv_ld.sum(-1) if layer.event_dim == 0 else inv_ld
    np.testing.assert_allclose(inv_ld, -r["ld"], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [(), (7,), (3, 4)])
def test_batch_shapes(name, batch):
    dim = 3
    layer = make_layer(name, dim)
    x = jax.ShapeDtypeStruct(batch + (dim,), jnp.float64)
    y, ld = jax.eval_shape(forward_and_log_det, layer, x)
    assert y.shape == batch + (dim,) and ld.shape == batch
    x2, ld2 = jax.eval_shape(inverse_and_log_det, layer, y)
    assert x2.shape == batch + (dim,) and ld2.shape == batch
    assert layer.forward_shape(x.shape) == y.shape and layer.inverse_shape(y.shape) == x.shape


@jax.jit
def _jit_report(layer, x):
    """Forward and log-det three ways (plain, vmapped over rows, NumPyro's intermediates path), and the inverse."""
    y, ld = forward_and_log_det(layer, x)
    y_rows, ld_rows = jax.vmap(forward_and_log_det, in_axes=(None, 0))(layer, x)
    y_inter, inter = layer.call_with_intermediates(x)
    return dict(y=y, ld=ld, y_rows=y_rows, ld_rows=ld_rows, y_inter=y_inter,
                ld_inter=layer.log_abs_det_jacobian(x, y_inter, inter), ld_plain=layer.log_abs_det_jacobian(x, y),
                x_back=inverse_and_log_det(layer, y)[0],
                layer=layer)  # a pytree passes through jit as an argument and comes back


@pytest.mark.parametrize("name", NAMES)
def test_jit_vmap_and_intermediates_agree_with_eager(name):
    """One eager forward pass (op by op, as a user without jit runs it) against one jitted program."""
    dim = 3
    layer = make_layer(name, dim)
    x = domain_points((4, dim))
    eager_y, eager_ld = forward_and_log_det(layer, x)
    r = _jit_report(layer, x)
    for key, eager in (("y", eager_y), ("y_rows", eager_y), ("y_inter", eager_y), ("ld", eager_ld), ("ld_rows", eager_ld)):
        np.testing.assert_allclose(r[key], eager, rtol=1e-10, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(r["ld_inter"], r["ld_plain"], rtol=1e-9, atol=1e-12)  # NumPyro's two paths agree
    np.testing.assert_allclose(r["x_back"], x, rtol=1e-8, atol=1e-8)
    assert jax.tree_util.tree_structure(r["layer"]) == jax.tree_util.tree_structure(layer)


@pytest.mark.parametrize("name", NAMES)
def test_float32_keeps_dtype_and_matches_float64(name):
    dim = 3
    layer64 = make_layer(name, dim)
    layer32 = cast(layer64, jnp.float32)
    x64_ = domain_points((6, dim))  # the dim-3 round trip's points: its compiled report gives the float64 side
    r64 = _bijection_report(layer64, x64_, x64_)
    x32 = x64_.astype(jnp.float32)
    (y32, ld32), back32 = jax.jit(lambda l, v: (forward_and_log_det(l, v), l.inv(l(v))))(layer32, x32)
    assert y32.dtype == jnp.float32 and ld32.dtype == jnp.float32
    assert r64["y_other"].dtype == jnp.float64 and r64["ld"].dtype == jnp.float64
    np.testing.assert_allclose(y32, r64["y_other"], rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(ld32, r64["ld"], rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(back32, x32, rtol=1e-3, atol=1e-3)


EXTREME = np.array([-1e3, -50.0, -1.0, 0.0, 1.0, 50.0, 1e3])


def _loss_and_values(direction, layer, v):
    """A loss touching every output of ``direction`` (``forward_and_log_det`` or its inverse), and those outputs."""
    out, ld = direction(layer, v)
    return jnp.sum(ld) + jnp.sum(jnp.tanh(out)), (out, ld)


@jax.jit
def _gradient_report(layer, x, y):
    """Per direction, ``(grads wrt (layer, input), (out, log_det))`` of a loss touching every output: forward
    at ``x``, inverse at ``y``.  One compiled program per layer serves both gradient tests (same shapes)."""
    def report(direction, v):
        return jax.grad(lambda l, u: _loss_and_values(direction, l, u), argnums=(0, 1), has_aux=True)(layer, v)

    return report(forward_and_log_det, x), report(inverse_and_log_det, y)


GRADIENT_ROWS = len(EXTREME) ** 2  # every pair of extreme values (below); the parameter test uses as many rows


def _inverse_points(layer, x):
    """Where the gradient tests run the inverse: ``x`` itself on a real codomain, else the images of ``x``."""
    return x if _is_real(layer.codomain) else layer(x)


def _all_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("name", NAMES)
def test_finite_values_and_gradients_at_extreme_inputs(name):
    dim = 3  # every pair of extreme values in the first two coordinates, the third cycling through them
    layer = make_layer(name, dim)
    pairs = np.stack(np.meshgrid(EXTREME, EXTREME), -1).reshape(-1, 2)
    x = jnp.asarray(np.concatenate([pairs, np.resize(EXTREME, (len(pairs), 1))], -1))
    forward, inverse = _gradient_report(layer, x, _inverse_points(layer, x))
    assert _all_finite(forward)
    if _is_real(layer.codomain):  # density direction at extreme data values (else at their images: not checked)
        assert _all_finite(inverse)


@pytest.mark.parametrize("name", NAMES)
def test_scalar_maps_are_monotone_with_reported_sign(name):
    layer = make_layer(name, 1)  # the build of the one-coordinate round trip (which layers are scalar is known once built)
    if layer.event_dim != 0:
        pytest.skip("not an elementwise (scalar) map")
    grid = jnp.linspace(-6, 6, 2001)[:, None]
    diffs = jnp.diff(jax.jit(layer.__call__)(grid)[:, 0])
    assert jnp.all(jnp.sign(diffs) == layer.sign)


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_finite_nonzero_gradient(name):
    dim = 3
    layer = make_layer(name, dim)
    if not jax.tree_util.tree_leaves(trainable(layer)):
        pytest.skip("layer has no trainable parameters")
    x = domain_points((GRADIENT_ROWS, dim))
    (forward, _), (inverse, _) = _gradient_report(layer, x, _inverse_points(layer, x))
    grads = jax.tree_util.tree_map(jnp.add, trainable(forward[0]), trainable(inverse[0]))  # a bound context is data
    for g in jax.tree_util.tree_leaves(grads):
        if g.size:
            assert jnp.all(jnp.isfinite(g))
            assert jnp.any(g != 0)

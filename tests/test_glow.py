"""Checks for the image layers and Glow (the vector harness's checks, adapted to (C, H, W) events).

Every image layer in ``IMAGE_LAYERS`` gets: round trips, log|det J| against ``slogdet`` of the
autodiff Jacobian of the flattened map, batch shapes, jit vs eager, float32 vs float64, and
finite, non-zero gradients for every parameter (also at extreme inputs).  Then: Glow as a
``Flow``, bad inputs, data-dependent initialisation, dequantisation, and a short training run
on sklearn's 8x8 digits whose held-out bits/dim must go down.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layer_cases import trainable
from nf_ppl.glow import VariationalDequantizer, bits_per_dim, glow, glow_data_init, uniform_dequantize
from nf_ppl.layers.base import forward_and_log_det, inverse_and_log_det
from nf_ppl.layers.image import (ImageActNorm, ImageAffineCoupling, ImageChain,
                                 InvConv1x1, Squeeze, Unsqueeze)

TIGHT = dict(rtol=1e-8, atol=1e-8)


def _step(k, shape, t):
    k1, k2 = jax.random.split(k)
    return ImageChain([ImageAffineCoupling(k1, shape, 4, dtype=t), InvConv1x1.init(k2, shape, perm="reverse", dtype=t),
                       ImageActNorm.init(shape, t)])


def _context(shape, t):
    return jax.random.normal(jax.random.PRNGKey(9), shape, t)


# name -> factory(key, dtype) -> image layer (tiny images)
IMAGE_LAYERS = {
    "Squeeze": lambda k, t: Squeeze((2, 2, 4)),
    "Unsqueeze": lambda k, t: Unsqueeze((4, 1, 2)),
    "InvConv1x1": lambda k, t: InvConv1x1.init(k, (3, 2, 2), dtype=t),
    "ImageActNorm": lambda k, t: ImageActNorm.init((3, 2, 2), t),
    "Coupling-channel": lambda k, t: ImageAffineCoupling(k, (4, 2, 2), 4, dtype=t),
    "Coupling-channel-odd-parity1": lambda k, t: ImageAffineCoupling(k, (3, 2, 2), 4, parity=1, dtype=t),
    "Coupling-checkerboard": lambda k, t: ImageAffineCoupling(k, (1, 2, 3), 4, mask="checkerboard", dtype=t),
    "Coupling-conditional": lambda k, t: ImageAffineCoupling(
        k, (2, 2, 2), 4, mask="checkerboard", parity=1, context_channels=1, dtype=t).condition(_context((1, 2, 2), t)),
    # FactorOut and the ImageStack of steps are checked inside glow.transform (Squeeze, stack, factor-out)
    "glow.transform": lambda k, t: glow(k, (1, 4, 4), num_levels=2, num_steps=2, hidden_channels=4,
                                        dtype=t).transform,
    "glow-unrolled.transform": lambda k, t: glow(k, (2, 2, 2), num_levels=1, num_steps=2, hidden_channels=4,
                                                 scan=False, permutation="reverse", dtype=t).transform,
}
NAMES = sorted(IMAGE_LAYERS)


def _map_floats(fun, tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    out = [fun(np.asarray(a)) if np.issubdtype(np.asarray(a).dtype, np.floating) else a for a in leaves]
    return jax.tree_util.tree_unflatten(treedef, out)


def perturb(obj, seed, scale=0.3):
    """Add Gaussian noise to every float leaf (on the host: no per-shape compilation)."""
    rng = np.random.default_rng(seed)
    return _map_floats(lambda a: jax.device_put((a + scale * rng.standard_normal(a.shape)).astype(a.dtype)), obj)


def cast(obj, dtype):
    return _map_floats(lambda a: jax.device_put(a.astype(dtype)), obj)


def make(name, dtype=jnp.float64, seed=0):
    return cast(perturb(IMAGE_LAYERS[name](jax.random.PRNGKey(seed), dtype), seed + 1), dtype)


def points(shape, seed=1, dtype=None):
    return 1.5 * jax.random.normal(jax.random.PRNGKey(seed), shape, dtype or float)


@jax.jit
def _report(layer, x, y_other):
    shape = layer.image_shape
    y, ld = forward_and_log_det(layer, x)
    x_back, ld_inv = inverse_and_log_det(layer, y)
    y_back = layer(layer.inv(y_other))
    flat = lambda v: layer(v.reshape(shape)).reshape(-1)
    jac = jax.vmap(jax.jacfwd(flat))(x.reshape(x.shape[0], -1))
    sign, autodiff_ld = jnp.linalg.slogdet(jac)
    return dict(y=y, x_back=x_back, y_back=y_back, ld=ld, ld_inv=ld_inv, sign=sign, autodiff_ld=autodiff_ld)


@pytest.mark.parametrize("name", NAMES)
def test_round_trips_and_log_det_match_autodiff(name, x64):
    layer = make(name)
    x = points((4,) + layer.image_shape, 1)
    y_other = points((4,) + layer.output_shape, 2)
    r = _report(layer, x, y_other)
    assert r["y"].shape == (4,) + layer.output_shape
    np.testing.assert_allclose(r["x_back"], x, **TIGHT)
    np.testing.assert_allclose(r["y_back"], y_other, **TIGHT)
    assert np.all(r["sign"] != 0)
    np.testing.assert_allclose(r["ld"], r["autodiff_ld"], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(r["ld_inv"], r["ld"], rtol=1e-8, atol=1e-10)
    # NumPyro's inverse transform reports minus the forward log-det
    np.testing.assert_allclose(layer.inv.log_abs_det_jacobian(r["y"], r["x_back"]), -r["ld"], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [(), (5,), (2, 3)])
def test_batch_shapes(name, batch, x64):
    layer = make(name)
    x = jax.ShapeDtypeStruct(batch + layer.image_shape, jnp.float64)
    y, ld = jax.eval_shape(forward_and_log_det, layer, x)
    assert y.shape == batch + layer.output_shape and ld.shape == batch
    x2, ld2 = jax.eval_shape(inverse_and_log_det, layer, y)
    assert x2.shape == x.shape and ld2.shape == batch
    assert layer.forward_shape(x.shape) == y.shape and layer.inverse_shape(y.shape) == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_jit_eager_and_float32_vs_float64(name, x64):
    layer64 = make(name)
    x = points((3,) + layer64.image_shape)
    eager = forward_and_log_det(layer64, x)
    jitted = jax.jit(forward_and_log_det)(layer64, x)
    for a, b in zip(eager, jitted):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    y, inter = jax.jit(lambda l, v: l.call_with_intermediates(v))(layer64, x)
    np.testing.assert_allclose(layer64.log_abs_det_jacobian(x, y, inter), eager[1], rtol=1e-10)
    layer32 = cast(layer64, jnp.float32)
    f = jax.jit(lambda l, v: (forward_and_log_det(l, v), l.inv(l(v))))
    (y32, ld32), back32 = f(layer32, x.astype(jnp.float32))
    assert y32.dtype == jnp.float32 and ld32.dtype == jnp.float32 and back32.dtype == jnp.float32
    np.testing.assert_allclose(y32, eager[0], rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(ld32, eager[1], rtol=2e-4, atol=2e-3)
    # a whole multi-scale Glow with every weight perturbed is a deep, less well-conditioned map
    tol = 5e-3 if name.startswith("glow") else 1e-3
    np.testing.assert_allclose(back32, x, rtol=tol, atol=tol)
    same = jax.jit(lambda l: l)(layer64)
    assert jax.tree_util.tree_structure(same) == jax.tree_util.tree_structure(layer64)


def _loss(layer, x, y):
    a, ld_a = forward_and_log_det(layer, x)
    b, ld_b = inverse_and_log_det(layer, y)
    return jnp.sum(ld_a) + jnp.sum(jnp.tanh(a)) + jnp.sum(ld_b) + jnp.sum(jnp.tanh(b))


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_finite_nonzero_gradient(name, x64):
    layer = make(name)
    context = layer.context
    params = trainable(layer)
    x = points((8,) + layer.image_shape)
    y = points((8,) + layer.output_shape, 3)
    extreme = jnp.asarray(np.resize([-1e3, -50.0, 0.0, 1.0, 1e3], (8,) + layer.image_shape))
    extreme_y = jnp.asarray(np.resize([1e3, -1.0, 50.0, 0.0, -1e3], (8,) + layer.output_shape))

    @jax.jit
    @jax.grad
    def grads(args):
        p, x, y = args
        return _loss(p if context is None else p.condition(context), x, y)

    g, gx, gy = grads((params, x, y))
    for leaf in jax.tree_util.tree_leaves(g):
        if leaf.size:
            assert jnp.all(jnp.isfinite(leaf)) and jnp.any(leaf != 0)
    assert jnp.all(jnp.isfinite(gx)) and jnp.all(jnp.isfinite(gy))
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree_util.tree_leaves(grads((params, extreme, extreme_y))))


# ---------------------------------------------------------------------------------------
def test_squeeze_layout_and_unsqueeze_inverse():
    x = jnp.arange(2 * 4 * 4.0).reshape(2, 4, 4)
    y = Squeeze((2, 4, 4))(x)
    assert y.shape == (8, 2, 2)
    # channel c*4 + 2a + b holds pixel (2i + a, 2j + b) of channel c
    np.testing.assert_array_equal(y[4 + 2 * 1 + 0], x[1, 1::2, 0::2])
    np.testing.assert_array_equal(Unsqueeze((8, 2, 2))(y), x)


def test_invconv_log_det_is_hw_sum_log_diag(x64):
    layer = make("InvConv1x1")
    _, h, w = layer.image_shape
    ld = forward_and_log_det(layer, points((2,) + layer.image_shape))[1]
    np.testing.assert_allclose(ld, h * w * jnp.sum(layer.log_diag), rtol=1e-12)
    np.testing.assert_allclose(jnp.linalg.slogdet(layer.matrix())[1], jnp.sum(layer.log_diag), rtol=1e-10, atol=1e-12)


def test_couplings_start_at_identity():
    layer = ImageAffineCoupling(jax.random.PRNGKey(0), (4, 2, 2), 8)
    x = points((3, 4, 2, 2))
    y, ld = forward_and_log_det(layer, x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(ld, 0.0)


def test_actnorm_data_init_standardises_per_channel():
    y = 3.0 + 2.0 * points((50, 3, 2, 2)) * jnp.asarray([1.0, 2.0, 0.5])[:, None, None]
    layer, x = ImageActNorm.init((3, 2, 2)).data_init(y)
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1.0, atol=1e-4)


def test_glow_flow_shapes_sampling_and_data_init():
    flow = glow(jax.random.PRNGKey(0), (1, 4, 4), num_levels=2, num_steps=1, hidden_channels=4)
    assert flow.event_shape == (1, 4, 4) and flow.batch_shape == ()
    for sample_shape in [(), (2, 3)]:
        y = jax.eval_shape(lambda f, k: f.sample(k, sample_shape), flow, jax.random.PRNGKey(0))
        assert y.shape == sample_shape + (1, 4, 4)
        assert jax.eval_shape(lambda f, v: f.log_prob(v), flow, y).shape == sample_shape
    data = jax.random.uniform(jax.random.PRNGKey(1), (32, 1, 4, 4)) * 0.2 + 0.5
    flow = glow_data_init(flow, data)
    actnorms = [l for l in jax.tree_util.tree_leaves(flow.transform, is_leaf=lambda l: isinstance(l, ImageActNorm))
                if isinstance(l, ImageActNorm)]
    assert actnorms and all(bool(jnp.any(a.loc != 0)) for a in actnorms)
    # the base-side image of the data is roughly standardised
    z = jax.jit(lambda t, v: t.inv(v))(flow.transform, data)
    assert abs(float(z.mean())) < 0.5 and 0.5 < float(z.std()) < 1.5

    @jax.jit
    def check(f, key):
        y, lp = f.sample_and_log_prob(key, (5,))
        return lp, f.log_prob(y)

    lp, lp2 = check(flow, jax.random.PRNGKey(2))
    np.testing.assert_allclose(lp, lp2, rtol=1e-4, atol=1e-3)
    assert np.all(np.isfinite(lp))


# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(image_shape=(1, 6, 8), num_levels=2), "divisible by the squeeze factor 2"),
    (dict(image_shape=(1, 8, 8), num_levels=0), "num_levels must be a positive int"),
    (dict(image_shape=(1, 8, 8), num_steps=0), "num_steps must be a positive int"),
    (dict(image_shape=(1, 8, 8), hidden_channels=-3), "hidden_channels must be a positive int"),
    (dict(image_shape=(8, 8)), r"image_shape must be \(C, H, W\)"),
    (dict(image_shape=(1, 8, 8), permutation="shuffle"), "permutation must be"),
])
def test_glow_rejects_bad_arguments(kwargs, message):
    shape = kwargs.pop("image_shape")
    with pytest.raises(ValueError, match=message):
        glow(jax.random.PRNGKey(0), shape, num_steps=kwargs.pop("num_steps", 1), hidden_channels=kwargs.pop(
            "hidden_channels", 4), **{"num_levels": 1, **kwargs})


def test_bad_image_inputs_name_the_expected_shape():
    with pytest.raises(ValueError, match="divisible by the squeeze factor 2"):
        Squeeze((1, 3, 4))
    with pytest.raises(ValueError, match="divisible by the squeeze factor 3"):
        Squeeze((1, 6, 4), factor=3)
    flow = glow(jax.random.PRNGKey(0), (1, 4, 4), num_levels=1, num_steps=1, hidden_channels=4)
    with pytest.raises(ValueError, match=r"value must have shape \(\.\.\., 1, 4, 4\)"):
        flow.log_prob(jnp.zeros((2, 1, 4, 5)))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., C, H, W\) = \(\.\.\., 1, 4, 4\)"):
        flow.transform(jnp.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., C, H, W\) = \(\.\.\., 1, 4, 4\)"):
        flow.transform.inv(jnp.zeros((3, 2, 4, 4)))
    with pytest.raises(ValueError, match="channel-wise coupling needs at least 2 channels"):
        ImageAffineCoupling(jax.random.PRNGKey(0), (1, 4, 4), 4)
    cond = ImageAffineCoupling(jax.random.PRNGKey(0), (2, 2, 2), 4, mask="checkerboard", context_channels=1)
    with pytest.raises(ValueError, match="needs a context image"):
        cond(jnp.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., C, H, W\) = \(\.\.\., 1, 2, 2\)"):
        cond.condition(jnp.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="num_levels must be an int >= 2"):
        uniform_dequantize(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2)), 1)
    with pytest.raises(ValueError, match="num_dims must be a positive int"):
        bits_per_dim(0.0, 0, 17)


# ---------------------------------------------------------------------------------------
def test_uniform_dequantisation_and_bits_per_dim():
    x = jnp.asarray(np.random.default_rng(0).integers(0, 17, (100, 1, 4, 4)))
    y = uniform_dequantize(jax.random.PRNGKey(0), x, 17)
    assert jnp.all(y >= x / 17) and jnp.all(y < (x + 1) / 17)
    # the uniform density on [0, 1)^D (log p = 0) is the uniform distribution on 17 levels
    np.testing.assert_allclose(bits_per_dim(0.0, 16, 17), math.log2(17), rtol=1e-12)
    np.testing.assert_allclose(bits_per_dim(-16 * math.log(2.0), 16, 256), 9.0, rtol=1e-12)


def test_variational_dequantiser_density_matches_autodiff(x64):
    deq = VariationalDequantizer.init(jax.random.PRNGKey(0), (1, 2, 2), 17, num_steps=2, hidden_channels=4,
                                      dtype=jnp.float64)
    deq = perturb(deq, 1)
    x = jnp.asarray(np.random.default_rng(1).integers(0, 17, (3, 1, 2, 2)), jnp.float64)
    key = jax.random.PRNGKey(2)
    y, log_q = jax.jit(lambda d, k, x: d(k, x))(deq, key, x)
    assert y.shape == x.shape and log_q.shape == (3,)
    assert jnp.all(y >= x / 17) and jnp.all(y <= (x + 1) / 17)
    v = jax.random.normal(key, x.shape, jnp.float64)  # the noise the dequantiser drew

    @jax.jit
    @jax.vmap
    def expected(v, x):  # log N(v) - log|det du/dv| by autodiff
        u_of_v = lambda e: jax.nn.sigmoid(deq._bound(x)(e.reshape(1, 2, 2))).reshape(-1)
        jac = jax.jacfwd(u_of_v)(v.reshape(-1))
        return -0.5 * jnp.sum(v ** 2) - 2 * math.log(2 * math.pi) - jnp.linalg.slogdet(jac)[1]

    np.testing.assert_allclose(log_q, expected(v, x), rtol=1e-8)
    g = jax.jit(jax.grad(lambda d: jnp.sum(d(key, x)[1])))(deq)
    for leaf in jax.tree_util.tree_leaves(g):
        assert jnp.all(jnp.isfinite(leaf)) and jnp.any(leaf != 0)


# ---------------------------------------------------------------------------------------
def test_glow_trains_on_digits_bits_per_dim_decreases():
    """Done-when: a tiny Glow, uniform dequantisation, 30 Adam steps on 8x8 digits (17 levels).

    One compiled program serves training and evaluation (the held-out batch has the training
    batch's shape; its loss is read before the update is applied).
    """
    import optax
    from sklearn.datasets import load_digits

    images = load_digits().images[:, None].astype(np.float32)  # (1797, 1, 8, 8), values 0..16
    train, held_out = images[:1500], images[1500:1628]
    levels, dims, batch = 17, 64, 128
    rng = np.random.default_rng(0)
    dequantize = lambda x: ((x + rng.uniform(size=x.shape)) / levels).astype(np.float32)  # host-side, no compile
    flow = glow(jax.random.PRNGKey(0), (1, 8, 8), num_levels=2, num_steps=2, hidden_channels=16)
    flow = glow_data_init(flow, dequantize(train[:256]))
    y_test = dequantize(held_out)
    opt = optax.adam(1e-2)

    @jax.jit
    def step(f, state, y):
        loss, g = jax.value_and_grad(lambda f: jnp.mean(bits_per_dim(f.log_prob(y), dims, levels)))(f)
        updates, state = opt.update(g, state, f)
        return optax.apply_updates(f, updates), state, loss

    state = opt.init(flow)
    before = float(step(flow, state, y_test)[2])
    losses = []
    for _ in range(30):
        flow, state, loss = step(flow, state, dequantize(train[rng.choice(len(train), batch, replace=False)]))
        losses.append(float(loss))
    after = float(step(flow, state, y_test)[2])
    assert np.all(np.isfinite(losses))
    assert after < before - 0.2, (before, after, losses)

"""The elementwise transformers and the two generic layers that take them.

Every transformer is checked against autodiff (``log tau'``), its own inverse and, where it has
one, its identity at zero parameters; the generic layers against the named layers they replace
(the same MADE or network gives the same numbers) and against the one rule for ``mode``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nf_ppl.layers import (AffineCoupling, Coupling, MaskedAffineAutoregressive, MaskedAutoregressive,
                           MaskedSplineAutoregressive, NeuralAutoregressive)
from nf_ppl.layers import transformers as T

pytestmark = pytest.mark.usefixtures("x64")

BUILT_IN = {
    "affine-exp": T.Affine("exp", 3.0), "affine-softplus": T.Affine("softplus", 3.0), "shift": T.Shift(),
    "spline": T.RQSpline(4, 2.5), "sinh-arcsinh": T.SinhArcsinh(), "deep-sigmoid": T.DeepSigmoid(3),
    "inverse-spline": T.Inverse(T.RQSpline(4, 2.5)), "inverse-deep-sigmoid": T.Inverse(T.DeepSigmoid(3)),
}
N = 4  # coordinates


def _params(transformer, seed=0, scale=0.7):
    return scale * jax.random.normal(jax.random.PRNGKey(seed), (5, transformer.num_params, N))


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_round_trip_and_log_derivative_match_autodiff(name):
    t = BUILT_IN[name]
    params = _params(t)
    x = 1.7 * jax.random.normal(jax.random.PRNGKey(1), (5, N))
    y, log_d = t.forward(x, params)
    x_back, log_d_back = t.inverse(y, params)
    np.testing.assert_allclose(x_back, x, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(log_d_back, log_d, rtol=1e-8, atol=1e-8)
    # d tau / dx for each entry: the map is elementwise, so the gradient of the sum is the diagonal
    deriv = jax.grad(lambda v: jnp.sum(t.forward(v, params)[0]))(x)
    assert np.all(deriv > 0)
    np.testing.assert_allclose(log_d, np.log(deriv), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["affine-exp", "affine-softplus", "shift", "spline", "sinh-arcsinh"])
def test_zero_parameters_give_the_identity(name):
    t = BUILT_IN[name]
    x = jnp.linspace(-4.0, 4.0, 4 * N).reshape(4, N)
    y, log_d = t.forward(x, jnp.zeros((4, t.num_params, N)))
    np.testing.assert_allclose(y, x, atol=1e-12)
    np.testing.assert_allclose(log_d, 0.0, atol=1e-12)


def test_deep_sigmoid_init_bias_starts_at_unit_slope():
    t = T.DeepSigmoid(5)
    bias = jnp.broadcast_to(t.init_bias(jnp.float64)[:, None], (t.num_params, N))
    _, log_d = t.forward(jnp.zeros(N), bias)
    np.testing.assert_allclose(log_d, 0.0, atol=1e-12)


def test_inverse_swaps_directions_and_negates_log_derivatives():
    t = T.RQSpline(4, 2.5)
    params = _params(t, 3)
    v = jax.random.normal(jax.random.PRNGKey(4), (5, N))
    out, log_d = T.Inverse(t).forward(v, params)
    ref, ref_log_d = t.inverse(v, params)
    np.testing.assert_allclose(out, ref)
    np.testing.assert_allclose(log_d, -ref_log_d)
    assert T.Inverse(T.DeepSigmoid(2)).forward_is_numerical and not T.Inverse(T.DeepSigmoid(2)).inverse_is_numerical
    assert T.Inverse(t).num_bins == 4  # the inner transformer's options read through


def test_transformers_are_hashable_values():
    assert T.RQSpline(4, 2.5) == T.RQSpline(4, 2.5) and hash(T.RQSpline(4, 2.5)) == hash(T.RQSpline(4, 2.5))
    assert T.Affine("exp", 3.0) != T.Affine("softplus", 3.0)


def test_bad_transformers_and_options_are_refused_with_their_names():
    key = jax.random.PRNGKey(0)
    with pytest.raises(TypeError, match="transformer must be a Transformer instance.*RQSpline()"):
        MaskedAutoregressive.init(key, 3, T.RQSpline)
    with pytest.raises(TypeError, match="transformer must be a Transformer"):
        Coupling.init(key, 4, "affine")
    with pytest.raises(ValueError, match="scale must be one of"):
        T.Affine("log")
    with pytest.raises(ValueError, match="num_bins must be a positive int"):
        T.RQSpline(0)
    with pytest.raises(ValueError, match="num_components must be a positive int"):
        T.DeepSigmoid(0)
    with pytest.raises(ValueError, match="mode must be one of"):
        MaskedAutoregressive.init(key, 3, T.Affine(), mode="forward")
    made = MaskedAutoregressive.init(key, 3, T.Affine()).made
    with pytest.raises(ValueError, match="must output num_params=8 parameters per dimension for RQSpline; got 2"):
        MaskedAutoregressive(made, T.RQSpline(3))


def test_maf_is_the_inverse_of_iaf_with_the_same_made_and_transformer():
    t = T.SinhArcsinh()
    iaf = MaskedAutoregressive.init(jax.random.PRNGKey(2), 3, t, (8,), mode="iaf", out_scale=0.5)
    maf = MaskedAutoregressive(iaf.made, t, mode="maf")
    v = jax.random.normal(jax.random.PRNGKey(5), (6, 3))
    y_iaf, ld_iaf = iaf.forward_and_log_det(v)
    x_maf, ld_maf = maf.inverse_and_log_det(v)  # the density direction of MAF is IAF's forward map
    np.testing.assert_allclose(x_maf, y_iaf)
    np.testing.assert_allclose(ld_maf, -ld_iaf)


def test_named_layers_are_the_generic_layers_with_their_transformer():
    key = jax.random.PRNGKey(7)
    v = jax.random.normal(jax.random.PRNGKey(8), (6, 4))
    pairs = []
    maf = MaskedAffineAutoregressive(key, 4, (8,), mode="maf")
    pairs.append((maf, MaskedAutoregressive(maf.made, T.Affine("softplus", 5.0), "maf")))
    spline_maf = MaskedSplineAutoregressive(key, 4, (12,), num_bins=4)
    pairs.append((spline_maf, MaskedAutoregressive(spline_maf.made, T.Inverse(T.RQSpline(4)), "maf")))
    naf = NeuralAutoregressive(key, 4, (12,), num_components=2, mode="iaf")
    pairs.append((naf, MaskedAutoregressive(naf.made, T.DeepSigmoid(2), "iaf")))
    coupling = AffineCoupling(key, 4, hidden_dims=(8,))
    pairs.append((coupling, Coupling(coupling.mask, coupling.net, T.Affine("exp", 5.0))))
    both = jax.jit(lambda layer, v: (layer.forward_and_log_det(v), layer.inverse_and_log_det(v)))
    for named, generic in pairs:
        for a, b in zip(both(named, v), both(generic, v)):
            np.testing.assert_allclose(a[0], b[0], rtol=1e-10)
            np.testing.assert_allclose(a[1], b[1], rtol=1e-10)
    assert maf.transformer_params(v)[1].shape == (6, 4)  # (shift, log_scale), as the layer uses them


def test_numerical_inverse_in_a_coupling_reports_and_raises():
    from nf_ppl.roots import NumericalInverseError

    layer = Coupling.init(jax.random.PRNGKey(0), 4, T.DeepSigmoid(3, max_iter=1), out_scale=1.0)
    y = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (8, 4))
    _, _, info = layer.inverse_with_info(y)
    assert not bool(jnp.all(info.converged))
    with pytest.raises(NumericalInverseError, match="Coupling"):
        layer.inverse_and_log_det(y)
    x, _ = jax.jit(lambda l, v: l.inverse_and_log_det(v))(layer, y)  # under jit: NaN rows, no exception
    assert np.array_equal(np.isnan(np.asarray(x[:, 0])), ~np.asarray(info.converged))


def test_symbolic_twins_follow_the_transformer():
    pytest.importorskip("sympy")
    from cases_transformers import TwoSlope
    from symbolic.twins import nf_ppl_twin

    key = jax.random.PRNGKey(0)
    generic = MaskedAutoregressive.init(key, 3, T.Affine(), (8,), mode="iaf", out_scale=0.5)
    twin = nf_ppl_twin(generic)
    assert twin.check().passed
    with pytest.raises(TypeError, match="transformer TwoSlope"):
        nf_ppl_twin(MaskedAutoregressive.init(key, 3, TwoSlope(), (8,)))


@jax.jit
def _image_coupling_report(layer, x):
    y, log_det = layer.forward_and_log_det(x)
    x_back, log_det_inv = layer.inverse_and_log_det(y)
    jac = jax.jacfwd(lambda v: layer(v.reshape(x.shape[1:])).reshape(-1))(x[0].reshape(-1))
    return y, log_det, x_back, log_det_inv, jnp.linalg.slogdet(jac)


def test_image_coupling_takes_any_transformer():
    from nf_ppl.layers import ImageCoupling

    x = jax.random.normal(jax.random.PRNGKey(2), (2, 2, 2, 2))
    for mask in ("channel", "checkerboard"):
        layer = ImageCoupling(jax.random.PRNGKey(0), (2, 2, 2), T.RQSpline(4, 2.0), 3, mask=mask, parity=1)
        layer = jax.tree_util.tree_map(lambda a: a + 0.3 * jax.random.normal(jax.random.PRNGKey(1), a.shape), layer)
        y, log_det, x_back, log_det_inv, (sign, ref) = _image_coupling_report(layer, x)
        np.testing.assert_allclose(x_back, x, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(log_det_inv, log_det, rtol=1e-9)
        assert sign > 0
        np.testing.assert_allclose(log_det[0], ref, rtol=1e-8, atol=1e-10)
        assert not np.allclose(y, x)  # the spline moved the transformed pixels


def test_every_layer_with_a_random_start_is_built_by_init_with_a_key():
    """One construction rule: ``Layer.init(key, dim, ...)`` for a random start, ``Layer.init(dim, ...)``
    for a fixed one; the layers built by ``Layer(key, dim, ...)`` take the ``init`` spelling too."""
    from nf_ppl import layers as L

    key = jax.random.PRNGKey(0)
    for cls, shape in [(L.MaskedAffineAutoregressive, 3), (L.AffineCoupling, 4), (L.AdditiveCoupling, 4),
                       (L.SplineCoupling, 4), (L.MaskedSplineAutoregressive, 3), (L.NeuralAutoregressive, 3),
                       (L.BlockNeuralAutoregressive, 3), (L.ImageAffineCoupling, (2, 2, 2)), (L.LULinear, 3),
                       (L.Planar, 3), (L.Householder, 3)]:
        a, b = cls(key, shape) if cls not in (L.LULinear, L.Planar, L.Householder) else cls.init(key, shape), \
            cls.init(key, shape)
        assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b), cls.__name__
        assert all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    for cls in (L.ElementwiseAffine, L.ActNorm, L.SinhArcsinh, L.RationalQuadraticSpline):
        identity = cls.init(3)
        np.testing.assert_allclose(identity(jnp.arange(3.0)), jnp.arange(3.0), atol=1e-12)


def test_image_coupling_with_a_numerical_inverse_follows_the_layers_rule():
    """Eager: a failed solve raises naming the layer; under jit the failed images' values and log-dets are NaN."""
    from nf_ppl.layers import ImageCoupling
    from nf_ppl.roots import NumericalInverseError

    layer = ImageCoupling(jax.random.PRNGKey(0), (2, 2, 2), T.DeepSigmoid(3, max_iter=1), 3)
    layer = jax.tree_util.tree_map(lambda a: a + 0.5 * jax.random.normal(jax.random.PRNGKey(1), a.shape), layer)
    y = 3.0 * jax.random.normal(jax.random.PRNGKey(2), (6, 2, 2, 2))
    with pytest.raises(NumericalInverseError, match="ImageCoupling"):
        layer.inverse_and_log_det(y)
    x, log_det = jax.jit(lambda l, v: l.inverse_and_log_det(v))(layer, y)
    failed = np.isnan(np.asarray(log_det))
    assert failed.any()
    assert np.array_equal(np.isnan(np.asarray(x)).all(axis=(1, 2, 3)), failed)

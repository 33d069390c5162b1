"""Bad input gets a clear ValueError naming the argument and the expected shape or range."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nf_ppl
from nf_ppl import layers as L

KEY = jax.random.PRNGKey(0)


def test_wrong_event_size_for_flow_log_prob():
    flow = nf_ppl.maf(KEY, 3, num_layers=2, hidden_dims=(4,))
    with pytest.raises(ValueError, match=r"value must have shape \(\.\.\., 3\).*got shape \(5, 2\)"):
        flow.log_prob(jnp.zeros((5, 2)))


@pytest.mark.parametrize("layer", [
    L.ElementwiseAffine.init(3), L.LULinear.init(KEY, 3), L.Permutation.reverse(3),
    L.AffineCoupling(KEY, 3, hidden_dims=(4,)), L.MaskedAffineAutoregressive(KEY, 3, (4,)),
])
def test_wrong_event_size_for_layers(layer):
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        layer(jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 3\)"):
        layer.inv(jnp.zeros((2, 4)))


def test_mask_of_wrong_length_or_not_binary():
    with pytest.raises(ValueError, match=r"mask must have length 4 \(the event size\); got length 3"):
        L.AffineCoupling(KEY, 4, mask=(1, 0, 1))
    with pytest.raises(ValueError, match=r"mask must contain only 0/1"):
        L.AffineCoupling(KEY, 3, mask=(1, 2, 0))


def test_permutation_wrong_length_or_not_a_permutation():
    with pytest.raises(ValueError, match=r"perm must be a permutation of 0\.\.2"):
        L.Permutation((0, 0, 2))
    with pytest.raises(ValueError, match=r"perm must have length 3 \(the event size\); got length 2"):
        L.LULinear(jnp.zeros((3, 3)), jnp.zeros((3, 3)), jnp.zeros(3), jnp.zeros(3), perm=(1, 0))
    with pytest.raises(ValueError, match=r"ordering must have length 3"):
        nf_ppl.MADE.init(KEY, 3, (4,), ordering=(0, 1))
    with pytest.raises(ValueError, match=r"permutation must be 'reverse', 'random', 'auto' or None"):
        nf_ppl.maf(KEY, 3, permutation="shuffle")


def test_zero_or_negative_scale():
    with pytest.raises(ValueError, match=r"scale must be positive \(> 0\); got min value 0"):
        L.ElementwiseAffine.from_scale(jnp.zeros(2), jnp.array([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"scale must be positive"):
        L.ElementwiseAffine.from_scale(jnp.zeros(2), jnp.array([-1.0, 2.0]))
    with pytest.raises(ValueError, match=r"negative_slope must be positive"):
        L.LeakyReLU(0.0)
    with pytest.raises(ValueError, match=r"alpha must be positive"):
        L.ELU(-1.0)
    with pytest.raises(ValueError, match=r"log_scale_bound must be positive"):
        L.AffineCoupling(KEY, 3, log_scale_bound=0.0)
    with pytest.raises(ValueError, match=r"out_scale must be a non-negative number; got -0.1"):
        nf_ppl.iaf(KEY, 3, hidden_dims=(4,), out_scale=-0.1)


def test_made_hidden_sizes_too_small():
    with pytest.raises(ValueError, match=r"hidden_dims=\(8, 3\) too small for dim=5.*at least dim - 1 = 4 units"):
        nf_ppl.MADE.init(KEY, 5, (8, 3))
    with pytest.raises(ValueError, match=r"too small for dim=5"):
        nf_ppl.maf(KEY, 5, hidden_dims=(2,))


def test_conditional_flow_without_context():
    flow = nf_ppl.maf(KEY, 2, num_layers=2, hidden_dims=(4,), context_dim=3)
    with pytest.raises(ValueError, match=r"conditional \(context_dim=3\) and needs a context"):
        flow.log_prob(jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"needs a context"):
        flow.sample(KEY, (2,))
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., 3\)"):
        flow.condition(jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"not conditional"):
        nf_ppl.maf(KEY, 2, num_layers=1, hidden_dims=(4,)).condition(jnp.zeros(3))


def test_nan_or_inf_data_in_log_prob():
    flow = nf_ppl.realnvp(KEY, 2, num_layers=2, hidden_dims=(4,))
    data = np.zeros((6, 2))
    data[1, 0], data[4, 1] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"value contains NaN or inf in 2 of 6 rows \(flattened row indices: 1, 4\)"):
        flow.log_prob(data)


def test_bad_dims_and_layer_counts():
    with pytest.raises(ValueError, match=r"dim must be a positive int"):
        nf_ppl.maf(KEY, 0)
    with pytest.raises(ValueError, match=r"num_layers must be a positive int"):
        nf_ppl.iaf(KEY, 2, num_layers=0)
    with pytest.raises(ValueError, match=r"mode must be one of"):
        L.MaskedAffineAutoregressive(KEY, 2, (4,), mode="bnaf")
    with pytest.raises(ValueError, match=r"activation must be one of"):
        nf_ppl.MADE.init(KEY, 2, (4,), activation="sigmoidal")


HIDDEN_SEQUENCE = r"^hidden_dims must be a sequence of positive ints, e.g. \(64, 64\) or \(16,\); got "
HIDDEN_VALUES = r"^hidden_dims must be a sequence of positive ints, e.g. \(64, 64\), or \(\) for a linear conditioner; got "


@pytest.mark.parametrize("name", sorted(nf_ppl.builders()))
@pytest.mark.parametrize("options, error, message", [
    (dict(hidden_dims="16"), TypeError, HIDDEN_SEQUENCE + r"'16'$"),  # was read as (1, 6)
    (dict(hidden_dims=16), TypeError, HIDDEN_SEQUENCE + r"16$"),
    (dict(hidden_dims=(8.5,)), ValueError, HIDDEN_VALUES + r"\(8\.5,\)$"),  # was truncated to 8
    (dict(hidden_dims=(0,)), ValueError, HIDDEN_VALUES + r"\(0,\)$"),  # realnvp built a zero-width network
    (dict(hidden_dims=(-4,)), ValueError, HIDDEN_VALUES + r"\(-4,\)$"),
    (dict(context_dim=-1), ValueError, r"^context_dim must be an int >= 0 \(0: not conditional\); got -1$"),
    (dict(context_dim=1.5), ValueError, r"^context_dim must be an int >= 0 \(0: not conditional\); got 1\.5$"),
    (dict(dtype=jnp.int32), TypeError, r"^dtype must be a floating-point dtype \(float32, float64\); got .*int32.*$"),
    (dict(num_layers=True), ValueError, r"^num_layers must be a positive int; got True$"),
])
def test_every_builder_names_a_bad_shared_argument_before_building(name, options, error, message):
    with pytest.raises(error, match=message):
        nf_ppl.builders()[name](KEY, 3, **options)


@pytest.mark.parametrize("name", sorted(nf_ppl.builders()))
def test_every_builder_takes_numpy_integers_as_the_ints_they_are(name):
    build = nf_ppl.builders()[name]
    a = build(KEY, np.int64(3), num_layers=np.int64(2), hidden_dims=jnp.array([8, 8]), context_dim=np.int32(0))
    b = build(KEY, 3, num_layers=2, hidden_dims=(8, 8))
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    with pytest.raises(ValueError, match=r"^dim must be a positive int \(the event size\); got 2\.0$"):
        build(KEY, 2.0)


def test_a_flows_moments_and_entropy_say_how_to_estimate_them():
    flow = nf_ppl.maf(KEY, 2, num_layers=1, hidden_dims=(4,))
    with pytest.raises(NotImplementedError, match=r"^a flow's entropy has no closed form; estimate it from samples as "
                       r"-flow\.log_prob\(flow\.sample\(key, \(n,\)\)\)\.mean\(\) \(sample_and_log_prob does it in one pass\)$"):
        flow.entropy()
    with pytest.raises(NotImplementedError, match=r"^a flow's mean has no closed form; estimate it from samples$"):
        flow.mean


def test_sample_names_a_bad_key_or_sample_shape_and_takes_an_int_count():
    """A seed, a NumPy generator or a batch of keys as ``key`` was a bare AssertionError or a JAX trace."""
    flow = nf_ppl.maf(KEY, 3, num_layers=2, hidden_dims=(4,))
    expected = r"key must be one JAX PRNG key \(jax.random.PRNGKey\(seed\) or jax.random.key\(seed\)\); got "
    for key, got in ((0, "int"), (np.random.default_rng(0), "Generator"),
                     (jax.random.split(KEY, 3), r"an array of dtype uint32 and shape \(3, 2\)")):
        with pytest.raises(TypeError, match=expected + got + "$"):
            flow.sample(key, (2,))
    with pytest.raises(TypeError, match=r"sample_shape must be a tuple of non-negative ints \(e.g. \(1000,\)\) "
                                        r"or an int; got \(2.5,\)$"):
        flow.sample(KEY, (2.5,))
    assert flow.sample(KEY, 4).shape == (4, 3) and flow.sample(jax.random.key(1), (2,)).shape == (2, 3)
    draws = jax.jit(lambda k: flow.sample(k, (2,)))(KEY)  # a traced key passes the check
    assert np.array_equal(np.asarray(draws), np.asarray(flow.sample(KEY, (2,))))


def test_fit_names_bad_data_and_warns_when_rows_are_too_few_to_judge():
    import inference

    flow = inference.build_flow("maf", 0, 3, num_layers=2, hidden_dims=(8,))
    quick = dict(max_epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"^data must be real numbers; got dtype complex128$"):
        inference.fit(flow, np.ones((50, 3), complex), **quick)
    with pytest.raises(ValueError, match=r"^data must be an array of shape \(n, 3\) with rows of equal length; "
                                         r"NumPy could not make one \("):
        inference.fit(flow, [[1.0, 2.0, 3.0], [1.0, 2.0]], **quick)
    with pytest.raises(ValueError, match=r"^fit needs at least 2 training rows; got 1 \(after holding out 0 "
                                         r"for validation\)$"):
        inference.fit(flow, np.ones((1, 3)), **quick)
    rows = np.random.default_rng(0).normal(size=(40, 3))
    with pytest.warns(UserWarning, match=r"^fit: only 4 of the 40 rows are held out: too few to judge the fit"):
        inference.fit(flow, rows, **quick)
    with pytest.warns(UserWarning, match=r"^fit: 3 training rows for a 3-dimensional density: a flow can put its "
                                         r"mass on the rows themselves; a Gaussian is the safer model here$"):
        inference.fit(flow, rows[:3], val_data=rows[3:], **quick)
    with pytest.raises(TypeError, match=r"^build_flow: dim must be an int; got 3.0$"):
        inference.build_flow("maf", 0, 3.0)


def test_fit_warns_when_the_rows_lie_on_a_lower_dimensional_set():
    import inference

    flow = inference.build_flow("maf", 0, 3, num_layers=2, hidden_dims=(8,))
    quick = dict(max_epochs=1, batch_size=64, progress=False)
    rows = np.random.default_rng(0).normal(size=(200, 3))
    fix = r"drop it, or add noise of the data's resolution \(nf_ppl\.uniform_dequantize for integers\)$"
    with pytest.warns(UserWarning, match=r"^fit: 1 column\(s\) of the training rows are constant: 1 \(= 2\.5\); such "
                                         r"data have no density \(a flow squeezes them into a spike, and its "
                                         r"log-likelihood measures the squeeze, not the fit\): " + fix):
        inference.fit(flow, np.column_stack([rows[:, 0], np.full(200, 2.5), rows[:, 2]]), **quick)
    plane = (r"; such data have no density \(a flow squeezes the plane's normal into a spike, and its log-likelihood "
             r"measures the squeeze, not the fit\): drop the dependent column\(s\), or add noise of the data's "
             r"resolution$")
    with pytest.warns(UserWarning, match=r"^fit: the training rows lie on a lower-dimensional plane \(to 1e-4 of their "
                                         r"spread\): columns 0 and 2 are equal up to scale and shift" + plane):
        inference.fit(flow, np.column_stack([rows[:, :2], 3.0 - 0.3 * rows[:, 0]]), **quick)
    with pytest.warns(UserWarning, match=r"^fit: the training rows lie on a lower-dimensional plane \(to 1e-4 of their "
                                         r"spread\): a linear combination of columns \[0, 1, 2\] is constant" + plane):
        inference.fit(flow, np.column_stack([rows[:, :2], rows[:, 0] + 2 * rows[:, 1]]).astype(np.float32), **quick)
    near = np.column_stack([rows[:, :2], rows[:, 0] + 0.05 * rows[:, 2]])  # correlation 0.999: a density exists
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inference.fit(flow, near, **quick)
    outlier = rows.copy()
    outlier[7] = 1e20  # every column's sd is this row's: correlations near 1, but the other rows are not on a plane
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inference.fit(flow, outlier, **quick)  # (its float32 loss overflows: a RuntimeWarning says so)
    assert not [w for w in caught if "lower-dimensional" in str(w.message)]


def test_a_numpyro_transform_without_tree_flatten_is_refused_by_name_and_a_parameter_free_one_works():
    import numpyro.distributions as dist
    import numpyro.distributions.transforms as T
    from numpyro.distributions import constraints

    class Cube(T.Transform):  # written as NumPyro's docs show a transform: no tree_flatten
        domain = codomain = constraints.real_vector

        def __call__(self, x):
            return x ** 3

        def _inverse(self, y):
            return jnp.cbrt(y)

        def log_abs_det_jacobian(self, x, y, intermediates=None):
            return jnp.sum(jnp.log(3 * x ** 2), -1)

    class FreeCube(T.ParameterFreeTransform, Cube):
        pass

    message = (r"^transform Cube cannot be flattened as a JAX pytree \(NumPyro's Transform\.tree_flatten is not "
               r"implemented for it\), and a Flow passes its transform through jax\.jit: derive Cube from "
               r"numpyro\.distributions\.transforms\.ParameterFreeTransform if it has no parameters, or give it "
               r"tree_flatten/tree_unflatten; numpyro\.distributions\.TransformedDistribution takes it as it is$")
    for transform in (Cube(), L.Chain([L.LULinear.init(KEY, 2), Cube()])):
        with pytest.raises(TypeError, match=message):
            nf_ppl.Flow(transform, (2,))
    y = jnp.array([[1.0, 2.0], [-0.5, 0.3]])
    reference = dist.TransformedDistribution(dist.Normal(0.0, 1.0).expand([2]).to_event(1), FreeCube()).log_prob(y)
    np.testing.assert_allclose(nf_ppl.Flow(FreeCube(), (2,)).log_prob(y), reference, rtol=1e-6)

"""check_transform on NumPyro's transforms, and its ability to detect wrong twins."""

import jax
import jax.numpy as jnp
import pytest
import sympy as sp
from numpyro.distributions import transforms as T

from symbolic import check_transform, numpyro_twins, reference_log_abs_det

x = sp.Symbol("x", real=True)


@pytest.mark.parametrize("twin", numpyro_twins(), ids=lambda tw: tw.name)
def test_numpyro_transforms_match_their_twins(twin):
    report = twin.check()
    assert report.passed, str(report)
    assert report.n_points == 64


def test_tight_tolerance_in_float64(x64):
    report = check_transform(T.SigmoidTransform(), 1 / (1 + sp.exp(-x)), [x])
    assert report.dtype == "float64"
    assert report.rtol < 1e-7
    assert report.passed and report.forward_abs_err < 1e-12 and report.log_det_abs_err < 1e-12


def test_wrong_forward_fails():
    report = check_transform(T.ExpTransform(), sp.exp(2 * x), [x])
    assert not report.passed
    assert report.forward_rel_err > 0.1


def test_wrong_log_det_fails():
    report = check_transform(T.ExpTransform(), sp.exp(x), [x], log_abs_det=2 * x)
    assert not report.passed
    assert report.forward_abs_err < 1e-5 and report.log_det_abs_err > 0.1
    assert "FAIL" in str(report)


def test_values_substitute_generic_functions():
    s = sp.Function("s", real=True)
    x1, x2 = sp.symbols("x1 x2", real=True)
    forward = (x1, x2 * sp.exp(s(x1)))
    # an elementwise-affine-like numeric transform: y2 = x2 * exp(sin(x1))
    class Coupled(T.Transform):
        domain = codomain = T.constraints.real_vector

        def __call__(self, v):
            return jnp.stack([v[..., 0], v[..., 1] * jnp.exp(jnp.sin(v[..., 0]))], -1)

        def log_abs_det_jacobian(self, v, y, intermediates=None):
            return jnp.sin(v[..., 0])

        def tree_flatten(self):
            return (), ((), {})

    good = check_transform(Coupled(), forward, [x1, x2], values={s(x1): lambda v: jnp.sin(v[..., 0])})
    bad = check_transform(Coupled(), forward, [x1, x2], values={s(x1): lambda v: jnp.cos(v[..., 0])})
    assert good.passed and not bad.passed


def test_reference_log_det_of_sigmoid():
    ref = reference_log_abs_det(1 / (1 + sp.exp(-x)), [x])
    f = sp.lambdify(x, ref)
    for v in (-3.0, 0.0, 2.5):
        assert f(v) == pytest.approx(float(sp.log(sp.diff(1 / (1 + sp.exp(-x)), x)).subs(x, v)))


def test_bad_input():
    t = sp.Symbol("t", real=True)
    with pytest.raises(ValueError, match="not square"):
        check_transform(T.ExpTransform(), [sp.cos(t), sp.sin(t)], [t])
    s = sp.Function("s", real=True)
    with pytest.raises(ValueError, match="no numeric values given for"):
        check_transform(T.ExpTransform(), x * sp.exp(s(x)), [x], log_abs_det=0)
    with pytest.raises(TypeError, match="inputs"):
        check_transform(T.ExpTransform(), sp.exp(x))
    with pytest.raises(TypeError, match=r"^transform must be a NumPyro transform \(callable, with log_abs_det_jacobian\); "
                       r"got ufunc$"):
        check_transform(np.exp, sp.exp(x), [x])


# -- check_transform for anyone's transform ---------------------------------------------------------------


import numpy as np  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402


class Sinh(T.Transform):
    """y = sinh(x), written as a student would: a plain Transform subclass, not a pytree.

    Faults on purpose: ``inverse_offset`` (a wrong inverse), ``flip`` and ``offset`` of the log-det,
    ``at_output`` (log-det evaluated at y instead of x), ``tail`` (forward wrong only for |x| > 4).
    """

    domain = codomain = constraints.real

    def __init__(self, inverse_offset=0.0, flip=1.0, offset=0.0, at_output=False, tail=0.0):
        self.inverse_offset, self.flip, self.offset, self.at_output, self.tail = \
            inverse_offset, flip, offset, at_output, tail

    def __call__(self, x):
        return jnp.sinh(x) + self.tail * jnp.where(jnp.abs(x) > 4, x, 0.0)

    def _inverse(self, y):
        return jnp.arcsinh(y) + self.inverse_offset

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        at = y if self.at_output else x
        return self.flip * jnp.log(jnp.cosh(at)) + self.offset

    def tree_flatten(self):  # not a pytree, as NumPyro's own base Transform (NumPyro < 0.19 needs the method)
        raise NotImplementedError


def test_check_transform_works_for_a_non_pytree_transform():
    report = check_transform(Sinh(), sp.sinh(x), [x])
    assert report.passed and report.inverse_abs_err < 1e-5, str(report)
    assert "round trip max abs" in str(report)


@pytest.mark.parametrize("fault,what", [
    (dict(flip=-1.0), "log_det"), (dict(offset=0.5), "log_det"), (dict(at_output=True), "log_det"),
    (dict(inverse_offset=0.5), "inverse"), (dict(tail=0.01), "forward")])
def test_check_transform_catches_every_kind_of_fault(fault, what):
    report = check_transform(Sinh(**fault), sp.sinh(x), [x])
    assert not report.passed, str(report)
    errors = {"log_det": report.log_det_abs_err, "inverse": report.inverse_abs_err, "forward": report.forward_abs_err}
    assert errors[what] > 1e-3 and all(v < 1e-3 for k, v in errors.items() if k != what), str(report)


def test_a_tail_error_is_invisible_in_the_bulk_alone():
    bulk = jax.random.normal(jax.random.PRNGKey(3), (64,))
    bulk = bulk[jnp.abs(bulk) < 3.5]
    assert check_transform(Sinh(tail=0.01), sp.sinh(x), [x], points=bulk).passed
    assert not check_transform(Sinh(tail=0.01), sp.sinh(x), [x]).passed


def test_elementwise_transform_on_vectors_is_compared_per_coordinate():
    x1, x2 = sp.symbols("x1 x2", real=True)
    report = check_transform(T.ExpTransform(), [sp.exp(x1), sp.exp(x2)], [x1, x2])
    assert report.passed and "per coordinate" in str(report)
    assert report.log_det_abs_err < 1e-5  # each coordinate's log|d exp(x_i)/dx_i| = x_i, compared one by one
    with pytest.raises(ValueError, match=r"elementwise \(event_dim=0\) but the symbolic map is not"):
        check_transform(T.ExpTransform(), [sp.exp(x1), sp.exp(x2) * x1], [x1, x2])


def test_non_square_transform_checks_forward_and_round_trip_and_says_log_det_does_not_apply():
    """Stick-breaking of one coordinate: x -> (sigmoid(x), 1 - sigmoid(x)) on the 1-simplex."""
    sig = 1 / (1 + sp.exp(-x))
    report = check_transform(T.StickBreakingTransform(), [sig, 1 - sig], [x],
                             points=jnp.linspace(-3.0, 3.0, 16)[:, None])
    assert report.passed and not report.log_det_checked, str(report)
    assert "log|det J| not applicable (non-square map)" in str(report)
    assert not check_transform(T.StickBreakingTransform(), [sig, sig], [x],
                               points=jnp.linspace(-3.0, 3.0, 16)[:, None]).passed


def test_wrong_input_sizes_name_the_argument():
    x1, x2 = sp.symbols("x1 x2", real=True)
    with pytest.raises(ValueError, match=r"points must have shape \(n, 2\).*got shape \(5, 3\)"):
        check_transform(T.ExpTransform(), [sp.exp(x1), sp.exp(x2)], [x1, x2], points=np.ones((5, 3)))
    import nf_ppl
    layer = nf_ppl.layers.LULinear.init(jax.random.PRNGKey(0), 3)
    with pytest.raises(ValueError, match=r"LULinear could not be applied to points of shape \(64, 2\) \(the symbolic "
                                         r"map has 2 inputs\)"):
        check_transform(layer, [x1 + x2, x2], [x1, x2])


def test_check_transform_never_simplifies_a_log_det_it_does_not_need(x64):
    """A 3-D planar layer with float coefficients: simplifying its log-det ran for minutes."""
    import time

    import nf_ppl

    layer = nf_ppl.layers.Planar(jnp.array([0.5, -0.4, 0.2]), jnp.array([0.3, -0.2, 0.7]), jnp.array(0.1))
    u_hat = [float(v) for v in layer.u_hat()]
    xs = sp.symbols("x1:4", real=True)
    a = 0.3 * xs[0] - 0.2 * xs[1] + 0.7 * xs[2] + 0.1
    forward = [xi + ui * sp.tanh(a) for xi, ui in zip(xs, u_hat)]
    start = time.perf_counter()
    report = check_transform(layer, forward, list(xs))
    assert time.perf_counter() - start < 20 and report.passed, str(report)
    assert report.log_det_abs_err < 1e-10 and report.inverse_abs_err < 1e-8

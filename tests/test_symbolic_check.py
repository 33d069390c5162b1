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

"""Symbolic layer families: simplified determinants and Jacobian zero patterns."""

import pytest
import sympy as sp

from symbolic import layers


def fn(name, *args, **kw):
    return sp.Function(name, real=True, **kw)(*args)


def test_elementwise():
    L = layers.elementwise(3)
    x1, x2, x3 = L.inputs
    sigma = sp.Function("sigma", real=True)
    assert L.zero_pattern == "* 0 0\n0 * 0\n0 0 *"
    assert L.det == sp.diff(sigma(x1), x1) * sp.diff(sigma(x2), x2) * sp.diff(sigma(x3), x3)
    assert L.log_abs_det == sum(sp.log(sp.Abs(sp.diff(sigma(x), x))) for x in L.inputs)


def test_linear_det_is_leibniz():
    L = layers.linear(2)
    a11, a12, a21, a22 = sp.symbols("a11 a12 a21 a22", real=True)
    assert sp.expand(L.det - (a11 * a22 - a12 * a21)) == 0
    assert L.zero_pattern == "* *\n* *"
    assert layers.linear(3).matches_expected()


def test_lu_linear():
    L = layers.lu_linear(3)
    l1, l2, l3 = sp.symbols("l1 l2 l3", real=True)
    assert L.det == sp.exp(l1 + l2 + l3)
    assert L.log_abs_det == l1 + l2 + l3


def test_affine_coupling_2d():
    L = layers.affine_coupling(2)
    x1, x2 = L.inputs
    s, t = fn("s", x1), fn("t", x1)
    assert L.forward == (x1, x2 * sp.exp(s) + t)
    assert L.zero_pattern == "* 0\n* *"
    assert L.det == sp.exp(s)
    assert L.log_abs_det == s


def test_affine_coupling_4d_block_triangular():
    L = layers.affine_coupling(4, 2)
    x1, x2, _, _ = L.inputs
    s1, s2 = fn("s1", x1, x2), fn("s2", x1, x2)
    assert L.zero_pattern == "* 0 0 0\n0 * 0 0\n* * * 0\n* * 0 *"
    assert L.det == sp.exp(s1 + s2)
    assert L.log_abs_det == s1 + s2
    assert L.is_lower_triangular()


def test_additive_coupling_volume_preserving():
    assert layers.additive_coupling(3).det == 1
    assert layers.additive_coupling(3).log_abs_det == 0


@pytest.mark.parametrize("mode, sign", [("maf", -1), ("iaf", 1)])
def test_affine_autoregressive(mode, sign):
    L = layers.affine_autoregressive(3, mode)
    v1, v2, _ = L.inputs
    sig = [sp.Symbol("sigma1", positive=True), fn("sigma2", v1, positive=True),
           fn("sigma3", v1, v2, positive=True)]
    assert L.zero_pattern == "* 0 0\n* * 0\n* * *"
    assert sp.simplify(L.det - sp.Mul(*sig) ** sign) == 0
    assert sp.expand(L.log_abs_det - sign * sum(sp.log(s) for s in sig)) == 0


def test_permutation():
    L = layers.permutation((2, 0, 1))
    assert L.det == 1 and L.log_abs_det == 0
    assert L.zero_pattern == "0 0 *\n* 0 0\n0 * 0"
    odd = layers.permutation((1, 0, 2))
    assert odd.det == -1 and sp.Abs(odd.det) == 1


def test_composition_chain_rule():
    first, second = layers.affine_coupling(2, suffix="a"), layers.affine_coupling(2, suffix="b")
    C = layers.compose(first, layers.permutation((1, 0)), second)
    x1, x2 = C.inputs
    sa, ta = fn("sa", x1), fn("ta", x1)
    inner = x2 * sp.exp(sa) + ta
    assert sp.simplify(C.det - (-sp.exp(sa) * sp.exp(fn("sb", inner)))) == 0
    assert C.matches_expected()
    assert sp.simplify(C.log_abs_det - (sa + fn("sb", inner))) == 0


def test_composition_elementwise_then_linear():
    C = layers.compose(layers.elementwise(2), layers.linear(2))
    assert C.matches_expected()


def test_matches_expected_can_fail():
    L = layers.affine_coupling(2)
    L.expected_det = sp.exp(2 * fn("s", L.inputs[0]))
    assert not L.matches_expected()


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="not a permutation"):
        layers.permutation((0, 0, 1))
    with pytest.raises(ValueError, match="split k"):
        layers.affine_coupling(3, 3)
    with pytest.raises(ValueError, match="mode"):
        layers.affine_autoregressive(3, "flow")
    with pytest.raises(ValueError, match="cannot compose"):
        layers.compose(layers.linear(2), layers.elementwise(3))


def test_layer_summary_shows_pattern():
    text = layers.affine_coupling(2).summary()
    assert "zero pattern" in text and "* 0" in text

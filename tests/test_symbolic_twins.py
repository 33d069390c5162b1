"""nf_ppl layers against their SymPy twins at random parameters (skipped if a layer is missing)."""

import jax
import pytest
import sympy

from symbolic import nf_ppl_twin

nl = pytest.importorskip("nf_ppl.layers")


def _layer(name):
    cls = getattr(nl, name.split(":")[0], None)
    if cls is None:
        pytest.skip(f"nf_ppl.layers has no {name} yet")
    key = jax.random.PRNGKey(3)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    makers = {
        "ElementwiseAffine": lambda: cls(jax.random.normal(k1, (3,)), 0.5 * jax.random.normal(k2, (3,))),
        "LeakyReLU": lambda: cls(0.2),
        "ELU": lambda: cls(0.7),
        "Softplus": lambda: cls(),
        "Tanh": lambda: cls(),
        "SinhArcsinh": lambda: cls(jax.random.normal(k1, (3,)), 0.3 * jax.random.normal(k2, (3,))),
        "AffineCoupling": lambda: cls(key, 4, hidden_dims=(8,)),
        "AffineCoupling:mask": lambda: cls(key, 3, mask=(False, True, False), hidden_dims=(8,)),
        "AdditiveCoupling": lambda: cls(key, 3, hidden_dims=(8,)),
        "MaskedAffineAutoregressive:maf": lambda: cls(key, 3, hidden_dims=(8,), mode="maf"),
        "MaskedAffineAutoregressive:iaf": lambda: cls(key, 3, hidden_dims=(8,), mode="iaf"),
        "LULinear": lambda: cls(jax.random.normal(k1, (3, 3)), jax.random.normal(k2, (3, 3)),
                                0.5 * jax.random.normal(k3, (3,)), jax.random.normal(k4, (3,)), perm=(1, 2, 0)),
        "Permutation": lambda: cls((2, 0, 1)),
        # random knots; the default check points (standard normal) fall both inside [-B, B] and in the tails
        "RationalQuadraticSpline": lambda: cls(jax.random.normal(k1, (2, 5)), jax.random.normal(k2, (2, 5)),
                                               jax.random.normal(k3, (2, 4)), tail_bound=1.5),
    }
    return makers[name]()


NAMES = ["ElementwiseAffine", "LeakyReLU", "ELU", "Softplus", "Tanh", "SinhArcsinh", "AffineCoupling",
         "AffineCoupling:mask", "AdditiveCoupling", "MaskedAffineAutoregressive:maf",
         "MaskedAffineAutoregressive:iaf", "LULinear", "Permutation", "RationalQuadraticSpline"]


@pytest.mark.parametrize("name", NAMES)
def test_layer_matches_twin(name):
    report = nf_ppl_twin(_layer(name)).check(n_points=32)
    assert report.passed, str(report)


def test_twin_detects_a_wrong_conditioner():
    twin = nf_ppl_twin(_layer("AffineCoupling"))
    key = next(k for k in twin.values if str(k).startswith("s1"))
    right = twin.values[key]
    twin.values[key] = lambda x: right(x) + 0.05
    assert not twin.check(n_points=32).passed


def test_twin_detects_a_wrong_layer_parameter():
    layer = _layer("SinhArcsinh")
    twin = nf_ppl_twin(layer)
    twin.transform = nl.SinhArcsinh(layer.skew + 0.01, layer.log_tailweight)
    assert not twin.check(n_points=32).passed


def test_unknown_layer_is_a_type_error():
    with pytest.raises(TypeError, match="no symbolic twin"):
        nf_ppl_twin(object())


def test_a_subclass_gets_its_parents_twin_and_a_new_class_can_register_one():
    from symbolic import register_twin
    from symbolic.twins import _elementwise, _twins_by_class

    y = jax.random.normal(jax.random.PRNGKey(5), (200, 3)) * 2.0 + 1.0
    act = nl.ActNorm.from_data(y)  # ActNorm subclasses ElementwiseAffine: same map, found along the MRO
    twin = nf_ppl_twin(act)
    assert twin.name == "ActNorm" and twin.check(n_points=32).passed

    class MyTanh(nl.Tanh):  # a user's subclass: the parent's twin until it registers its own
        pass

    assert nf_ppl_twin(MyTanh(), dim=2).check(n_points=16).passed
    with pytest.raises(TypeError, match="register_twin needs a class and a callable"):
        register_twin(MyTanh, None)
    register_twin(MyTanh, _elementwise(lambda layer, xs: tuple(sympy.sinh(x) for x in xs), False))
    try:  # its own (deliberately wrong) twin now takes precedence over Tanh's, and the check sees it
        twin = nf_ppl_twin(MyTanh(), dim=2)
        assert twin.name == "MyTanh" and not twin.check(n_points=16).passed
    finally:
        _twins_by_class().pop(MyTanh)
    assert nf_ppl_twin(MyTanh(), dim=2).check(n_points=16).passed

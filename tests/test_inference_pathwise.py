"""Sticking-the-landing flows (inference.pathwise): same values, path-only gradients, zero variance at q = p."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inference
import nf_ppl
from inference.pathwise import PathwiseFlow, pathwise

pytestmark = pytest.mark.usefixtures("x64")


def _perturbed(flow, key, size=0.3):
    leaves, treedef = jax.tree_util.tree_flatten(flow)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [a + size * jax.random.normal(k, a.shape, a.dtype)
                                                  for k, a in zip(keys, leaves)])


FLOWS = {
    "iaf": lambda k: nf_ppl.iaf(k, 4, num_layers=2, hidden_dims=(8, 8), dtype=jnp.float64),
    "realnvp": lambda k: nf_ppl.realnvp(k, 4, num_layers=2, hidden_dims=(8,), dtype=jnp.float64),
}


def _max_abs(tree):
    return max(float(jnp.max(jnp.abs(a))) for a in jax.tree_util.tree_leaves(tree))


def _target(z):
    return -0.5 * jnp.sum((z - 1.0) ** 2 / jnp.arange(1.0, z.shape[-1] + 1), -1)


@pytest.mark.parametrize("name, dense", [("iaf", True), ("iaf", False), ("realnvp", True)])
def test_values_agree_and_gradient_is_the_path_term(name, dense, monkeypatch):
    """Reference: the ELBO with log q evaluated through the inverse of a stop-gradient copy of the flow."""
    if not dense:
        monkeypatch.setattr(PathwiseFlow, "dense_max", 0)  # forces the inverse-pass route
    key = jax.random.PRNGKey(0)
    flow = _perturbed(FLOWS[name](key), jax.random.PRNGKey(1))
    k = jax.random.PRNGKey(2)

    def stl(f):
        q = pathwise(f)
        z, inter = q.sample_with_intermediates(k, (5,))
        return jnp.mean(_target(z) - q.log_prob(z, inter))

    def reference(f):
        z = f.sample(k, (5,))
        return jnp.mean(_target(z) - jax.lax.stop_gradient(f).log_prob(z))

    def plain(f):
        z, inter = f.sample_with_intermediates(k, (5,))
        return jnp.mean(_target(z) - f.log_prob(z, inter))

    z, inter = flow.sample_with_intermediates(k, (5,))
    np.testing.assert_allclose(pathwise(flow).log_prob(z, inter), flow.log_prob(z), rtol=1e-12, atol=1e-12)
    g_stl, g_ref, g_plain = jax.jit(lambda f: tuple(jax.grad(e)(f) for e in (stl, reference, plain)))(flow)
    diff = jax.tree_util.tree_map(lambda a, b: a - b, g_stl, g_ref)
    assert _max_abs(diff) < 1e-10 * max(1.0, _max_abs(g_ref))
    assert _max_abs(jax.tree_util.tree_map(lambda a, b: a - b, g_stl, g_plain)) > 1e-3  # the score term is gone


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_gradient_vanishes_for_every_draw_when_the_guide_is_exact(name):
    """q = p: each single-draw STL gradient is exactly zero; the plain estimator's is not."""
    p = _perturbed(FLOWS[name](jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    target = jax.lax.stop_gradient(p)

    def single_draw(f, key, use_stl):
        q = pathwise(f) if use_stl else f
        z, inter = q.sample_with_intermediates(key, ())
        return target.log_prob(z) - q.log_prob(z, inter)

    keys = jax.random.split(jax.random.PRNGKey(10), 4)
    grads = jax.jit(jax.vmap(lambda k: (jax.grad(single_draw)(p, k, True), jax.grad(single_draw)(p, k, False))))
    g_stl, g_plain = grads(keys)
    for i in range(len(keys)):
        assert _max_abs(jax.tree_util.tree_map(lambda a: a[i], g_stl)) < 1e-10
        assert _max_abs(jax.tree_util.tree_map(lambda a: a[i], g_plain)) > 1e-3


def test_pathwise_keeps_the_leaves_and_autoflow_get_flow_is_plain():
    flow = FLOWS["iaf"](jax.random.PRNGKey(0))
    q = pathwise(flow)
    assert isinstance(q, PathwiseFlow) and isinstance(q, nf_ppl.Flow)
    for a, b in zip(jax.tree_util.tree_leaves(q), jax.tree_util.tree_leaves(flow)):
        assert a is b
    with pytest.raises(TypeError, match="nf_ppl.Flow"):
        pathwise("iaf")



def test_pathwise_needs_a_flow():
    import numpyro.distributions as dist

    with pytest.raises(TypeError, match=r"flow must be an nf_ppl.Flow; got Normal"):
        pathwise(dist.Normal(0.0, 1.0))


def test_only_a_differentiated_log_density_builds_the_jacobian():
    """The surrogate's value comes from the forward pass: a program that only evaluates it has no linear
    solve (the J^{-T} score's), one that differentiates it in the point has one, and its gradient in the
    point is grad_z log q (autodiff through the inverse pass, x64)."""
    flow = _perturbed(FLOWS["iaf"](jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    q = pathwise(flow)
    z, inter = q.sample_with_intermediates(jax.random.PRNGKey(2), (3,))

    def solves(fun, *args):  # LU factorisations (jnp.linalg.solve's) in the traced program
        return len(re.findall(r"= lu ", str(jax.make_jaxpr(fun)(*args))))

    value = lambda z: jnp.sum(q.log_prob(z, inter))
    assert solves(value, z) == 0
    assert solves(jax.grad(value), z) > 0
    exact = jax.grad(lambda z: jnp.sum(flow.log_prob(z)))(z)
    np.testing.assert_allclose(jax.grad(value)(z), exact, rtol=1e-8, atol=1e-10)

"""SymbolicTransform: compiled maps against autodiff, pytree behaviour, NumPyro inference."""

import math
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import sympy as sp
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO

from symbolic import InverseNotFoundWarning, SymbolicTransform

x = sp.Symbol("x", real=True)
r, t = sp.symbols("r t")


def polar():
    u, v = sp.symbols("u v")
    inverse = [sp.sqrt(u**2 + v**2), sp.Mod(sp.atan2(v, u), 2 * sp.pi)]  # given: saves the sympy.solve time
    return SymbolicTransform([r * sp.cos(t), r * sp.sin(t)], [r, t], support={r: (0, 1), t: (0, 2 * sp.pi)},
                             outputs=[u, v], inverse=inverse)


def test_one_dimensional_against_closed_form(x64):
    tr = SymbolicTransform(sp.sinh(x), x)
    z = jnp.linspace(-2.0, 2.0, 7)
    assert jnp.allclose(tr(z), jnp.sinh(z), atol=1e-12)
    assert jnp.allclose(tr.inv(tr(z)), z, atol=1e-12)
    grad = jax.vmap(jax.grad(lambda v: tr(v)))(z)
    assert jnp.allclose(tr.log_abs_det_jacobian(z, tr(z)), jnp.log(jnp.abs(grad)), atol=1e-12)
    assert tr.sign == 1.0
    assert tr.domain is dist.constraints.real


def test_polar_against_autodiff(x64):
    tr = polar()
    pts = jnp.array([[0.3, 0.5], [0.9, 4.0], [0.5, 2.5]])
    y = tr(pts)
    assert jnp.allclose(y, jnp.stack([pts[:, 0] * jnp.cos(pts[:, 1]), pts[:, 0] * jnp.sin(pts[:, 1])], -1))
    jac = jax.vmap(jax.jacfwd(lambda p: tr(p)))(pts)
    assert jnp.allclose(tr.log_abs_det_jacobian(pts, y), jnp.log(jnp.abs(jnp.linalg.det(jac))), atol=1e-12)
    assert jnp.allclose(tr.inv(y), pts, atol=1e-12)
    assert bool(jnp.all(tr.codomain(y)))
    assert not bool(tr.codomain(jnp.array([0.9, 0.9])))


def test_pytree_and_jit():
    a = sp.Symbol("a", positive=True)
    b = sp.Symbol("b", real=True)
    tr = SymbolicTransform(a * x + b, x, params={a: 2.0, b: 1.0})
    leaves, treedef = jax.tree_util.tree_flatten(tr)
    assert len(leaves) == 2
    hash(treedef)  # auxiliary data is hashable
    rebuilt = jax.tree_util.tree_unflatten(treedef, [3.0, -1.0])
    assert float(rebuilt(2.0)) == 5.0
    f = jax.jit(lambda tr, z: tr(z) + tr.log_abs_det_jacobian(z, None))
    assert float(f(tr, jnp.asarray(1.0))) == pytest.approx(3.0 + math.log(2.0), rel=1e-6)
    g = jax.grad(lambda p: jax.tree_util.tree_unflatten(treedef, p)(2.0))([2.0, 1.0])
    assert [float(v) for v in g] == [2.0, 1.0]
    assert tr == jax.tree_util.tree_unflatten(treedef, leaves)
    assert pickle.loads(pickle.dumps(tr.spec)) == tr.spec


def test_transformed_distribution_log_prob_is_lognormal():
    tr = SymbolicTransform(sp.exp(x), x)
    d = dist.TransformedDistribution(dist.Normal(0.0, 1.0), tr)
    v = jnp.array([0.2, 1.0, 3.5])
    assert jnp.allclose(d.log_prob(v), dist.LogNormal(0.0, 1.0).log_prob(v), atol=1e-5)
    assert d.support is tr.codomain or isinstance(d.support, type(dist.constraints.positive))


def test_nuts_samples_match_closed_form_moments():
    tr = SymbolicTransform(2 * x + 1, x)

    def model():
        numpyro.sample("y", dist.TransformedDistribution(dist.Normal(0.0, 1.0), tr))

    mcmc = MCMC(NUTS(model), num_warmup=200, num_samples=200, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0))
    y = np.asarray(mcmc.get_samples()["y"])
    assert abs(y.mean() - 1.0) < 0.45 and abs(y.std() - 2.0) < 0.45


def test_svi_learns_parameters_of_the_map():
    a = sp.Symbol("a", real=True)
    b = sp.Symbol("b", real=True)
    data = 3.0 + 0.5 * jax.random.normal(jax.random.PRNGKey(1), (400,))

    def model():
        numpyro.sample("obs", dist.Normal(0.0, 1.0), obs=None)

    def target_model(data):
        loc = numpyro.param("loc", 0.0)
        log_scale = numpyro.param("log_scale", 0.0)
        tr = SymbolicTransform(sp.exp(a) * x + b, x, params={a: log_scale, b: loc})
        with numpyro.plate("n", data.shape[0]):
            numpyro.sample("y", dist.TransformedDistribution(dist.Normal(0.0, 1.0), tr), obs=data)

    svi = SVI(target_model, lambda data: None, numpyro.optim.Adam(0.1), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(2), 250, data, progress_bar=False)
    assert result.params["loc"] == pytest.approx(float(data.mean()), abs=0.05)
    assert math.exp(result.params["log_scale"]) == pytest.approx(float(data.std()), abs=0.05)


def test_not_injective_is_rejected():
    with pytest.raises(ValueError, match="not injective"):
        SymbolicTransform(x**2, x)
    xp = sp.Symbol("x", positive=True)
    tr = SymbolicTransform(xp**2, xp)
    assert tr.domain is dist.constraints.positive
    assert float(tr.inv(jnp.asarray(9.0))) == pytest.approx(3.0)


def test_non_square_is_rejected():
    with pytest.raises(ValueError, match="square Jacobian.*not square"):
        SymbolicTransform([sp.cos(t), sp.sin(t)], [t])


def test_unsolvable_inverse_warns_and_inverse_raises():
    with pytest.warns(InverseNotFoundWarning, match="no inverse"):
        tr = SymbolicTransform(x + sp.sin(x) / 2, x)
    assert float(tr(jnp.asarray(0.0))) == 0.0
    with pytest.raises(ValueError, match="pass inverse="):
        tr.inv(jnp.asarray(1.0))
    y = sp.Symbol("y")
    cube = SymbolicTransform(sp.sign(x) * sp.Abs(x) ** sp.Rational(1, 3), x, inverse=y**3, outputs=[y])
    assert float(cube.inv(jnp.asarray(-2.0))) == pytest.approx(-8.0)


def test_sign_of_monotone_maps_on_their_support_and_cdf():
    """-log x on (0, 1) is decreasing: Uniform(0, 1) pushed through it is Exponential(1), cdf included."""
    u = sp.Symbol("u")
    neg_log = SymbolicTransform(-sp.log(u), u, support={u: (0, 1)})
    assert neg_log.sign == -1.0
    d = dist.TransformedDistribution(dist.Uniform(0.0, 1.0), neg_log)
    for v in (0.1, 1.0, 3.0):
        assert float(d.cdf(v)) == pytest.approx(1 - np.exp(-v), rel=1e-5)
    a = sp.Symbol("a")
    assert SymbolicTransform(a * u + 1, u, params={a: -2.0}).sign == -1.0  # decided with the parameter's value
    assert SymbolicTransform(a * u + 1, u, params={a: 0.5}).sign == 1.0
    assert SymbolicTransform(sp.exp(u), u).sign == 1.0


def test_codomain_of_a_symbolic_transform_is_a_nuts_latent():
    """Uniform (r, t) on [0, 1] x [0, 2 pi] through polar coordinates, sampled by NUTS on the unit disc:
    r is uniform, so E[|p|^2] = E[r^2] = 1/3 and E[p] = 0."""
    from numpyro.distributions.transforms import biject_to

    from symbolic.transform import SymPyRegion

    r, t = sp.symbols("r t", positive=True)
    polar = SymbolicTransform([r * sp.cos(t), r * sp.sin(t)], [r, t], support={r: (0, 1), t: (0, 2 * sp.pi)})
    base = dist.Uniform(jnp.array([0.0, 0.0]), jnp.array([1.0, 2 * np.pi])).to_event(1)

    def model():
        numpyro.sample("p", dist.TransformedDistribution(base, polar))

    mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=2000, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0))
    p = np.asarray(mcmc.get_samples()["p"])
    r2 = (p ** 2).sum(-1)
    assert np.all(r2 <= 1.0) and r2.mean() == pytest.approx(1 / 3, abs=0.03)
    np.testing.assert_allclose(p.mean(0), 0.0, atol=0.06)
    bare = SymPyRegion(polar.spec.codomain, polar.spec.outputs, (0.0, 0.0))
    with pytest.raises(NotImplementedError, match="biject_to has no rule for SymPyRegion.*not the codomain of a "
                                                  "SymbolicTransform"):
        biject_to(bare)

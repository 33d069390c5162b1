"""A Pathfinder-style Gaussian to start a flow guide from.

Flow guides learn the shape of a posterior well but can take thousands of Adam steps just to
travel to it when the posterior is far from the initial point and badly scaled (regressions on
unstandardised predictors, large data sets with tiny posterior sds).  Quasi-Newton optimisation
covers that distance in tens of steps.  :func:`gaussian_path_start` follows Pathfinder (Zhang,
Carpenter, Gelman and Vehtari 2022) in spirit:

1. run L-BFGS on ``-log p(z)`` from the initial point ``z_0`` for ``max_iters`` iterations;
2. at each iterate ``z_k`` take the Laplace Gaussian ``N(z_k, H_k^{-1})`` with ``H_k`` the dense
   Hessian of ``-log p`` whose eigenvalues are replaced by their absolute values (floored), so a
   saddle or a region of negative curvature still gives a proper Gaussian;
3. estimate each Gaussian's ELBO with the same ``num_draws`` standard-normal draws (common
   random numbers make the comparison fair) and keep the best; the plain start
   ``N(z_0, init_scale^2 I)`` is a candidate too, so the result is never worse by this estimate.

Unlike the MAP or a Laplace approximation at the mode, the ELBO choice stops early on posteriors
whose mode is degenerate (hierarchical scales going to zero, Neal's funnel): there the best
Gaussian lies part of the way along the path.  Pathfinder itself uses the L-BFGS inverse-Hessian
factors instead of dense Hessians; dense Hessians cost ``D`` Hessian-vector products per iterate
and ``AutoFlow`` uses them up to ``AutoFlow.warm_start_max_dim`` latent coordinates.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["GaussianStart", "gaussian_path_start"]


class GaussianStart(NamedTuple):
    """The chosen Gaussian ``N(loc, scale_tril scale_tril^T)``, its ELBO estimate and its L-BFGS iteration (-1: plain start)."""

    loc: jax.Array
    scale_tril: jax.Array
    elbo: jax.Array
    iteration: jax.Array


def _lbfgs_path(neg_log_density, x0, max_iters):
    """The L-BFGS iterates ``(max_iters + 1, D)`` from ``x0``; a non-finite step leaves the point where it was."""
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(neg_log_density)

    def step(carry, _):
        x, state = carry
        value, grad = value_and_grad(x, state=state)
        updates, new_state = opt.update(grad, state, x, value=value, grad=grad, value_fn=neg_log_density)
        new_x = optax.apply_updates(x, updates)
        ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(new_x))
        return (jnp.where(ok, new_x, x), new_state), jnp.where(ok, new_x, x)

    _, xs = jax.lax.scan(step, (x0, opt.init(x0)), None, length=max_iters)
    return jnp.concatenate([x0[None], xs])


def _gaussian_elbo(log_density, loc, scale_tril, eps):
    dim = loc.shape[-1]
    z = loc + eps @ scale_tril.T
    entropy = 0.5 * dim * (1.0 + jnp.log(2.0 * jnp.pi)) + jnp.sum(jnp.log(jnp.diagonal(scale_tril)))
    elbo = jnp.mean(jax.vmap(log_density)(z)) + entropy
    return jnp.where(jnp.isfinite(elbo), elbo, -jnp.inf)


def _laplace(log_density, x, floor):
    """``(x, cholesky(H^{-1}))`` with ``H`` the Hessian of ``-log p`` at ``x``, eigenvalues made positive."""
    hess = -jax.hessian(log_density)(x)
    hess = 0.5 * (hess + hess.T)
    lam, vec = jnp.linalg.eigh(hess)
    lam = jnp.clip(jnp.abs(lam), floor, 1.0 / floor)
    cov = (vec / lam) @ vec.T
    cov = 0.5 * (cov + cov.T)
    return jnp.linalg.cholesky(cov)


def gaussian_path_start(log_density: Callable, x0, key, *, max_iters: int = 100, num_draws: int = 32,
                        init_scale: float = 0.1, eigenvalue_floor: float = 1e-8) -> GaussianStart:
    """The best Gaussian (by estimated ELBO) along an L-BFGS path on ``log_density`` from ``x0``.

    ``log_density`` maps a latent vector of shape ``(D,)`` to ``log p`` (unnormalised); the whole
    function is traceable (use it under ``jax.jit``).  See the module docstring for the method.
    """
    x0 = jnp.asarray(x0)
    dim = x0.shape[-1]
    xs = _lbfgs_path(lambda x: -log_density(x), x0, int(max_iters))
    eps = jax.random.normal(key, (int(num_draws), dim), x0.dtype)
    trils = jax.vmap(lambda x: _laplace(log_density, x, eigenvalue_floor))(xs)
    trils = jnp.where(jnp.all(jnp.isfinite(trils), axis=(-2, -1), keepdims=True), trils, jnp.nan)
    elbos = jax.vmap(lambda x, c: _gaussian_elbo(log_density, x, c, eps))(xs, trils)
    plain_tril = init_scale * jnp.eye(dim, dtype=x0.dtype)
    plain_elbo = _gaussian_elbo(log_density, x0, plain_tril, eps)
    best = jnp.argmax(elbos)
    use_path = elbos[best] > plain_elbo
    return GaussianStart(loc=jnp.where(use_path, xs[best], x0),
                         scale_tril=jnp.where(use_path, trils[best], plain_tril),
                         elbo=jnp.where(use_path, elbos[best], plain_elbo),
                         iteration=jnp.where(use_path, best, -1))

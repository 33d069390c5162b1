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

:func:`multi_path_start` runs several such paths at once from dispersed points (multi-path
Pathfinder), groups their Gaussians into modes, estimates each mode's mass by importance sampling
and starts from the best path or from a broad Gaussian that covers every mode found.

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
import numpy as np
import optax

from ._background import BackgroundCompiled

__all__ = ["GaussianStart", "PathsStart", "dispersed_points", "gaussian_path_start", "multi_path_start"]


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
    xs = _lbfgs_path(lambda x: -log_density(x), x0, int(max_iters))
    return _best_gaussian_on_path(log_density, xs, key, int(num_draws), init_scale, eigenvalue_floor)


def _best_gaussian_on_path(log_density, xs, key, num_draws, init_scale, eigenvalue_floor) -> GaussianStart:
    """Steps 2 and 3 of the module docstring for the iterates ``xs`` ``(K + 1, D)`` of one path."""
    x0, dim = xs[0], xs.shape[-1]
    eps = jax.random.normal(key, (num_draws, dim), xs.dtype)
    trils = jax.vmap(lambda x: _laplace(log_density, x, eigenvalue_floor))(xs)
    trils = jnp.where(jnp.all(jnp.isfinite(trils), axis=(-2, -1), keepdims=True), trils, jnp.nan)
    elbos = jax.vmap(lambda x, c: _gaussian_elbo(log_density, x, c, eps))(xs, trils)
    plain_tril = init_scale * jnp.eye(dim, dtype=xs.dtype)
    plain_elbo = _gaussian_elbo(log_density, x0, plain_tril, eps)
    best = jnp.argmax(elbos)
    use_path = elbos[best] > plain_elbo
    return GaussianStart(loc=jnp.where(use_path, xs[best], x0),
                         scale_tril=jnp.where(use_path, trils[best], plain_tril),
                         elbo=jnp.where(use_path, elbos[best], plain_elbo),
                         iteration=jnp.where(use_path, best, -1))


class PathsStart(NamedTuple):
    """What :func:`multi_path_start` found: the Gaussian to start from, and each path's result.

    ``start``: the chosen Gaussian (the best path's, or the pooled one); ``paths``: every path's
    best Gaussian (fields with a leading axis of length ``L``); ``mode_of_path``: the mode each path
    ended in (``-1``: the path never left its plain start or ended more than ``MODE_ELBO_GAP`` nats
    below the best); ``mode_locs``/``mode_weights``: one location per distinct mode and its
    importance-sampling estimate of that mode's posterior mass (weights sum to 1)."""

    start: GaussianStart
    paths: GaussianStart
    mode_of_path: np.ndarray
    mode_locs: np.ndarray
    mode_weights: np.ndarray

    @property
    def num_modes(self) -> int:
        return int(len(self.mode_locs))


MODE_ELBO_GAP = 20.0  # nats below the best path's ELBO beyond which a path's end is not reported as a mode
POOLINGS = ("best", "resample")


def dispersed_points(x0, key, num_paths: int, radius: float = 2.0):
    """``x0`` and ``num_paths - 1`` points uniform in ``(-radius, radius)^D`` (NumPyro's ``init_to_uniform``
    rule in unconstrained space): the initial points of :func:`multi_path_start`."""
    x0 = jnp.asarray(x0)
    others = jax.random.uniform(key, (int(num_paths) - 1,) + x0.shape, x0.dtype, -radius, radius)
    return jnp.concatenate([x0[None], others])


def _paths(log_density, x0s, key, max_iters, num_draws, init_scale, eigenvalue_floor):
    """Every path's best Gaussian (fields with a leading axis ``L``), as two programs compiled in the
    background: the L-BFGS paths, then the Gaussians along them, whose input shape is known before the
    paths run, so the second is traced while the first compiles (about 0.3 s of a 3 s warm start on
    a small model; XLA's CPU compiler already uses every core, so the compilations themselves gain
    little from overlapping)."""
    lbfgs = jax.vmap(lambda x0: _lbfgs_path(lambda x: -log_density(x), x0, max_iters))
    gaussians = jax.vmap(lambda xs: _best_gaussian_on_path(log_density, xs, key, num_draws, init_scale,
                                                          eigenvalue_floor))
    iterates = jax.ShapeDtypeStruct((x0s.shape[0], max_iters + 1, x0s.shape[1]), x0s.dtype)
    lbfgs, gaussians = BackgroundCompiled(lbfgs, x0s), BackgroundCompiled(gaussians, iterates)
    return gaussians(lbfgs(x0s))


def _group_modes(paths: GaussianStart):
    """Group the paths' Gaussians into modes: two are one mode when either location lies within
    ``sqrt(D) + 3`` whitened units of the other's Gaussian (a typical draw is ``sqrt(D)`` away)."""
    locs, trils = np.asarray(paths.loc, float), np.asarray(paths.scale_tril, float)
    elbos, iters = np.asarray(paths.elbo, float), np.asarray(paths.iteration)
    num, dim = locs.shape
    finite = np.isfinite(elbos) & np.all(np.isfinite(trils), axis=(1, 2)) & np.all(np.isfinite(locs), axis=1)
    top = np.max(elbos[finite]) if finite.any() else -np.inf
    usable = finite & (iters >= 0) & (elbos >= top - MODE_ELBO_GAP)
    mode = -np.ones(num, int)
    reps = []  # the best path of each mode
    for i in np.argsort(-np.where(usable, elbos, -np.inf)):
        if not usable[i]:
            continue
        for m, r in enumerate(reps):
            d_ir = np.linalg.norm(np.linalg.solve(trils[r], locs[i] - locs[r]))
            d_ri = np.linalg.norm(np.linalg.solve(trils[i], locs[r] - locs[i]))
            if min(d_ir, d_ri) < np.sqrt(dim) + 3.0:
                mode[i] = m
                break
        else:
            mode[i] = len(reps)
            reps.append(i)
    return mode, reps


def _pool(log_density, paths: GaussianStart, reps, key, num_draws):
    """Importance-sample the equal mixture of the modes' Gaussians; return the weighted moments as a Gaussian
    and each mode's share of the weight (its posterior mass, estimated)."""
    locs = jnp.stack([paths.loc[r] for r in reps])
    trils = jnp.stack([paths.scale_tril[r] for r in reps])
    num, dim = locs.shape
    eps = jax.random.normal(key, (num, num_draws, dim), locs.dtype)
    z = (locs[:, None, :] + jnp.einsum("mij,mnj->mni", trils, eps)).reshape(num * num_draws, dim)

    def log_normal(x, loc, tril):
        w = jax.scipy.linalg.solve_triangular(tril, (x - loc).T, lower=True)
        return (-0.5 * jnp.sum(w ** 2, 0) - jnp.sum(jnp.log(jnp.diagonal(tril)))
                - 0.5 * dim * jnp.log(2 * jnp.pi))

    log_q = jax.nn.logsumexp(jax.vmap(lambda l, t: log_normal(z, l, t))(locs, trils), 0) - jnp.log(num)
    log_w = jax.vmap(log_density)(z) - log_q
    log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
    w = jax.nn.softmax(log_w)
    mean = w @ z
    centred = z - mean
    cov = (centred * w[:, None]).T @ centred + 1e-6 * jnp.eye(dim, dtype=z.dtype)
    mode_weights = jnp.sum(w.reshape(num, num_draws), 1)
    tril = jnp.linalg.cholesky(0.5 * (cov + cov.T))
    elbo = _gaussian_elbo(log_density, mean, tril, eps[0])
    return GaussianStart(mean, tril, elbo, jnp.asarray(-2)), mode_weights


def multi_path_start(log_density: Callable, x0s, key, *, pooling: str = "best", max_iters: int = 100,
                     num_draws: int = 32, init_scale: float = 0.1, eigenvalue_floor: float = 1e-8,
                     num_pool_draws: int = 512) -> PathsStart:
    """Several L-BFGS paths at once (``vmap``), one from each row of ``x0s`` (``(L, D)``; see
    :func:`dispersed_points`), as in multi-path Pathfinder (Zhang et al. 2022).

    Every path gives its best Gaussian (:func:`gaussian_path_start`, same draws for all, so their
    ELBO estimates compare); the paths' Gaussians are grouped into modes (``PathsStart.mode_of_path``).
    ``pooling="best"`` starts from the path with the best ELBO estimate (never worse, by that
    estimate, than the single path from ``x0s[0]``); ``pooling="resample"`` with more than one mode
    starts from the moments of the importance-weighted draws of the modes' equal mixture, a broad
    Gaussian that covers every mode found (for mass-covering objectives, which keep the modes a
    guide starts with; an ELBO-trained guide drops all but one again).  With one mode both give the best path.
    Not traceable as a whole (the grouping runs on the host); each stage is jitted.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
    x0s = jnp.asarray(x0s)
    if x0s.ndim != 2:
        raise ValueError(f"x0s must have shape (num_paths, D); got shape {x0s.shape}")
    k_path, k_pool = key, jax.random.fold_in(key, 1)  # path draws as gaussian_path_start's with the same key
    paths = _paths(log_density, x0s, k_path, int(max_iters), int(num_draws), init_scale, eigenvalue_floor)
    mode, reps = _group_modes(paths)
    elbos = np.where(np.isfinite(np.asarray(paths.elbo)), np.asarray(paths.elbo), -np.inf)
    best = int(np.argmax(elbos))
    start = jax.tree_util.tree_map(lambda a: a[best], paths)
    weights = np.ones(1)
    if len(reps) > 1:
        pooled, weights = jax.jit(lambda: _pool(log_density, paths, reps, k_pool, int(num_pool_draws)))()
        weights = np.asarray(weights)
        if pooling == "resample":
            start = pooled
    locs = np.asarray(paths.loc)[reps] if reps else np.asarray(start.loc)[None]
    return PathsStart(start, paths, mode, locs, weights)

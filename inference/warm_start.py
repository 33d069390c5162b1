"""A Pathfinder-style Gaussian to start a flow guide from.

Flow guides learn the shape of a posterior well but can take thousands of Adam steps just to
travel to it when the posterior is far from the initial point and badly scaled (regressions on
unstandardised predictors, large data sets with tiny posterior sds).  Quasi-Newton optimisation
covers that distance in tens of steps.  :func:`gaussian_path_start` follows Pathfinder (Zhang,
Carpenter, Gelman and Vehtari 2022) in spirit:

1. run L-BFGS on ``-log p(z)`` from the initial point ``z_0`` for at most ``max_iters`` iterations
   (on the host, calling the jitted gradient: a traced L-BFGS loop compiles for seconds);
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

__all__ = ["GaussianStart", "PathsStart", "dispersed_points", "gaussian_path_start", "multi_path_start"]


class GaussianStart(NamedTuple):
    """The chosen Gaussian ``N(loc, scale_tril scale_tril^T)``, its ELBO estimate and its L-BFGS iteration (-1: plain start)."""

    loc: jax.Array
    scale_tril: jax.Array
    elbo: jax.Array
    iteration: jax.Array


LBFGS_MEMORY = 10  # (s, y) pairs kept per path
ARMIJO_SLOPE = 1e-4  # sufficient decrease: f(x + t d) <= f(x) + ARMIJO_SLOPE * t * g.d
MAX_BACKTRACKS = 40  # halvings of the step before a path stops
SETTLED_EPS = 10  # a path stops once a step lowers -log p by at most this many eps (of its dtype) of |log p|


def _two_loop(grad, pairs):
    """The L-BFGS direction ``-H grad`` from the stored ``(s, y)`` pairs (oldest first; Nocedal and Wright,
    Algorithm 7.4), with ``H_0 = (s.y / y.y) I`` from the newest pair."""
    q, alphas = grad.copy(), []
    for s, y in reversed(pairs):
        alpha = s @ q / (s @ y)
        q -= alpha * y
        alphas.append(alpha)
    if pairs:
        s, y = pairs[-1]
        q *= s @ y / (y @ y)
    for (s, y), alpha in zip(pairs, reversed(alphas)):
        q += (alpha - y @ q / (s @ y)) * s
    return -q


def _backtrack(evaluate, x, value, grad, direction, active):
    """One Armijo line search per active path from the full step, all paths' trials scored together:
    ``(x, value, grad)`` at each path's accepted point (unchanged where none was accepted) and which paths moved."""
    step = np.ones(len(x))
    slope = np.sum(grad * direction, -1)
    searching = active & (slope < 0)
    new_x, new_value, new_grad = x.copy(), value.copy(), grad.copy()
    for _ in range(MAX_BACKTRACKS):
        if not searching.any():
            break
        trial = np.where(searching[:, None], x + step[:, None] * direction, x)
        trial_value, trial_grad = evaluate(trial)
        accept = searching & (trial_value <= value + ARMIJO_SLOPE * step * slope)
        new_x[accept], new_value[accept], new_grad[accept] = trial[accept], trial_value[accept], trial_grad[accept]
        searching &= ~accept
        step = np.where(searching, 0.5 * step, step)
    moved = active & (slope < 0) & ~searching
    return new_x, new_value, new_grad, moved


def _lbfgs_paths(neg_log_density, x0s, max_iters):
    """The L-BFGS iterates ``(L, max_iters + 1, D)`` from each row of ``x0s`` (``(L, D)``).

    The iterations run on the host, in float64, for all paths at once: each trial point of every path
    is scored by one call of the jitted, ``vmap``-ed value and gradient of ``neg_log_density`` (the
    only compiled program; a traced L-BFGS loop with its line search compiled for seconds, most of
    the warm start's time on posteriordb's small models, bench/RESULTS.md).  Directions come from
    the two-loop recursion (memory ``LBFGS_MEMORY``; the first direction is the negative gradient)
    and every line search starts at the full step, as optax's L-BFGS does; it halves the step until
    the value drops by the Armijo condition, a non-finite value or gradient counting as no drop, so
    no iterate leaves the region where the log-density is finite.  A path stays where it is (the rest
    of its rows repeat its last iterate) once its start is not finite, its line search fails (boxed
    in by non-finite values) or a step lowers ``-log p`` by no more than rounding
    (``SETTLED_EPS`` eps of its dtype, relative): at its optimum.
    """
    if isinstance(x0s, jax.core.Tracer):
        raise TypeError("the warm start's L-BFGS paths run on the host: call gaussian_path_start/multi_path_start "
                        "outside jax.jit, jax.vmap and jax.grad (its initial point was traced)")
    dtype = jnp.result_type(x0s)
    value_and_grad = jax.jit(jax.vmap(jax.value_and_grad(neg_log_density)))

    def evaluate(x):
        value, grad = value_and_grad(jnp.asarray(x, dtype))
        value, grad = np.asarray(value, np.float64), np.asarray(grad, np.float64)
        ok = np.isfinite(value) & np.all(np.isfinite(grad), -1)
        return np.where(ok, value, np.inf), np.where(ok[:, None], grad, 0.0)

    x = np.asarray(x0s, np.float64)
    value, grad = evaluate(x)
    active = np.isfinite(value)
    pairs = [[] for _ in x]
    path = [x]
    for _ in range(int(max_iters)):
        direction = np.stack([_two_loop(g, p) if a else np.zeros_like(g) for g, p, a in zip(grad, pairs, active)])
        new_x, new_value, new_grad, moved = _backtrack(evaluate, x, value, grad, direction, active)
        drop = np.where(moved, value, 0.0) - np.where(moved, new_value, 0.0)  # finite where moved
        settled = drop <= SETTLED_EPS * np.finfo(dtype).eps * np.maximum(1.0, np.abs(np.where(moved, value, 0.0)))
        active &= moved & ~settled  # no acceptable step, or a drop at rounding: the path stays from here
        for i in np.flatnonzero(moved):
            s_i, y_i = new_x[i] - x[i], new_grad[i] - grad[i]
            if s_i @ y_i > 1e-10 * np.linalg.norm(s_i) * np.linalg.norm(y_i):
                pairs[i] = (pairs[i] + [(s_i, y_i)])[-LBFGS_MEMORY:]
        x, value, grad = new_x, new_value, new_grad
        path.append(x)
    return jnp.asarray(np.stack(path, 1), dtype)


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


def _best_gaussian(log_density, xs, x0, eps, init_scale, eigenvalue_floor):
    """Of the Laplace Gaussians at the iterates ``xs`` (``(K, D)``) and the plain start
    ``N(x0, init_scale^2 I)``, the one with the best ELBO estimate over the draws ``eps``."""
    dim = x0.shape[-1]
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


def gaussian_path_start(log_density: Callable, x0, key, *, max_iters: int = 100, num_draws: int = 32,
                        init_scale: float = 0.1, eigenvalue_floor: float = 1e-8) -> GaussianStart:
    """The best Gaussian (by estimated ELBO) along an L-BFGS path on ``log_density`` from ``x0``.

    ``log_density`` maps a latent vector of shape ``(D,)`` to ``log p`` (unnormalised) and must be
    traceable; the L-BFGS iterations run on the host (see :func:`_lbfgs_paths`), so call this
    outside ``jax.jit`` (a traced ``x0`` gets a ``TypeError``).  See the module docstring for the method.
    """
    x0 = jnp.asarray(x0)
    if x0.ndim != 1:
        raise ValueError(f"x0 must have shape (D,); got shape {x0.shape}")
    paths = _paths(log_density, x0[None], key, max_iters, num_draws, init_scale, eigenvalue_floor)
    return jax.tree_util.tree_map(lambda a: a[0], paths)


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
    """Each row of ``x0s``'s best Gaussian along its L-BFGS path (fields with a leading axis ``L``), all
    scored with the same ``num_draws`` standard-normal draws."""
    xs = _lbfgs_paths(lambda x: -log_density(x), x0s, int(max_iters))

    def choose(xs, x0s, key):
        eps = jax.random.normal(key, (int(num_draws), x0s.shape[-1]), x0s.dtype)
        return jax.vmap(lambda x, x0: _best_gaussian(log_density, x, x0, eps, init_scale, eigenvalue_floor))(xs, x0s)

    return jax.jit(choose)(xs, x0s, key)


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
    Not traceable (the L-BFGS iterations and the grouping run on the host); the Gaussians' choice is jitted.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
    x0s = jnp.asarray(x0s)
    if x0s.ndim != 2:
        raise ValueError(f"x0s must have shape (num_paths, D); got shape {x0s.shape}")
    k_path, k_pool = key, jax.random.fold_in(key, 1)  # path draws as gaussian_path_start's with the same key
    paths = _paths(log_density, x0s, k_path, max_iters, num_draws, init_scale, eigenvalue_floor)
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

"""Benchmark: nf-ppl's ``nsf`` against flowjax's masked autoregressive spline flow, and BNAF inverse time.

For each data set both flows get the same architecture (layers, MADE hidden sizes, spline bins
on the same interval), the same optimiser (Adam, same learning rate), the same minibatches and
number of steps; 20% of the training set is held out for validation and each flow keeps its
best-validation parameters (checked every 50 steps; each 50-step chunk is one jitted
``lax.scan``).  Reported: test mean log-likelihood (nats per example, higher is better),
parameter count, wall time of the first training run (compile + run) and of a second identical
run (run only).  Then the wall time of
the numerical inverse of a ``bnaf`` layer at batch 4096, d = 16 (compile and steady state), its
iterations, largest residual and convergence.

    /work/venv/bin/python bench/bench_expressive.py [--quick]

Prints Markdown tables.  Float32 throughout (JAX's default).  ``--quick`` is a smoke run: the same
tables with 1 layer, hidden (32,), 4 bins, one chunk of steps on two moons only (breast_cancer takes
the same code path with another loader), and the BNAF inverse at batch 256, d = 4.
"""

from __future__ import annotations

import argparse
import functools
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import paramax
from flowjax.bijections import RationalQuadraticSpline as FjSpline
from flowjax.distributions import Normal as FjNormal
from flowjax.flows import masked_autoregressive_flow
from sklearn.datasets import load_breast_cancer, make_moons

from nf_ppl import flows as E


# -----------------------------------------------------------------------------------------
# data
# -----------------------------------------------------------------------------------------
def _standardise(train, test):
    mu, sd = train.mean(0), train.std(0) + 1e-8
    return ((train - mu) / sd).astype(np.float32), ((test - mu) / sd).astype(np.float32)


def moons(seed=0):
    x, _ = make_moons(3000, noise=0.05, random_state=seed)
    return _standardise(x[:2000], x[2000:])


def breast_cancer(seed=0):
    x = load_breast_cancer().data
    idx = np.random.default_rng(seed).permutation(len(x))
    n_train = int(0.8 * len(x))
    return _standardise(x[idx[:n_train]], x[idx[n_train:]])


# -----------------------------------------------------------------------------------------
# a common training loop: params pytree + negative log-likelihood, early stopping on validation
# -----------------------------------------------------------------------------------------
CHUNK = 50  # steps between validation checks


@functools.lru_cache(maxsize=None)  # one jitted trainer per (nll, batch, lr): the second run is run-only
def make_trainer(nll, batch_size, lr):
    """Jitted ``CHUNK`` Adam steps on random minibatches, then the validation loss."""
    opt = optax.adam(lr)

    @jax.jit
    def chunk(params, state, data, val, key):
        idx = jax.random.randint(key, (CHUNK, batch_size), 0, data.shape[0])

        def step(carry, i):
            p, s = carry
            loss, grads = jax.value_and_grad(nll)(p, data[i])
            updates, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (params, state), _ = jax.lax.scan(step, (params, state), idx)
        return params, state, nll(params, val)

    return opt, chunk


def fit(nll, params, data, val, key, steps, batch_size, lr):
    """Train ``steps`` steps; return the parameters with the best validation loss (checked every CHUNK)."""
    opt, chunk = make_trainer(nll, batch_size, lr)
    state, best, best_loss = opt.init(params), params, float(nll(params, val))
    for k in jax.random.split(key, steps // CHUNK):
        params, state, loss = chunk(params, state, data, val, k)
        loss = float(loss)
        if loss < best_loss:
            best, best_loss = params, loss
    return best


def timed_fit(nll, params, data, val, key, steps, batch_size, lr):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fit(nll, params, data, val, key, steps, batch_size, lr))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(fit(nll, params, data, val, key, steps, batch_size, lr))  # compiled now
    return out, first, time.perf_counter() - t0


def n_params(tree):
    return int(sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(tree)))


def run_fit(name, train_x, test_x, *, layers, hidden, bins, bound, steps, batch, lr, seed=0):
    dim = train_x.shape[1]
    key = jax.random.PRNGKey(seed)
    k_ours, k_fj, k_data = jax.random.split(key, 3)
    n_val = len(train_x) // 5
    data, val, test = jnp.asarray(train_x[n_val:]), jnp.asarray(train_x[:n_val]), jnp.asarray(test_x)
    rows = []

    # nf-ppl nsf: MAF direction (one-pass density), a random permutation after each layer (as flowjax)
    flow = E.nsf(k_ours, dim, num_layers=layers, hidden_dims=hidden, num_bins=bins, tail_bound=bound,
                 activation="relu", permutation="random")
    ours_nll = jax.jit(lambda f, x: -jnp.mean(f.log_prob(x)))
    fitted, first, second = timed_fit(ours_nll, flow, data, val, k_data, steps, batch, lr)
    rows.append((name, "nf_ppl.nsf", n_params(flow), -float(ours_nll(fitted, test)), first, second))

    # flowjax MAF with a rational-quadratic spline transformer (knots = inner knots = bins - 1)
    fj = masked_autoregressive_flow(
        k_fj, base_dist=FjNormal(jnp.zeros(dim)), transformer=FjSpline(knots=bins - 1, interval=bound),
        flow_layers=layers, nn_width=hidden[0], nn_depth=len(hidden), nn_activation=jax.nn.relu, invert=True)
    params, static = eqx.partition(fj, eqx.is_inexact_array, is_leaf=lambda l: isinstance(l, paramax.NonTrainable))
    fj_nll = jax.jit(lambda p, x: -jnp.mean(paramax.unwrap(eqx.combine(p, static)).log_prob(x)))
    fitted, first, second = timed_fit(fj_nll, params, data, val, k_data, steps, batch, lr)
    rows.append((name, "flowjax MAF + RQ spline", n_params(params), -float(fj_nll(fitted, test)), first, second))
    return rows


# -----------------------------------------------------------------------------------------
# BNAF numerical inverse
# -----------------------------------------------------------------------------------------
def bnaf_inverse(batch=4096, dim=16, hidden=(8, 8), seed=0):
    from nf_ppl.layers.neural import BlockNeuralAutoregressive

    key = jax.random.PRNGKey(seed)
    layer = BlockNeuralAutoregressive(key, dim, hidden, mode="iaf")
    leaves, treedef = jax.tree_util.tree_flatten(layer)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    layer = jax.tree_util.tree_unflatten(
        treedef, [a + 0.3 * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])
    x = 1.5 * jax.random.normal(jax.random.PRNGKey(seed + 2), (batch, dim))
    y = jax.jit(layer.__call__)(x)
    inverse = jax.jit(lambda l, v: l.inverse_with_info(v))
    t0 = time.perf_counter()
    jax.block_until_ready(inverse(layer, y))
    first = time.perf_counter() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        x_back, _, info = jax.block_until_ready(inverse(layer, y))
        times.append(time.perf_counter() - t0)
    forward = jax.jit(lambda l, v: l.forward_and_log_det(v))
    jax.block_until_ready(forward(layer, x))
    t0 = time.perf_counter()
    jax.block_until_ready(forward(layer, x))
    t_fwd = time.perf_counter() - t0
    return dict(first=first, steady=min(times), forward=t_fwd, err=float(jnp.max(jnp.abs(x_back - x))),
                iters_max=int(jnp.max(info.iterations)), iters_mean=float(jnp.mean(info.iterations)),
                residual=float(jnp.max(info.residual)), converged=float(jnp.mean(info.converged)),
                params=n_params(layer))


# per data set: the architecture and budget of the full run; --quick shrinks them (QUICK)
FITS = (
    ("two moons (d=2)", moons, dict(layers=4, hidden=(32, 32), bins=8, bound=3.0, steps=2000, batch=256, lr=3e-3)),
    ("breast_cancer (d=30)", breast_cancer,
     dict(layers=4, hidden=(64, 64), bins=8, bound=4.0, steps=1000, batch=128, lr=1e-3)),
)
QUICK = dict(layers=1, hidden=(32,), bins=4, steps=CHUNK, batch=64)  # MADE needs hidden >= d - 1
BNAF = dict(batch=4096, dim=16)
BNAF_QUICK = dict(batch=256, dim=4)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny flows, one chunk of steps")
    args = parser.parse_args()
    rows = []
    for name, load, kw in FITS[:1] if args.quick else FITS:
        rows += run_fit(name, *load(), **(dict(kw, **QUICK) if args.quick else kw))
    print(f"\nDensity estimation ({jax.default_backend()}, float32; same layers/hidden/bins/steps/batch/lr; "
          "best-validation parameters)\n")
    print("| data | flow | params | test log-lik (nats) | train wall s (compile+run) | train wall s (run) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, flow, n, ll, first, second in rows:
        print(f"| {name} | {flow} | {n} | {ll:.3f} | {first:.1f} | {second:.1f} |")
    size = BNAF_QUICK if args.quick else BNAF
    b = bnaf_inverse(**size)
    print(f"\nBNAF numerical inverse (one layer, block sizes (8, 8), batch {size['batch']}, d = {size['dim']}, "
          "float32)\n")
    print("| first call s (compile+run) | steady s | forward s | max abs err | iterations max / mean "
          "| max residual | converged |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {b['first']:.2f} | {b['steady']:.3f} | {b['forward']:.4f} | {b['err']:.2e} | "
          f"{b['iters_max']} / {b['iters_mean']:.1f} | {b['residual']:.2e} | {b['converged']:.3f} |")


if __name__ == "__main__":
    main()

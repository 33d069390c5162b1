"""Benchmark: autoregressive density models on sklearn's digits, and CRF forward throughput.

Run:  /work/venv/bin/python bench/bench_autoregressive.py  [--steps N] [--quick]

Digits: 1797 images, 8x8 = 64 pixels, 17 grey levels (0..16); fixed random split 1400 train /
397 held out.  Reported on the held-out set:

* per-pixel categorical baseline (independent pixels, add-one smoothing);
* categorical MADE (``conditional="categorical"``, ``num_levels=17``) on the integer levels:
  exact nats per image and bits per dimension; once with the natural ordering, once trained
  order-agnostically over 8 random orderings (twice the steps) and scored with the exact
  ensemble density (uniform mixture over the 8 orderings);
* mixture-of-Gaussians MADE on uniformly dequantised data ``y = (x + u) / 17`` in ``[0, 1]^64``
  (``u ~ U[0, 1)^64``), and the unconditional MVN baseline (closed-form maximum likelihood, and
  Adam-trained) on the same data.  For these, ``nats`` is ``-log p(y)`` on ``[0, 1]^64`` averaged
  over 4 dequantisation draws, and the discrete-equivalent bits/dim is the dequantisation bound
  ``(-E_u log p(y) + 64 log 17) / (64 ln 2) >= -log2 P(x) / 64``, comparable with the
  categorical numbers.

CRF: ``nf_ppl.crf.crf_forward`` (log-partition by the forward algorithm), batch 256, length 128,
32 labels, both forward methods, float32; median of repeated timed calls after compilation.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from nf_ppl.autoregressive import autoregressive_model, bits_per_dim, random_orderings  # noqa: E402
from nf_ppl.crf import crf_forward  # noqa: E402
from nf_ppl.mvn import ConditionalMVN, conditional_mvn  # noqa: E402

LEVELS, DIM = 17, 64
LN2 = math.log(2.0)


def train(model, data, *, steps, batch_size, lr, seed=0, orderings=None):
    """Adam (cosine-decayed) on the mean NLL of random minibatches, one jitted ``lax.scan``.

    With ``orderings`` the loss is order-agnostic: one ordering of the ensemble per minibatch
    (``AutoregressiveModel.order_agnostic_log_prob``).
    """
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05))
    data = jnp.asarray(data)

    def nll(m, batch, k):
        if orderings is None:
            return -m.log_prob(batch).mean()
        return -m.order_agnostic_log_prob(batch, k, orderings).mean()

    @jax.jit
    def fit(m, key):
        def body(carry, k):
            m, st = carry
            kb, ko = jax.random.split(k)
            batch = data[jax.random.randint(kb, (batch_size,), 0, data.shape[0])]
            loss, g = jax.value_and_grad(nll)(m, batch, ko)
            u, st = opt.update(g, st, m)
            return (optax.apply_updates(m, u), st), loss

        (m, _), losses = jax.lax.scan(body, (m, opt.init(m)), jax.random.split(key, steps))
        return m, losses

    t0 = time.perf_counter()
    model, losses = fit(model, jax.random.PRNGKey(seed))
    jax.block_until_ready(losses)
    return model, time.perf_counter() - t0, np.asarray(losses)


def dequantise(x, seed):
    u = np.random.default_rng(seed).uniform(size=x.shape)
    return ((x + u) / LEVELS).astype(np.float32)


def continuous_report(name, model, test, seconds, extra=""):
    nats = np.mean([float(-model.log_prob(dequantise(test, 100 + r)).mean()) for r in range(4)])
    bpd = (nats + DIM * math.log(LEVELS)) / (DIM * LN2)
    print(f"{name:<34s} nats/image {nats:9.2f} (on [0,1]^64)  discrete-equiv bits/dim {bpd:.3f}"
          f"   train {seconds:6.1f} s{extra}")


def crf_bench(repeats):
    b, n, v = 256, 128, 32
    rng = np.random.default_rng(0)
    e = jnp.asarray(rng.normal(size=(b, n, v)), jnp.float32)
    t = jnp.asarray(0.5 * rng.normal(size=(v, v)), jnp.float32)
    a = jnp.asarray(rng.normal(size=v), jnp.float32)
    z = jnp.asarray(rng.normal(size=v), jnp.float32)
    print(f"\nCRF forward algorithm (nf_ppl.crf.crf_forward), batch {b}, length {n}, {v} labels, float32")
    ref = None
    for method in ("matmul", "logsumexp"):
        f = jax.jit(lambda e, t, a, z, method=method: crf_forward(e, t, a, z, method=method))
        out = f(e, t, a, z).block_until_ready()
        ref = out if ref is None else ref
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(e, t, a, z).block_until_ready()
            times.append(time.perf_counter() - t0)
        med = float(np.median(times))
        print(f"  method={method:<10s} median {med * 1e3:8.2f} ms/call   {b / med:10.0f} sequences/s   "
              f"{b * n / med / 1e6:7.2f} M positions/s   max|logZ - logZ_matmul| {float(jnp.max(jnp.abs(out - ref))):.2e}")
    grad = jax.jit(jax.grad(lambda e: crf_forward(e, t, a, z).sum()))
    grad(e).block_until_ready()
    times = []
    for _ in range(max(3, repeats // 2)):
        t0 = time.perf_counter()
        grad(e).block_until_ready()
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    print(f"  grad of log Z (matmul, = marginals) median {med * 1e3:8.2f} ms/call   {b / med:10.0f} sequences/s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500, help="Adam steps per model")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="few steps (smoke run)")
    args = ap.parse_args()
    steps = 100 if args.quick else args.steps
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {os.cpu_count()} CPUs; steps={steps}, "
          f"batch={args.batch_size}")

    x = load_digits().data.astype(np.int32)
    perm = np.random.default_rng(0).permutation(len(x))
    tr, te = x[perm[:1400]], x[perm[1400:]]
    print(f"sklearn digits: {DIM} dims, {LEVELS} levels, train {len(tr)}, held-out {len(te)}\n")

    counts = np.stack([np.bincount(tr[:, j], minlength=LEVELS) for j in range(DIM)]) + 1.0
    probs = counts / counts.sum(1, keepdims=True)
    base_nats = float(-np.log(probs[np.arange(DIM), te]).sum(1).mean())
    print(f"{'per-pixel categorical (add-one)':<34s} nats/image {base_nats:9.2f}  bits/dim {base_nats / (DIM * LN2):.3f}")

    key = jax.random.PRNGKey(0)
    m = autoregressive_model(key, DIM, conditional="categorical", num_levels=LEVELS, hidden_dims=(256,))
    m, sec, _ = train(m, tr, steps=steps, batch_size=args.batch_size, lr=3e-3)
    nats = float(-m.log_prob(te).mean())
    print(f"{'categorical MADE (256,)':<34s} nats/image {nats:9.2f}  bits/dim {float(m.bits_per_dim(te).mean()):.3f}"
          f"   train {sec:6.1f} s  (train bits/dim {float(m.bits_per_dim(tr).mean()):.3f})")

    orders = random_orderings(jax.random.PRNGKey(5), DIM, 8)
    m = autoregressive_model(key, DIM, conditional="categorical", num_levels=LEVELS, hidden_dims=(256,))
    m, sec, _ = train(m, tr, steps=2 * steps, batch_size=args.batch_size, lr=3e-3, orderings=orders)
    nats = float(-m.ensemble_log_prob(te, orders).mean())
    one = float(m.with_ordering(orders[0]).bits_per_dim(te).mean())
    print(f"{'categorical MADE, 8 orderings':<34s} nats/image {nats:9.2f}  bits/dim {bits_per_dim(-nats, DIM):.3f}"
          f"   train {sec:6.1f} s  (order-agnostic, {2 * steps} steps; ensemble density; "
          f"one ordering alone {one:.3f})")

    deq_tr = dequantise(tr, 1)
    deq_train = np.concatenate([deq_tr, dequantise(tr, 2)])  # two dequantisation draws per image
    mix = autoregressive_model(key, DIM, conditional="mixture", num_components=5, hidden_dims=(256,))
    mix, sec, _ = train(mix, deq_train, steps=steps, batch_size=args.batch_size, lr=2e-3)
    continuous_report("mixture MADE (K=5, (256,))", mix, te, sec)

    t0 = time.perf_counter()
    mle = ConditionalMVN.fit(deq_train)
    continuous_report("MVN baseline (closed-form MLE)", mle, te, time.perf_counter() - t0)
    mvn = conditional_mvn(key, DIM)
    mvn, sec, _ = train(mvn, deq_train, steps=steps, batch_size=args.batch_size, lr=1e-2)
    continuous_report("MVN baseline (Adam)", mvn, te, sec)

    crf_bench(repeats=5 if args.quick else 10)


if __name__ == "__main__":
    main()

"""Benchmark: autoregressive density models on sklearn's digits, and CRF forward throughput.

Run:  /work/venv/bin/python bench/bench_autoregressive.py  [--steps N] [--quick]

Prints Markdown tables.  ``--quick`` is a smoke run: the same tables with 10 steps, hidden (64,),
2 orderings, and a CRF of batch 16, length 8, 4 labels.

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

CRF: ``nf_ppl.models.crf.crf_forward`` (log-partition by the forward algorithm), batch 256, length 128,
32 labels, both forward methods, float32; median of repeated timed calls after compilation.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from nf_ppl.models.autoregressive_density import autoregressive_model, bits_per_dim, random_orderings  # noqa: E402
from nf_ppl.models.crf import crf_forward  # noqa: E402
from nf_ppl.models.mvn import ConditionalMVN, conditional_mvn  # noqa: E402
from common import table  # noqa: E402

LEVELS, DIM = 17, 64
LN2 = math.log(2.0)
# sizes of the full run and of the --quick smoke run (MADE needs hidden >= DIM - 1)
FULL = dict(hidden=(256,), orderings=8, crf=(256, 128, 32), repeats=10)
QUICK = dict(hidden=(64,), orderings=2, crf=(16, 8, 4), repeats=1, steps=10)


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


def continuous_row(name, model, test, seconds, note=""):
    nats = np.mean([float(-model.log_prob(dequantise(test, 100 + r)).mean()) for r in range(4)])
    bpd = (nats + DIM * math.log(LEVELS)) / (DIM * LN2)
    return name, f"{nats:.2f} on [0,1]^64", f"{bpd:.3f} (discrete-equivalent)", f"{seconds:.1f} s", note


def digits_rows(tr, te, steps, batch_size, hidden, n_orderings):
    counts = np.stack([np.bincount(tr[:, j], minlength=LEVELS) for j in range(DIM)]) + 1.0
    probs = counts / counts.sum(1, keepdims=True)
    base_nats = float(-np.log(probs[np.arange(DIM), te]).sum(1).mean())
    rows = [("per-pixel categorical (add-one)", f"{base_nats:.2f}", f"{base_nats / (DIM * LN2):.3f}", "-", "")]

    key = jax.random.PRNGKey(0)
    m = autoregressive_model(key, DIM, conditional="categorical", num_levels=LEVELS, hidden_dims=hidden)
    m, sec, _ = train(m, tr, steps=steps, batch_size=batch_size, lr=3e-3)
    rows.append((f"categorical MADE {hidden}", f"{float(-m.log_prob(te).mean()):.2f}",
                 f"{float(m.bits_per_dim(te).mean()):.3f}", f"{sec:.1f} s",
                 f"train bits/dim {float(m.bits_per_dim(tr).mean()):.3f}"))

    orders = random_orderings(jax.random.PRNGKey(5), DIM, n_orderings)
    m = autoregressive_model(key, DIM, conditional="categorical", num_levels=LEVELS, hidden_dims=hidden)
    m, sec, _ = train(m, tr, steps=2 * steps, batch_size=batch_size, lr=3e-3, orderings=orders)
    nats = float(-m.ensemble_log_prob(te, orders).mean())
    one = float(m.with_ordering(orders[0]).bits_per_dim(te).mean())
    rows.append((f"categorical MADE, {n_orderings} orderings", f"{nats:.2f}", f"{float(bits_per_dim(-nats, DIM)):.3f}",
                 f"{sec:.1f} s", f"order-agnostic, {2 * steps} steps; ensemble density; one ordering alone {one:.3f}"))

    deq_train = np.concatenate([dequantise(tr, 1), dequantise(tr, 2)])  # two dequantisation draws per image
    mix = autoregressive_model(key, DIM, conditional="mixture", num_components=5, hidden_dims=hidden)
    mix, sec, _ = train(mix, deq_train, steps=steps, batch_size=batch_size, lr=2e-3)
    rows.append(continuous_row(f"mixture MADE (K=5, {hidden}), dequantised", mix, te, sec))

    t0 = time.perf_counter()
    mle = ConditionalMVN.fit(deq_train)
    rows.append(continuous_row("MVN baseline, closed-form MLE", mle, te, time.perf_counter() - t0))
    mvn = conditional_mvn(key, DIM)
    mvn, sec, _ = train(mvn, deq_train, steps=steps, batch_size=batch_size, lr=1e-2)
    rows.append(continuous_row("MVN baseline, Adam", mvn, te, sec))
    return rows


def median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn().block_until_ready()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def crf_rows(b, n, v, repeats):
    rng = np.random.default_rng(0)
    e = jnp.asarray(rng.normal(size=(b, n, v)), jnp.float32)
    t = jnp.asarray(0.5 * rng.normal(size=(v, v)), jnp.float32)
    a = jnp.asarray(rng.normal(size=v), jnp.float32)
    z = jnp.asarray(rng.normal(size=v), jnp.float32)
    rows, ref = [], None
    for method in ("matmul", "logsumexp"):
        f = jax.jit(lambda e, t, a, z, method=method: crf_forward(e, t, a, z, method=method))
        out = f(e, t, a, z).block_until_ready()
        ref = out if ref is None else ref
        med = median_seconds(lambda: f(e, t, a, z), repeats)
        rows.append((method, f"{med * 1e3:.2f}", f"{b / med:.0f}", f"{b * n / med / 1e6:.2f} M",
                     f"{float(jnp.max(jnp.abs(out - ref))):.2e}"))
    grad = jax.jit(jax.grad(lambda e: crf_forward(e, t, a, z).sum()))
    grad(e).block_until_ready()
    med = median_seconds(lambda: grad(e), max(3, repeats // 2))
    rows.append(("gradient of log Z (matmul, = marginals)", f"{med * 1e3:.2f}", f"{b / med:.0f}", "", ""))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500, help="Adam steps per model")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny models, few steps")
    args = ap.parse_args()
    cfg = QUICK if args.quick else dict(FULL, steps=args.steps)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {os.cpu_count()} CPUs; steps={cfg['steps']}, "
          f"batch={args.batch_size}\n")

    x = load_digits().data.astype(np.int32)
    perm = np.random.default_rng(0).permutation(len(x))
    tr, te = x[perm[:1400]], x[perm[1400:]]
    print(f"Held-out sklearn digits ({DIM} dims, {LEVELS} levels, train {len(tr)}, held-out {len(te)}):\n")
    rows = digits_rows(tr, te, cfg["steps"], args.batch_size, cfg["hidden"], cfg["orderings"])
    print(table(["model", "nats / image", "bits / dim", "train time", "notes"], rows))

    b, n, v = cfg["crf"]
    print(f"\nCRF forward algorithm (nf_ppl.models.crf.crf_forward), batch {b}, length {n}, {v} labels, float32, "
          f"median of {cfg['repeats']}:\n")
    print(table(["method", "ms / call", "sequences / s", "positions / s", "max abs(logZ - logZ_matmul)"],
                crf_rows(b, n, v, cfg["repeats"])))


if __name__ == "__main__":
    main()

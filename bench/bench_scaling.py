"""Cost growth, closeness to the hardware limit, and sharding (issue 8).

Run: ``python bench/bench_scaling.py [--quick]``.

* throughput (samples/s) of ``log_prob`` and ``sample`` for maf, iaf, realnvp, nsf at batch 4096,
  d in {16, 64, 256};
* cost growth: time and compiled peak memory of maf's ``log_prob`` as d, the batch size and the
  number of layers grow; MAF sampling (d sequential passes) against IAF sampling (one pass),
  also drawn as ``bench/scaling_sampling.png``;
* closeness to the limit: maf training step at batch 4096, d = 64, hidden 256 divided by the
  time of the same dense matrix products (an MLP's forward + backward with identical shapes);
* sharding: a fitting step with the batch sharded over 1 and 2 simulated CPU devices.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
import optax

import nf_ppl
from common import machine, median_time, table

BATCH = 4096


def _builders():
    out = {"maf": nf_ppl.maf, "iaf": nf_ppl.iaf, "realnvp": nf_ppl.realnvp}
    if hasattr(nf_ppl, "nsf"):
        out["nsf"] = nf_ppl.nsf
    return out


def throughput(dims, repeats, num_layers, hidden):
    rows = []
    lp = jax.jit(lambda f, v: f.log_prob(v))
    for dim in dims:
        x = jax.random.normal(jax.random.PRNGKey(1), (BATCH, dim))
        h = max(hidden, dim)
        for name, build in _builders().items():
            flow = build(jax.random.PRNGKey(0), dim, num_layers=num_layers, hidden_dims=(h, h))
            sample = jax.jit(lambda f, k: f.sample(k, (BATCH,)))
            t_lp = median_time(lp, flow, x, repeats=repeats)
            t_s = median_time(sample, flow, jax.random.PRNGKey(2), repeats=repeats)
            rows.append((name, dim, f"{BATCH / t_lp:,.0f}", f"{BATCH / t_s:,.0f}"))
    return rows


def memory_of(fn, *args) -> float:
    compiled = jax.jit(fn).lower(*args).compile()
    try:
        stats = compiled.memory_analysis()
        return (stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes) / 2 ** 20
    except Exception:  # memory analysis is not available on every backend
        return float("nan")


def growth(dims, batches, depths, repeats):
    lp = lambda f, v: f.log_prob(v)
    rows = []
    for dim in dims:
        flow = nf_ppl.maf(jax.random.PRNGKey(0), dim, num_layers=4, hidden_dims=(max(64, dim), max(64, dim)))
        x = jnp.zeros((BATCH, dim))
        rows.append(("d", dim, f"{1e3 * median_time(jax.jit(lp), flow, x, repeats=repeats):.2f}", f"{memory_of(lp, flow, x):.1f}"))
    for batch in batches:
        flow = nf_ppl.maf(jax.random.PRNGKey(0), 16, num_layers=4, hidden_dims=(64, 64))
        x = jnp.zeros((batch, 16))
        rows.append(("batch", batch, f"{1e3 * median_time(jax.jit(lp), flow, x, repeats=repeats):.2f}", f"{memory_of(lp, flow, x):.1f}"))
    for depth in depths:
        flow = nf_ppl.maf(jax.random.PRNGKey(0), 16, num_layers=depth, hidden_dims=(64, 64))
        x = jnp.zeros((BATCH, 16))
        rows.append(("layers", depth, f"{1e3 * median_time(jax.jit(lp), flow, x, repeats=repeats):.2f}", f"{memory_of(lp, flow, x):.1f}"))
    return rows


def sampling_growth(dims, repeats):
    rows = []
    for dim in dims:
        h = max(64, dim)
        times = {}
        for name, build in (("maf", nf_ppl.maf), ("iaf", nf_ppl.iaf)):
            flow = build(jax.random.PRNGKey(0), dim, num_layers=4, hidden_dims=(h, h))
            times[name] = median_time(jax.jit(lambda f, k: f.sample(k, (1024,))), flow, jax.random.PRNGKey(1), repeats=repeats)
        rows.append((dim, times["maf"], times["iaf"]))
    return rows


def plot_sampling(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    dims = [r[0] for r in rows]
    ax.loglog(dims, [1e3 * r[1] for r in rows], "o-", label="MAF sample (d sequential passes)")
    ax.loglog(dims, [1e3 * r[2] for r in rows], "s-", label="IAF sample (one pass)")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("ms per 1024 draws")
    ax.set_title("Sampling cost: MAF vs IAF (4 layers)")
    ax.legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def limit(repeats, hidden=256, dim=64, num_layers=5):
    flow = nf_ppl.maf(jax.random.PRNGKey(0), dim, num_layers=num_layers, hidden_dims=(hidden, hidden), activation="relu")
    x = jax.random.normal(jax.random.PRNGKey(1), (BATCH, dim))
    opt = optax.adam(1e-3)

    @jax.jit
    def step(f, s, v):
        grads = jax.grad(lambda f: -f.log_prob(v).mean())(f)
        updates, s = opt.update(grads, s, f)
        return optax.apply_updates(f, updates), s

    t_step = median_time(step, flow, opt.init(flow), x, repeats=repeats)
    keys = jax.random.split(jax.random.PRNGKey(2), 3 * num_layers)
    shapes = [(hidden, dim), (hidden, hidden), (2 * dim, hidden)] * num_layers
    weights = [0.05 * jax.random.normal(k, s) for k, s in zip(keys, shapes)]

    @jax.jit
    def dense(ws, v):
        def f(ws):
            total = 0.0
            for i in range(num_layers):
                h = jax.nn.relu(v @ ws[3 * i].T)
                h = jax.nn.relu(h @ ws[3 * i + 1].T)
                total = total + jnp.sum(h @ ws[3 * i + 2].T)
            return total
        return jax.grad(f)(ws)

    t_dense = median_time(dense, weights, x, repeats=repeats)
    return t_step, t_dense


SHARD_SCRIPT = r"""
import json, time, statistics, jax, jax.numpy as jnp, numpy as np, optax, nf_ppl
from jax.sharding import NamedSharding, PartitionSpec as P
n = jax.local_device_count()
mesh = jax.make_mesh((n,), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))
flow = nf_ppl.maf(jax.random.PRNGKey(0), 16, num_layers=4, hidden_dims=(128, 128))
x = jax.device_put(jax.random.normal(jax.random.PRNGKey(1), (BATCH, 16)), NamedSharding(mesh, P("batch")))
opt = optax.adam(1e-3)
@jax.jit
def step(f, s, v):
    g = jax.grad(lambda f: -f.log_prob(v).mean())(f)
    u, s = opt.update(g, s, f)
    return optax.apply_updates(f, u), s
s = opt.init(flow)
for _ in range(2):
    jax.block_until_ready(step(flow, s, x))
ts = []
for _ in range(REPEATS):
    t = time.perf_counter(); jax.block_until_ready(step(flow, s, x)); ts.append(time.perf_counter() - t)
print(json.dumps({"devices": n, "seconds": statistics.median(ts)}))
"""


def sharding(repeats, batch):
    rows = []
    for n in (1, 2):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        code = SHARD_SCRIPT.replace("BATCH", str(batch)).replace("REPEATS", str(repeats))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if out.returncode:
            rows.append((n, "failed", out.stderr.strip().splitlines()[-1] if out.stderr else ""))
            continue
        res = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((n, f"{1e3 * res['seconds']:.1f}", f"{batch / res['seconds']:,.0f}"))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    q = args.quick
    repeats = 3 if q else 5
    print(f"Machine: {machine()}\n")
    print("### Throughput at batch 4096 (4 layers, hidden max(64, d); samples/s, higher is better)\n")
    rows = throughput((16,) if q else (16, 64, 256), repeats, 2 if q else 4, 64)
    print(table(["flow", "d", "log_prob samples/s", "sample samples/s"], rows))
    print("\n### Cost growth of maf log_prob (4 layers unless varied; time ms, compiled memory MiB)\n")
    rows = growth((8, 32) if q else (8, 16, 32, 64, 128, 256), (256, 4096) if q else (256, 1024, 4096, 16384),
                  (2, 8) if q else (2, 4, 8, 16, 32), repeats)
    print(table(["varied", "value", "time (ms)", "memory (MiB)"], rows))
    rows = sampling_growth((8, 32) if q else (8, 16, 32, 64, 128, 256), repeats)
    print("\n### Sampling: MAF (d sequential passes) vs IAF (one pass), 1024 draws, 4 layers\n")
    print(table(["d", "MAF ms", "IAF ms", "MAF / IAF"], [(d, f"{1e3 * a:.2f}", f"{1e3 * b:.2f}", f"{a / b:.1f}") for d, a, b in rows]))
    path = plot_sampling(rows, os.path.join(os.path.dirname(os.path.abspath(__file__)), "scaling_sampling.png"))
    if path:
        print(f"\n![MAF vs IAF sampling cost](scaling_sampling.png)")
    hidden = 64 if q else 256
    t_step, t_dense = limit(repeats, hidden=hidden)
    print(f"\n### Closeness to the limit: maf training step, batch 4096, d = 64, hidden {hidden}, 5 layers\n")
    print(table(["what", "ms"], [("maf Adam step (log_prob + grad + update)", f"{1e3 * t_step:.2f}"),
                                  ("the same dense matmuls alone (MLP forward + backward)", f"{1e3 * t_dense:.2f}"),
                                  ("ratio (goal <= 1.5)", f"{t_step / t_dense:.2f}")]))
    print("\n### Sharded fitting step over simulated CPU devices (maf d = 16, 4 layers, hidden 128)\n")
    batch = 4096 if q else 16384
    print(table(["devices", "ms / step", "samples/s"], sharding(repeats, batch)))
    print(f"\n(batch {batch}; on a 2-core machine two simulated devices share the same cores, so this shows the "
          "sharding works and what it costs, not a speed-up)")


if __name__ == "__main__":
    main()

"""Cost growth, closeness to the hardware limit, and sharding (issue 8).

Run: ``python bench/bench_scaling.py [--quick]``.  ``--quick`` is a smoke run: the same tables at
tiny sizes (batch 256, d in {2, 4}, 1 or 2 layers, hidden 8, one timed repeat); its plot goes to
the temporary directory so it never replaces the full run's.

* throughput (samples/s) of ``log_prob``, ``sample`` and one Adam training step (maximum
  likelihood; reverse KL for iaf) for maf, iaf, realnvp, nsf at batch 4096, d in {16, 64, 256};
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
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
import optax

import nf_ppl
from common import machine, median_time, table

# sizes of the full run and of the --quick smoke run
FULL = dict(batch=4096, repeats=5, dim=16, hidden=64, layers=4, throughput_dims=(16, 64, 256),
            growth_dims=(8, 16, 32, 64, 128, 256), growth_batches=(256, 1024, 4096, 16384),
            growth_depths=(2, 4, 8, 16, 32), draws=1024, limit_dim=64, limit_hidden=256, limit_layers=5,
            shard_batch=16384, shard_hidden=128)
QUICK = dict(batch=256, repeats=1, dim=4, hidden=8, layers=1, throughput_dims=(4,),
             growth_dims=(2, 4), growth_batches=(64, 256), growth_depths=(1, 2), draws=64, limit_dim=4,
             limit_hidden=8, limit_layers=1, shard_batch=256, shard_hidden=8)


def _builders():
    out = {"maf": nf_ppl.maf, "iaf": nf_ppl.iaf, "realnvp": nf_ppl.realnvp}
    if hasattr(nf_ppl, "nsf"):
        out["nsf"] = nf_ppl.nsf
    return out


SEQUENTIAL = {"maf": "sample", "iaf": "log_prob", "nsf": "sample"}  # the direction that takes d passes


def seq_batch(batch: int, dim: int) -> int:
    """Batch for a sequential (d-pass) direction: full up to d = 16, then shrinking as 16 / d (min 256).

    A d-pass direction costs d times a one-pass one; at d = 256 and batch 4096 one call would
    take about a minute on 2 CPU cores.  Samples/s stay comparable (per-sample cost is linear).
    """
    return min(batch, max(256, batch * 16 // dim))


def throughput(cfg):
    rows, batch, h0 = [], cfg["batch"], cfg["hidden"]
    lp = jax.jit(lambda f, v: f.log_prob(v))
    for dim in cfg["throughput_dims"]:
        h = max(h0, dim)
        for name, build in _builders().items():
            flow = build(jax.random.PRNGKey(0), dim, num_layers=cfg["layers"], hidden_dims=(h, h))
            cells = []
            for direction in ("log_prob", "sample"):
                n = seq_batch(batch, dim) if SEQUENTIAL.get(name) == direction else batch
                if direction == "log_prob":
                    t = median_time(lp, flow, jax.random.normal(jax.random.PRNGKey(1), (n, dim)), repeats=cfg["repeats"])
                else:
                    sample = jax.jit(lambda f, k, n=n: f.sample(k, (n,)))
                    t = median_time(sample, flow, jax.random.PRNGKey(2), repeats=cfg["repeats"])
                cells.append(f"{n / t:,.0f}" + ("" if n == batch else f" (batch {n})"))
            opt, step, arg = _train_step(name, flow, batch, dim)
            t = median_time(step, flow, opt.init(flow), arg, repeats=cfg["repeats"])
            cells.append(f"{batch / t:,.0f}")
            rows.append((name, dim, *cells))
    return rows


def _train_step(name, flow, batch, dim):
    """One jitted Adam step: maximum likelihood (one-pass density direction), or reverse KL to N(0, I) for iaf."""
    opt = optax.adam(1e-3)
    if name == "iaf":  # IAF is a sampler: train it the way a guide is trained, from its own draws
        def loss(f, key):
            y, log_q = f.sample_and_log_prob(key, (batch,))
            return jnp.mean(log_q + 0.5 * jnp.sum(y ** 2, -1))
        arg = jax.random.PRNGKey(3)
    else:
        def loss(f, v):
            return -f.log_prob(v).mean()
        arg = jax.random.normal(jax.random.PRNGKey(3), (batch, dim))

    @jax.jit
    def step(f, s, a):
        grads = jax.grad(loss)(f, a)
        updates, s = opt.update(grads, s, f)
        return optax.apply_updates(f, updates), s

    return opt, step, arg


def memory_of(fn, *args) -> float:
    compiled = jax.jit(fn).lower(*args).compile()
    try:
        stats = compiled.memory_analysis()
        return (stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes) / 2 ** 20
    except Exception:  # memory analysis is not available on every backend
        return float("nan")


def growth(cfg):
    lp = lambda f, v: f.log_prob(v)
    dim, h, layers = cfg["dim"], cfg["hidden"], cfg["layers"]
    cases = ([("d", d, d, cfg["batch"], layers) for d in cfg["growth_dims"]]
             + [("batch", b, dim, b, layers) for b in cfg["growth_batches"]]
             + [("layers", n, dim, cfg["batch"], n) for n in cfg["growth_depths"]])
    rows = []
    for varied, value, d, batch, n in cases:
        flow = nf_ppl.maf(jax.random.PRNGKey(0), d, num_layers=n, hidden_dims=(max(h, d), max(h, d)))
        x = jnp.zeros((batch, d))
        t = median_time(jax.jit(lp), flow, x, repeats=cfg["repeats"])
        rows.append((varied, value, f"{1e3 * t:.2f}", f"{memory_of(lp, flow, x):.1f}"))
    return rows


def sampling_growth(cfg):
    rows = []
    for dim in cfg["growth_dims"]:
        h = max(cfg["hidden"], dim)
        times = {}
        for name, build in (("maf", nf_ppl.maf), ("iaf", nf_ppl.iaf)):
            flow = build(jax.random.PRNGKey(0), dim, num_layers=cfg["layers"], hidden_dims=(h, h))
            sample = jax.jit(lambda f, k: f.sample(k, (cfg["draws"],)))
            times[name] = median_time(sample, flow, jax.random.PRNGKey(1), repeats=cfg["repeats"])
        rows.append((dim, times["maf"], times["iaf"]))
    return rows


def plot_sampling(rows, path, draws, layers):
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
    ax.set_ylabel(f"ms per {draws} draws")
    ax.set_title(f"Sampling cost: MAF vs IAF ({layers} layers)")
    ax.legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def limit(cfg):
    dim, hidden, num_layers, repeats = cfg["limit_dim"], cfg["limit_hidden"], cfg["limit_layers"], cfg["repeats"]
    flow = nf_ppl.maf(jax.random.PRNGKey(0), dim, num_layers=num_layers, hidden_dims=(hidden, hidden), activation="relu")
    x = jax.random.normal(jax.random.PRNGKey(1), (cfg["batch"], dim))
    opt, step, _ = _train_step("maf", flow, cfg["batch"], dim)
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
flow = nf_ppl.maf(jax.random.PRNGKey(0), DIM, num_layers=LAYERS, hidden_dims=(HIDDEN, HIDDEN))
x = jax.device_put(jax.random.normal(jax.random.PRNGKey(1), (BATCH, DIM)), NamedSharding(mesh, P("batch")))
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


def sharding(cfg):
    """One fitting step timed in a fresh process per device count (XLA's device count is fixed at start-up)."""
    batch = cfg["shard_batch"]
    code = SHARD_SCRIPT
    for name, value in (("BATCH", batch), ("REPEATS", cfg["repeats"]), ("DIM", cfg["dim"]),
                        ("LAYERS", cfg["layers"]), ("HIDDEN", cfg["shard_hidden"])):
        code = code.replace(name, str(value))
    rows = []
    for n in (1, 2):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if out.returncode:
            rows.append((n, "failed", out.stderr.strip().splitlines()[-1] if out.stderr else ""))
            continue
        res = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((n, f"{1e3 * res['seconds']:.1f}", f"{batch / res['seconds']:,.0f}"))
    return rows


def plot_path(quick):
    """The full run's plot sits next to RESULTS.md; a smoke run's goes to the temporary directory."""
    folder = tempfile.gettempdir() if quick else os.path.dirname(os.path.abspath(__file__))
    return os.path.join(folder, "scaling_sampling.png")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one repeat")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    batch, dim, h, layers = cfg["batch"], cfg["dim"], cfg["hidden"], cfg["layers"]
    print(f"Machine: {machine()}\n")
    print(f"### Throughput at batch {batch} ({layers} layers, hidden max({h}, d); samples/s, higher is better; "
          "a d-pass direction at d > 16 runs a smaller batch, shown in brackets; the Adam step is maximum "
          "likelihood, for iaf reverse KL to N(0, I) from its own draws)\n")
    print(table(["flow", "d", "log_prob samples/s", "sample samples/s", "Adam step samples/s"], throughput(cfg)))
    print(f"\n### Cost growth of maf log_prob ({layers} layers, hidden max({h}, d), d = {dim}, batch {batch} "
          "unless varied; time ms, compiled memory MiB)\n")
    print(table(["varied", "value", "time (ms)", "memory (MiB)"], growth(cfg)))
    rows = sampling_growth(cfg)
    print(f"\n### Sampling: MAF (d sequential passes) vs IAF (one pass), {cfg['draws']} draws, {layers} layers\n")
    print(table(["d", "MAF ms", "IAF ms", "MAF / IAF"], [(d, f"{1e3 * a:.2f}", f"{1e3 * b:.2f}", f"{a / b:.1f}") for d, a, b in rows]))
    path = plot_sampling(rows, plot_path(args.quick), cfg["draws"], layers)
    if path and not args.quick:
        print("\n![MAF vs IAF sampling cost](scaling_sampling.png)")
    elif path:
        print(f"\n(plot written to {path})")
    t_step, t_dense = limit(cfg)
    print(f"\n### Closeness to the limit: maf training step, batch {batch}, d = {cfg['limit_dim']}, "
          f"hidden {cfg['limit_hidden']}, {cfg['limit_layers']} layers\n")
    print(table(["what", "ms"], [("maf Adam step (log_prob + grad + update)", f"{1e3 * t_step:.2f}"),
                                  ("the same dense matmuls alone (MLP forward + backward)", f"{1e3 * t_dense:.2f}"),
                                  ("ratio (goal <= 1.5)", f"{t_step / t_dense:.2f}")]))
    print(f"\n### Sharded fitting step over simulated CPU devices (maf d = {dim}, {layers} layers, "
          f"hidden {cfg['shard_hidden']})\n")
    print(table(["devices", "ms / step", "samples/s"], sharding(cfg)))
    print(f"\n(batch {cfg['shard_batch']}; on a 2-core machine two simulated devices share the same cores, so this "
          "shows the sharding works and what it costs, not a speed-up)")


if __name__ == "__main__":
    main()

"""Core flows against NumPyro's IAF stack and flowjax: throughput, training step, compile time.

Run: ``python bench/bench_core.py [--quick]``.  Prints Markdown tables (copied into RESULTS.md).
``--quick`` is a smoke run (seconds): the same tables at tiny sizes (d = 4, 1 layer, hidden 8,
batch 256, one timed repeat, 1 and 2 layers for the compile times).

* log-density throughput (samples/s) of the one-pass direction at batch 4096 (forward + log-det):
  ``maf.log_prob``, ``realnvp.log_prob``, ``iaf.sample_and_log_prob``; NumPyro's
  ``InverseAutoregressiveTransform`` stack (forward + log-det, its one-pass direction); flowjax's
  masked autoregressive and coupling flows (``log_prob``).
* one Adam step: maximum likelihood for maf / realnvp / flowjax; reverse KL to N(0, I) (sample +
  log-density of the samples) for iaf and NumPyro's IAF stack.
* jit compile time of ``maf.log_prob`` and its training step at 2, 8, 32 layers.
All flows: ``num_layers`` layers, hidden sizes (h, h) with ``h = max(hidden, d)`` (a MADE needs at
least d - 1 units), ReLU, reversal permutations (flowjax: its own).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import jax
import jax.numpy as jnp
import optax

import nf_ppl
from common import compile_time, machine, median_time, table

FULL = dict(dims=(16, 64, 256), num_layers=5, hidden=128, batch=4096, repeats=7, depths=(2, 8, 32), compile_dim=16)
QUICK = dict(dims=(4,), num_layers=1, hidden=8, batch=256, repeats=1, depths=(1, 2), compile_dim=4)


def numpyro_iaf_stack(key, dim, num_layers, hidden):
    from numpyro.distributions import Normal, TransformedDistribution
    from numpyro.distributions.flows import InverseAutoregressiveTransform
    from numpyro.distributions.transforms import PermuteTransform
    from numpyro.nn import AutoregressiveNN

    params, applies = [], []
    for k in jax.random.split(key, num_layers):
        init, apply = AutoregressiveNN(dim, [hidden, hidden], param_dims=[1, 1])
        _, p = init(k, (dim,))
        params.append(p)
        applies.append(apply)

    def make(params):
        transforms = []
        for i, (p, apply) in enumerate(zip(params, applies)):
            if i:
                transforms.append(PermuteTransform(jnp.arange(dim)[::-1]))
            transforms.append(InverseAutoregressiveTransform(lambda x, p=p, apply=apply: apply(p, x)))
        return TransformedDistribution(Normal(jnp.zeros(dim), 1.0).to_event(1), transforms)

    return params, make


def flowjax_flows(key, dim, num_layers, hidden):
    from flowjax.bijections import Affine
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow, masked_autoregressive_flow

    base = Normal(jnp.zeros(dim))
    kw = dict(base_dist=base, transformer=Affine(), flow_layers=num_layers, nn_width=hidden, nn_depth=2)
    return masked_autoregressive_flow(key, **kw), coupling_flow(key, **kw)


def ours(key, dim, num_layers, hidden):
    kw = dict(num_layers=num_layers, hidden_dims=(hidden, hidden), activation="relu")
    # iaf in the form this table was measured with, the form of NumPyro's IAF it is compared with (base side,
    # reversal; the builder's maximum-likelihood defaults are data side and random permutations since 2026-12-05)
    iaf = nf_ppl.iaf(key, dim, affine_from="base", permutation="reverse", **kw)
    return nf_ppl.maf(key, dim, **kw), iaf, nf_ppl.realnvp(key, dim, **kw)


def _adam_step(loss):
    opt = optax.adam(1e-3)

    @jax.jit
    def step(params, state, *args):
        value, grads = jax.value_and_grad(loss)(params, *args)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    return opt, step


def _flowjax_split(flow):
    import equinox as eqx

    return eqx.partition(flow, eqx.is_inexact_array)


def run_size(dim, num_layers, hidden, batch, repeats):
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, dim))
    maf, iaf, realnvp = ours(key, dim, num_layers, hidden)
    np_params, np_make = numpyro_iaf_stack(key, dim, num_layers, hidden)
    fj_maf, fj_coupling = flowjax_flows(key, dim, num_layers, hidden)
    import equinox as eqx

    # --- throughput of the one-pass direction ---
    lp = jax.jit(lambda f, v: f.log_prob(v))
    iaf_fwd = jax.jit(lambda f, k: f.sample_and_log_prob(k, (batch,))[1])

    def np_fwd(params, k):
        d = np_make(params)
        y, inter = d.sample_with_intermediates(k, (batch,))
        return d.log_prob(y, inter)

    np_fwd = jax.jit(np_fwd)
    fj_lp = eqx.filter_jit(lambda f, v: f.log_prob(v))
    times = {
        "nf_ppl maf (log_prob)": median_time(lp, maf, x, repeats=repeats),
        "nf_ppl realnvp (log_prob)": median_time(lp, realnvp, x, repeats=repeats),
        "nf_ppl iaf (sample + log_prob)": median_time(iaf_fwd, iaf, key, repeats=repeats),
        "numpyro IAF stack (sample + log_prob)": median_time(np_fwd, np_params, key, repeats=repeats),
        "flowjax MAF (log_prob)": median_time(fj_lp, fj_maf, x, repeats=repeats),
        "flowjax coupling (log_prob)": median_time(fj_lp, fj_coupling, x, repeats=repeats),
    }
    throughput = {k: batch / v for k, v in times.items()}

    # --- one Adam step ---
    steps = {}
    mle = lambda f, v: -f.log_prob(v).mean()
    for name, flow in (("nf_ppl maf (MLE)", maf), ("nf_ppl realnvp (MLE)", realnvp)):
        opt, step = _adam_step(mle)
        steps[name] = median_time(step, flow, opt.init(flow), x, repeats=repeats)

    def rkl(f, k):
        y, lq = f.sample_and_log_prob(k, (batch,))
        return jnp.mean(lq + 0.5 * jnp.sum(y ** 2, -1))

    opt, step = _adam_step(rkl)
    steps["nf_ppl iaf (reverse KL)"] = median_time(step, iaf, opt.init(iaf), key, repeats=repeats)

    def np_rkl(params, k):
        d = np_make(params)
        y, inter = d.sample_with_intermediates(k, (batch,))
        return jnp.mean(d.log_prob(y, inter) + 0.5 * jnp.sum(y ** 2, -1))

    opt, step = _adam_step(np_rkl)
    steps["numpyro IAF stack (reverse KL)"] = median_time(step, np_params, opt.init(np_params), key, repeats=repeats)
    for name, flow in (("flowjax MAF (MLE)", fj_maf), ("flowjax coupling (MLE)", fj_coupling)):
        params, static = _flowjax_split(flow)
        opt, step = _adam_step(lambda p, v, static=static: -eqx.combine(p, static).log_prob(v).mean())
        steps[name] = median_time(step, params, opt.init(params), x, repeats=repeats)
    return throughput, steps


def compile_times(dim, hidden, depths, batch):
    rows = []
    x = jnp.zeros((batch, dim))
    for n in depths:
        flow = nf_ppl.maf(jax.random.PRNGKey(0), dim, num_layers=n, hidden_dims=(hidden, hidden))
        opt, step = _adam_step(lambda f, v: -f.log_prob(v).mean())
        lp = compile_time(jax.jit(lambda f, v: f.log_prob(v)), flow, x)
        tr = compile_time(step, flow, opt.init(flow), x)
        rows.append((n, lp, tr))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one repeat")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    num_layers, hidden, batch, repeats = cfg["num_layers"], cfg["hidden"], cfg["batch"], cfg["repeats"]
    print(f"Machine: {machine()}\n")
    print(f"Flows with {num_layers} layers, hidden (h, h) with h = max({hidden}, d), ReLU, batch {batch}; "
          f"median of {repeats} jitted runs.\n")
    for dim in cfg["dims"]:
        throughput, steps = run_size(dim, num_layers, max(hidden, dim), batch, repeats)
        print(f"### d = {dim} (hidden {max(hidden, dim)}): log-density throughput (samples/s, higher is better)\n")
        print(table(["flow", "samples/s"], [(k, f"{v:,.0f}") for k, v in throughput.items()]))
        print()
        ratios = [
            ("maf / flowjax MAF", throughput["nf_ppl maf (log_prob)"] / throughput["flowjax MAF (log_prob)"]),
            ("realnvp / flowjax coupling", throughput["nf_ppl realnvp (log_prob)"] / throughput["flowjax coupling (log_prob)"]),
            ("iaf / numpyro IAF", throughput["nf_ppl iaf (sample + log_prob)"] / throughput["numpyro IAF stack (sample + log_prob)"]),
            ("maf / numpyro IAF (one-pass direction of both)", throughput["nf_ppl maf (log_prob)"] / throughput["numpyro IAF stack (sample + log_prob)"]),
        ]
        print(table(["throughput ratio", "x"], [(k, f"{v:.2f}") for k, v in ratios]))
        print(f"\n### d = {dim}: one Adam step (ms, lower is better)\n")
        print(table(["flow", "ms/step"], [(k, f"{1e3 * v:.2f}") for k, v in steps.items()]))
        print()
        ratios = [
            ("maf vs flowjax MAF", steps["flowjax MAF (MLE)"] / steps["nf_ppl maf (MLE)"]),
            ("realnvp vs flowjax coupling", steps["flowjax coupling (MLE)"] / steps["nf_ppl realnvp (MLE)"]),
            ("iaf vs numpyro IAF", steps["numpyro IAF stack (reverse KL)"] / steps["nf_ppl iaf (reverse KL)"]),
        ]
        print(table(["training speed-up (peer time / our time)", "x"], [(k, f"{v:.2f}") for k, v in ratios]))
        print()
    depths, dim = cfg["depths"], cfg["compile_dim"]
    rows = compile_times(dim, hidden, depths, batch)
    print(f"### jit compile time of maf (d = {dim})\n")
    print(table(["layers", "log_prob compile (s)", "train step compile (s)"], [(n, f"{a:.2f}", f"{b:.2f}") for n, a, b in rows]))
    print(f"\ncompile time at {depths[-1]} layers / at {depths[0]} layers: log_prob {rows[-1][1] / rows[0][1]:.2f}x, "
          f"train step {rows[-1][2] / rows[0][2]:.2f}x")


if __name__ == "__main__":
    main()

"""Benchmark: does SVI training keep a warm-started AutoFlow as good as its start, as the latent dimension grows?

Model: Bayesian linear regression ``y ~ N(X b, 1)``, ``b ~ N(0, I_D)``, ``N = 200`` rows with
standard normal ``X``: the posterior is Gaussian and known exactly.  For each ``D`` the default
``AutoFlow`` (Pathfinder-style warm start) is trained for ``steps`` steps by

* NumPyro's ``SVI.run`` with ``suggest_optimizer(steps)`` at the plain 1e-2 step size,
* the same with ``suggest_optimizer(steps, guide=guide)`` (step size times ``min(1, 30 / D)``),
* ``inference.run_svi`` with its defaults (that optimiser, best span kept, never worse than the
  start without a warning).

Reported: the largest error of a posterior mean over the ``D`` coordinates, in posterior sds
(2000 guide draws: the Monte-Carlo floor of that maximum is about 0.06-0.08), the same for the
sds (|sd ratio - 1|), and the ELBO at the warm start and after training.

    python bench/bench_svi_dimension.py [--quick] [--dims 30,100,200] [--steps 1000]

``--quick``: D = 10, 20 steps, the ``run_svi`` row only (a smoke run).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import SVI, Trace_ELBO

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import inference  # noqa: E402
from common import machine, table  # noqa: E402


def regression(dim, n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    y = x @ rng.normal(size=dim) + rng.normal(size=n)

    def model(x, y=None):
        b = numpyro.sample("b", dist.Normal(0, 1).expand([dim]).to_event(1))
        numpyro.sample("y", dist.Normal(x @ b, 1.0), obs=y)

    cov = np.linalg.inv(x.T @ x + np.eye(dim))
    return model, x, y, cov @ x.T @ y, np.sqrt(np.diag(cov))


def errors(guide, params, x, y, mean, sd):
    draws = np.asarray(guide.sample_posterior(jax.random.PRNGKey(1), params, x, y, sample_shape=(2000,))["b"])
    return float(np.max(np.abs(draws.mean(0) - mean) / sd)), float(np.max(np.abs(draws.std(0) / sd - 1)))


def elbo(model, guide, params, x, y, num_draws=256):
    one = jax.jit(jax.vmap(lambda k: -Trace_ELBO().loss(k, params, model, guide, x, y)))
    return float(np.mean(np.asarray(one(jax.random.split(jax.random.PRNGKey(2), num_draws)))))


VARIANTS = ("SVI.run, suggest_optimizer(steps)", "SVI.run, suggest_optimizer(steps, guide=guide)", "run_svi defaults")


def rows_for(dim, steps, variants=VARIANTS):
    model, x, y, mean, sd = regression(dim)
    out = []
    for label in variants:
        guide = inference.AutoFlow(model)
        if label == "run_svi defaults":
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                params, _, _ = inference.run_svi(model, guide, x, y, num_steps=steps)
            note = "returned the start (warned)" if any("below its start" in str(w.message) for w in caught) else ""
        else:
            opt = inference.suggest_optimizer(steps, guide=guide) if "guide=" in label else inference.suggest_optimizer(steps)
            params = SVI(model, guide, opt, Trace_ELBO()).run(jax.random.PRNGKey(0), steps, x, y,
                                                              progress_bar=False).params
            note = ""
        start = SVI(model, guide, inference.suggest_optimizer(1), Trace_ELBO())
        start_params = start.get_params(start.init(jax.random.PRNGKey(0), x, y))
        m0, s0 = errors(guide, start_params, x, y, mean, sd)
        m1, s1 = errors(guide, params, x, y, mean, sd)
        out.append([dim, label, f"{m0:.3f} / {s0:.3f}", f"{m1:.3f} / {s1:.3f}",
                    f"{elbo(model, guide, start_params, x, y):.1f}", f"{elbo(model, guide, params, x, y):.1f}", note])
        print(f"  D={dim} {label}: {m1:.3f}", file=sys.stderr, flush=True)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dims", default="30,100,200")
    p.add_argument("--steps", type=int, default=1000)
    args = p.parse_args()
    dims, steps = ([10], 20) if args.quick else ([int(d) for d in args.dims.split(",")], args.steps)
    print(f"Machine: {machine()}\n")
    rows = [r for d in dims for r in rows_for(d, steps, VARIANTS[-1:] if args.quick else VARIANTS)]
    print(f"### Warm-started AutoFlow on a Gaussian regression, {steps} steps: errors in posterior sds\n")
    print(table(["D", "training", "start: max mean err / max sd err", "after", "ELBO start", "ELBO after", "note"],
                rows))
    print()


if __name__ == "__main__":
    main()

"""Flow guides as the latent dimension grows (issue 21): a hierarchical logistic regression with D = 10 ... 10,000.

Model (non-centred): ``mu ~ N(0, 2^2 I_2)``, ``tau ~ HalfNormal(1)^2``, per group ``eta_g ~ N(0, I_2)``,
``beta_g = mu + tau * eta_g``, and ``rows_per_group`` Bernoulli rows per group with logit
``beta_g0 + beta_g1 x``.  ``D = 2 G + 4`` latent coordinates; the groups share ``mu`` and ``tau``,
so the posterior has a few global directions every coordinate correlates with, and ``tau``'s
unconstrained coordinate is skewed.

For each ``D`` and guide, at the same SVI budget (``run_svi``, ``suggest_optimizer(steps)``; our
default with its own defaults): time per SVI step (a jitted scan of steps, after compiling), the
compiled step's memory, the ELBO (mean of 256 single-draw estimates) and, up to ``nuts_max_dim``,
the errors of the posterior means (in reference sds) and sds (ratio - 1) against NUTS run in the
same process (RMS over the ``D`` coordinates; the Monte-Carlo floor with 1000 NUTS draws and
2000 guide draws is about 0.04 for means and 0.03 for sds), as means over SVI seeds, with the worst
seed's RMS mean error and the largest error of one coordinate (usually a group scale ``tau``,
which mean-field-like guides put too low).
"""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoIAFNormal, AutoLowRankMultivariateNormal, AutoNormal

import inference

IAF_MAX_DIM = 1000  # AutoIAFNormal's default hidden [D, D] holds ~3 D^2 parameters per layer: 3e8 at D = 10,000


def groups_for(dim: int) -> int:
    """Number of groups ``G`` with ``2 G + 4`` closest to ``dim`` (at least 1)."""
    return max(1, round((dim - 4) / 2))


def hier_logistic(groups: int, rows_per_group: int = 10, seed: int = 0):
    """``(model, args)`` of the hierarchical logistic regression with ``groups`` groups (data drawn from the prior)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), rows_per_group)
    x = rng.normal(size=g.size)
    beta = np.array([0.5, 1.0]) + np.array([0.7, 0.5]) * rng.normal(size=(groups, 2))
    y = (rng.random(g.size) < 1 / (1 + np.exp(-(beta[g, 0] + beta[g, 1] * x)))).astype(np.float64)

    def model(g, x, y=None):
        mu = numpyro.sample("mu", dist.Normal(0, 2).expand([2]).to_event(1))
        tau = numpyro.sample("tau", dist.HalfNormal(1).expand([2]).to_event(1))
        with numpyro.plate("groups", groups):
            eta = numpyro.sample("eta", dist.Normal(0, 1).expand([2]).to_event(1))
        b = mu + tau * eta
        numpyro.sample("y", dist.Bernoulli(logits=b[g, 0] + b[g, 1] * x), obs=y)

    return model, (jnp.asarray(g), jnp.asarray(x), jnp.asarray(y))


def guides(model, dim):
    """Label -> (make guide, whether it uses our default optimiser) for the guides compared at ``dim``."""
    out = {"AutoNormal": (lambda: AutoNormal(model), False),
           "AutoLowRankMultivariateNormal": (lambda: AutoLowRankMultivariateNormal(model), False)}
    if dim <= IAF_MAX_DIM:
        out["AutoIAFNormal"] = (lambda: AutoIAFNormal(model), False)
    out["AutoFlow (default)"] = (lambda: inference.AutoFlow(model), True)
    return out


def _flat_draws(samples):
    return np.concatenate([np.asarray(v).reshape(v.shape[0], -1) for _, v in sorted(samples.items())], axis=1)


def nuts_reference(model, args, num_warmup=500, num_samples=1000):
    """``(means, sds, seconds)`` of every latent coordinate (constrained, sites sorted by name) by NUTS."""
    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(model), num_warmup=num_warmup, num_samples=num_samples, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), *args)
    draws = _flat_draws(mcmc.get_samples())
    return draws.mean(0), draws.std(0), time.perf_counter() - t0


def seconds_per_step(model, guide, args, length=50, repeats=3):
    svi = SVI(model, guide, inference.suggest_optimizer(length), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), *args)
    run = jax.jit(lambda s: jax.lax.scan(lambda c, _: (svi.update(c, *args)[0], None), s, None, length=length)[0])
    jax.block_until_ready(run(state))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run(state))
        times.append(time.perf_counter() - t0)
    step = jax.jit(lambda s: svi.update(s, *args)[0])
    try:
        stats = step.lower(state).compile().memory_analysis()
        mib = (stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes) / 2 ** 20
    except Exception:  # memory analysis is not available on every backend
        mib = float("nan")
    return float(np.median(times)) / length, mib


def elbo_estimate(model, guide, params, args, num_draws=256):
    one = jax.jit(jax.vmap(lambda k: -Trace_ELBO().loss(k, params, model, guide, *args)))
    return float(np.mean(np.asarray(one(jax.random.split(jax.random.PRNGKey(2), num_draws)))))


def _errors(guide, params, args, ref, seed):
    draws = _flat_draws(guide.sample_posterior(jax.random.PRNGKey(1 + seed), params, *args, sample_shape=(2000,)))
    mean_err = (draws.mean(0) - ref[0]) / ref[1]
    sd_err = draws.std(0) / ref[1] - 1
    return float(np.sqrt(np.mean(mean_err ** 2))), float(np.max(np.abs(mean_err))), float(np.sqrt(np.mean(sd_err ** 2)))


def rows_for(dim, steps, nuts_max_dim, log=print, seeds=(0,), only=None):
    """One row per guide at latent dimension ``dim``: time and memory of a step (seed 0's guide), and the
    ELBO and the errors against NUTS as means over ``seeds`` (SVI seeds; the data stay the same), with
    the worst seed's RMS mean error and the largest coordinate error (typically a group scale ``tau``).
    ``only``: the guide labels to run (default all)."""
    model, args = hier_logistic(groups_for(dim))
    ref = nuts_reference(model, args) if dim <= nuts_max_dim else None
    rows = []
    if ref is not None:
        rows.append({"D": dim, "guide": "NUTS (500 + 1000, reference)", "total s": ref[2]})
        log(f"  D={dim} NUTS {ref[2]:.0f} s")
    if dim > IAF_MAX_DIM:
        rows.append({"D": dim, "guide": "AutoIAFNormal", "ms/step": f"not run: hidden [D, D] holds {3 * dim * dim:.0e} "
                     "parameters per layer"})
    for label, (make, ours) in guides(model, dim).items():
        if only is not None and label not in only:
            continue
        elbos, errors, totals = [], [], []
        for seed in seeds:
            guide = make()
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opt = None if ours else inference.suggest_optimizer(steps)
                params, _, _ = inference.run_svi(model, guide, *args, num_steps=steps, optimizer=opt, seed=seed)
            totals.append(time.perf_counter() - t0)
            elbos.append(elbo_estimate(model, guide, params, args))
            if ref is not None:
                errors.append(_errors(guide, params, args, ref, seed))
            if seed == seeds[0]:
                per_step, mib = seconds_per_step(model, guide, args)
                name = label + (f" [{guide.structure}]" if ours else "")
        row = {"D": dim, "guide": name, "ms/step": 1e3 * per_step, "step memory MiB": mib,
               "total s": float(np.mean(totals)), "ELBO": f"{np.mean(elbos):.1f}"}
        if errors:
            e = np.asarray(errors)
            row.update({"RMS mean err (sd)": float(e[:, 0].mean()), "worst seed": float(e[:, 0].max()),
                        "max coord mean err": float(e[:, 1].mean()), "RMS sd err": float(e[:, 2].mean())})
        rows.append(row)
        log(f"  D={dim} {row['guide']}: {row} per seed {errors}")
    return rows


COLUMNS = ["D", "guide", "ms/step", "step memory MiB", "total s", "ELBO", "RMS mean err (sd)", "worst seed",
           "max coord mean err", "RMS sd err"]

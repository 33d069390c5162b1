"""Benchmarks of the ``inference`` package.

    python bench/bench_inference.py --quick      # smoke run: tiny budgets, every table
    python bench/bench_inference.py              # the figures in RESULTS.md

Sections:
  1. the eight posteriordb reference posteriors in ../shared/posteriordb (and the centered eight
     schools model, scored against the same reference draws): error of means (in reference sds), relative error of sds and Pareto
     k-hat for AutoNormal, AutoMultivariateNormal, NumPyro's AutoIAFNormal and AutoFlow guides,
     all with the same optimiser and number of steps, averaged over seeds (worst k-hat shown).
  2. Neal's funnel (d = 10): sd errors against the exact distribution over seeds, and NeuTra NUTS
     vs plain NUTS (effective samples per second of the least-mixed coordinate, v).
  3. SVI steps/s and the ELBO after the same number of steps: AutoFlow("iaf") vs AutoIAFNormal at
     identical architecture (with the plain and the sticking-the-landing gradient), and our default
     guide, on Neal's funnel and eight schools.
  4. inference.fit vs flowjax's fit_to_data (same MAF architecture) on two moons and the
     standardised breast-cancer data: steps/s and time to a target held-out log-likelihood.
  5. AutoFlow's default against AutoNormal, AutoLowRankMultivariateNormal and
     AutoIAFNormal on a hierarchical logistic regression with D = 10 ... 10,000 latent coordinates
     (``--scale-dims``): time per step, memory, ELBO and errors against NUTS
     (:mod:`inference_scaling`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO  # noqa: E402
from numpyro.infer.autoguide import AutoIAFNormal, AutoMultivariateNormal, AutoNormal  # noqa: E402

import inference  # noqa: E402
import nf_ppl  # noqa: E402
import posteriordb_models as pdb  # noqa: E402
from common import median_time  # noqa: E402


def table(rows, cols, title):
    print(f"\n### {title}\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols) + " |")
    sys.stdout.flush()


QUICK_GUIDES = ("AutoNormal", "AutoFlow(iaf)")  # --quick: one peer, our default
QUICK_FUNNEL_GUIDES = ("AutoFlow(iaf)",)  # --quick: the funnel's table and NeuTra need only ours
FUNNEL_GUIDES = ("AutoNormal", "AutoIAFNormal", "AutoFlow(iaf)", "AutoFlow(iaf, diag)", "AutoFlow(iaf, plain)",
                 "AutoFlow(maf, mass-covering)")
GUIDES = None  # --guides: the labels to run (default: all)


def guides_for(model, labels=None):
    """Guide factories by label; ``labels`` selects some of them (default: all).

    ``AutoFlow(iaf, plain)`` is the default guide without its warm start and with the plain
    ELBO gradient (``stl=False, warm_start=None``): what those two defaults buy.
    """
    guides = {
        "AutoNormal": lambda: AutoNormal(model),
        "AutoMultivariateNormal": lambda: AutoMultivariateNormal(model),
        "AutoIAFNormal": lambda: AutoIAFNormal(model),
        "AutoFlow(iaf)": lambda: inference.AutoFlow(model, "iaf"),
        "AutoFlow(iaf, diag)": lambda: inference.AutoFlow(model, "iaf", affine="diag"),
        "AutoFlow(realnvp)": lambda: inference.AutoFlow(model, "realnvp"),
        "AutoFlow(iaf, plain)": lambda: inference.AutoFlow(model, "iaf", stl=False, warm_start=None),
        MASS_COVERING: lambda: inference.AutoFlow(model, "maf", stl=False, path_pooling="resample"),
    }
    return guides if labels is None else {k: guides[k] for k in labels}


MASS_COVERING = "AutoFlow(maf, mass-covering)"  # trained with inference.MassCovering() instead of the ELBO
LOSSES = {MASS_COVERING: lambda: inference.MassCovering()}  # label -> SVI loss (default: the ELBO)


def eight_schools_centered(J, y, sigma):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", J):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def eight_schools_noncentered():
    """The noncentered eight schools model and its data (posteriordb's copy, or the classic values
    it holds when the shared folder is not there: speed needs no reference draws)."""
    if os.path.isdir(pdb.ROOT):
        model, kw, _ = pdb.load("eight_schools-eight_schools_noncentered")
        return model, kw
    return pdb.eight_schools_noncentered, {"J": 8, "y": np.array([28.0, 8, -3, 7, -1, 1, 18, 12]),
                                           "sigma": np.array([15.0, 10, 16, 11, 9, 11, 10, 18])}


def load_posterior(name):
    """posteriordb's (model, data, reference); "eight_schools_centered" reuses the noncentered reference."""
    if name == "eight_schools_centered":
        _, kw, ref = pdb.load("eight_schools-eight_schools_noncentered")
        return eight_schools_centered, kw, {k: ref[k] for k in ("mu", "tau", "theta")}
    return pdb.load(name)


def score_guide(model, make, kw, ref, steps, seed, make_loss=None):
    guide = make()
    params, _, secs = inference.run_svi(model, guide, num_steps=steps, seed=seed,
                                        optimizer=inference.suggest_optimizer(steps, 1e-2),
                                        loss=make_loss() if make_loss else None, **kw)
    d = inference.diagnose(model, guide, params, num_samples=1000, **kw)
    draws = guide.sample_posterior(jax.random.PRNGKey(1), params, sample_shape=(4000,), **kw)
    err = inference.posterior_errors({k: np.asarray(v) for k, v in draws.items()}, ref)
    return err["mean_err_sd"], err["sd_rel_err"], d["khat"], d["elbo"], secs


NUTS_PREFIXES = (125, 250, 500, 1000, 2000, 4000)  # draws at which NUTS's errors are read (one chain)
NUTS_WARMUP = 0  # --nuts-warmup W > 0: a NUTS row per posterior and each guide's NUTS time to equal accuracy


def nuts_accuracy(model, kw, ref, seed, warmup, draws=NUTS_PREFIXES[-1]):
    """One NUTS chain: warm-up seconds (compile included), sampling seconds, and its errors after each prefix."""
    mc = MCMC(NUTS(model), num_warmup=warmup, num_samples=draws, progress_bar=False)
    t0 = time.perf_counter()
    mc.warmup(jax.random.PRNGKey(seed), **kw)
    jax.block_until_ready(mc.post_warmup_state)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    mc.run(mc.post_warmup_state.rng_key, **kw)
    samples = {k: np.asarray(v) for k, v in mc.get_samples().items()}
    sample_s = time.perf_counter() - t0
    errors = {n: inference.posterior_errors({k: v[:n] for k, v in samples.items()}, ref) for n in NUTS_PREFIXES}
    return warm_s, sample_s, errors


def nuts_time_to(errors, warm_s, sample_s, mean_err, sd_err):
    """Seconds NUTS needs to reach errors at or below ``(mean_err, sd_err)`` (its first prefix that does;
    time of a prefix of n draws: warm-up + n/N of the sampling time), and that n; ``(nan, None)`` if none does."""
    for n in NUTS_PREFIXES:
        if errors[n]["mean_err_sd"] <= mean_err and errors[n]["sd_rel_err"] <= sd_err:
            return warm_s + sample_s * n / NUTS_PREFIXES[-1], n
    return float("nan"), None


def posterior_rows(post, steps, seeds, quick=False):
    """Score every guide on one posterior (in this process); one progress line per guide on stderr."""
    model, kw, ref = load_posterior(post)
    rows = []
    for label, make in guides_for(model, QUICK_GUIDES if quick else GUIDES).items():
        scores = np.array([score_guide(model, make, kw, ref, steps, seed, LOSSES.get(label)) for seed in seeds])
        mean = scores.mean(0)
        rows.append({"posterior": post.split("-")[-1], "guide": label, "mean err (ref sd)": float(mean[0]),
                     "sd rel err": float(mean[1]), "k-hat": float(mean[2]), "worst k-hat": float(scores[:, 2].max()),
                     "ELBO": float(mean[3]), "fit s": float(mean[4])})
        print(f"  done: {post} {label}: " + ", ".join(f"{v:.3g}" for v in mean), file=sys.stderr, flush=True)
    if NUTS_WARMUP:
        warm_s, sample_s, errors = nuts_accuracy(model, kw, ref, seeds[0], NUTS_WARMUP)
        for row in rows:
            secs, n = nuts_time_to(errors, warm_s, sample_s, row["mean err (ref sd)"], row["sd rel err"])
            row["NUTS s to equal accuracy"] = secs
            row["NUTS draws"] = n if n is not None else f"> {NUTS_PREFIXES[-1]}"
        full = errors[NUTS_PREFIXES[-1]]
        rows.append({"posterior": post.split("-")[-1], "guide": f"NUTS (1 chain, {NUTS_WARMUP} warm-up, "
                     f"{NUTS_PREFIXES[-1]} draws)", "mean err (ref sd)": full["mean_err_sd"],
                     "sd rel err": full["sd_rel_err"], "fit s": warm_s + sample_s})
        print(f"  done: {post} NUTS: {warm_s:.1f} + {sample_s:.1f} s", file=sys.stderr, flush=True)
    return rows


def posterior_rows_in_subprocess(post, steps, num_seeds, quick=False, timeout=None, tries=2):
    """``posterior_rows`` in a fresh process per posterior, killed and retried if it stalls.

    One process for all posteriors compiles hundreds of executables: that exhausted the memory
    maps (LLVM "Cannot allocate memory"), and dropping them with ``jax.clear_caches()`` between
    runs was followed three times by XLA's CPU runtime waiting for good (no CPU use).  A process
    per posterior frees everything when it exits, and a stalled one is killed after ``timeout``.
    """
    timeout = timeout or (300 if quick else 1800)
    cmd = [sys.executable, os.path.abspath(__file__), "--posterior", post, "--steps", str(steps),
           "--seeds", str(num_seeds)] + (["--quick"] if quick else []) + (["--guides", ";".join(GUIDES)] if GUIDES else []) \
        + (["--nuts-warmup", str(NUTS_WARMUP)] if NUTS_WARMUP else [])
    for attempt in range(1, tries + 1):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"  {post}: no result after {timeout} s (attempt {attempt}); retrying", file=sys.stderr, flush=True)
            continue
        if proc.returncode:
            raise RuntimeError(f"scoring {post} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        sys.stderr.write(proc.stderr)
        return json.loads(proc.stdout.strip().splitlines()[-1])
    raise RuntimeError(f"scoring {post}: no result in {tries} attempts of {timeout} s")


def bench_posteriordb(steps, names, num_seeds, quick=False):
    if not os.path.isdir(pdb.ROOT):  # a checkout without the shared folder: say so, run the rest
        print(f"\n(posteriordb section skipped: no reference posteriors at {pdb.ROOT}; "
              "set POSTERIORDB to the posteriordb folder)")
        return
    if quick:  # one tiny posterior: in this process (the subprocess guards long runs' memory maps)
        rows = [row for post in names for row in posterior_rows(post, steps, range(num_seeds), quick)]
    else:
        rows = [row for post in names for row in posterior_rows_in_subprocess(post, steps, num_seeds, quick)]
    cols = ["posterior", "guide", "mean err (ref sd)", "sd rel err", "k-hat", "worst k-hat", "ELBO", "fit s"]
    table(rows, cols + (["NUTS s to equal accuracy", "NUTS draws"] if NUTS_WARMUP else []),
          f"posteriordb, {steps} SVI steps each (Adam 1e-2, clip 10, cosine decay), mean over seeds "
          f"{list(range(num_seeds))}" + (f"; NUTS (seed 0, {NUTS_WARMUP} warm-up) timed in the same process: the time "
                                         "its first prefix of draws with both errors at or below the guide's took"
                                         if NUTS_WARMUP else ""))


def funnel(d=10):
    v = numpyro.sample("v", dist.Normal(0.0, 3.0))
    numpyro.sample("x", dist.Normal(jnp.zeros(d - 1), jnp.exp(v / 2)).to_event(1))


def bench_funnel(steps, seeds, nuts_samples, quick=False):
    sd_x = np.exp(9 / 4)  # exact: sd(v) = 3, sd(x_i) = sqrt(E exp(v)) = exp(9/4)
    rows, trained = [], None
    labels = QUICK_FUNNEL_GUIDES if quick else [g for g in FUNNEL_GUIDES if GUIDES is None or g in GUIDES]
    for label, make in guides_for(funnel, labels).items():
        ev, ex, kh = [], [], []
        for seed in seeds:
            guide = make()
            loss = LOSSES[label]() if label in LOSSES else None
            params, _, _ = inference.run_svi(funnel, guide, num_steps=steps, seed=seed, loss=loss,
                                             optimizer=inference.suggest_optimizer(steps, 1e-2))
            s = guide.sample_posterior(jax.random.PRNGKey(7), params, sample_shape=(20000,))
            ev.append(abs(np.std(np.asarray(s["v"])) / 3 - 1))
            ex.append(np.mean(np.abs(np.log(np.std(np.asarray(s["x"]), 0) / sd_x))))
            kh.append(inference.diagnose(funnel, guide, params, num_samples=1000)["khat"])
            if label == "AutoFlow(iaf)" and trained is None:
                trained = (guide, params)
        rows.append({"guide": label, "|sd(v)/3 - 1|": float(np.mean(ev)), "max over seeds": float(np.max(ev)),
                     "mean |log sd(x) ratio|": float(np.mean(ex)), "k-hat": float(np.mean(kh))})
    table(rows, ["guide", "|sd(v)/3 - 1|", "max over seeds", "mean |log sd(x) ratio|", "k-hat"],
          f"Neal's funnel d=10 vs exact sds, {steps} steps, seeds {list(seeds)} (mean over seeds)")

    if trained is None:  # --guides without AutoFlow(iaf): no NeuTra table
        return
    import arviz as az
    rows = []
    guide, params = trained
    for label in ("NUTS", "NeuTra NUTS"):
        t0 = time.perf_counter()
        if label == "NUTS":
            mc = MCMC(NUTS(funnel), num_warmup=nuts_samples, num_samples=nuts_samples, progress_bar=False)
            mc.run(jax.random.PRNGKey(0))
            samples = mc.get_samples()
        else:
            mc, samples = inference.neutra_nuts(funnel, guide, params, num_warmup=nuts_samples,
                                                num_samples=nuts_samples)
        secs = time.perf_counter() - t0
        v = np.asarray(samples["v"])
        ess = float(az.ess(v[None]))
        div = int(np.sum(np.asarray(mc.get_extra_fields()["diverging"])))
        rows.append({"sampler": label, "ESS(v)": ess, "seconds (incl. compile)": secs, "ESS(v)/s": ess / secs,
                     "sd(v) (exact 3)": float(v.std()), "divergences": div})
    table(rows, ["sampler", "ESS(v)", "seconds (incl. compile)", "ESS(v)/s", "sd(v) (exact 3)", "divergences"],
          f"NeuTra vs plain NUTS on the funnel ({nuts_samples} warmup + {nuts_samples} draws)")


def speed_guides(model, D):
    """Guides at identical architecture (3 IAF layers, hidden (D, D)) and our default."""
    arch = dict(num_layers=3, hidden_dims=(D, D), affine=False)
    return {
        "AutoIAFNormal(num_flows=3, hidden=[D,D])": lambda: AutoIAFNormal(model, num_flows=3, hidden_dims=[D, D]),
        "AutoFlow(iaf, same arch, plain ELBO gradient)": lambda: inference.AutoFlow(model, "iaf", stl=False,
                                                                                      warm_start=None, **arch),
        "AutoFlow(iaf, same arch, STL)": lambda: inference.AutoFlow(model, "iaf", warm_start=None, **arch),
        "AutoFlow(iaf) default": lambda: inference.AutoFlow(model, "iaf"),
    }


def bench_svi_speed(n, steps, quick=False):
    """Steps/s of jitted SVI updates (after warm-up) and the ELBO after ``steps`` steps (1000 draws)."""
    model, kw = eight_schools_noncentered()
    rows = []
    models = (("Neal's funnel (D=10)", funnel, {}), ("eight schools noncentered (D=10)", model, kw))
    for title, m, args in models[:1] if quick else models:
        guides = list(speed_guides(m, 10).items())
        for label, make in [guides[0], guides[-1]] if quick else guides:
            guide = make()
            svi = SVI(m, guide, inference.suggest_optimizer(n), Trace_ELBO())
            state = svi.init(jax.random.PRNGKey(0), **args)
            run = jax.jit(lambda s: jax.lax.scan(lambda c, _: (svi.update(c, **args)[0], None), s, None, length=n)[0])
            secs = median_time(run, state, repeats=1 if quick else 5, warmup=1)
            params, _, _ = inference.run_svi(m, guide, num_steps=steps, seed=0,
                                             optimizer=inference.suggest_optimizer(steps, 1e-2), **args)
            elbo = inference.diagnose(m, guide, params, num_samples=1000, **args)["elbo"]
            rows.append({"model": title, "guide": label, "steps/s": n / secs, f"ELBO after {steps} steps": elbo})
    table(rows, ["model", "guide", "steps/s", f"ELBO after {steps} steps"],
          f"SVI steps/s ({n} jitted steps, median of {1 if quick else 5} runs after warm-up) and final ELBO "
          "(seed 0, 1000 draws)")


def bench_fit_vs_flowjax(quick):
    from sklearn.datasets import load_breast_cancer, make_moons

    x_m, _ = make_moons(2000 if quick else 20000, noise=0.05, random_state=0)
    x_b = load_breast_cancer().data
    sets = {"two moons": x_m} if quick else {"two moons": x_m, "breast_cancer (30-d)": x_b}
    rows = []
    for name, x in sets.items():
        x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
        d = x.shape[1]
        layers, width, batch, lr = 4, 32, 128, 1e-3
        epochs = 1 if quick else 100
        n_train = int(round(x.shape[0] * 0.9))
        steps = epochs * (n_train // batch)
        res = {}
        # ours
        flow = nf_ppl.maf(jax.random.PRNGKey(0), d, num_layers=layers, hidden_dims=(width,), activation="relu")
        kw = dict(batch_size=batch, learning_rate=lr, val_fraction=0.1, progress=False, patience=None,
                  eval_every=max(1, n_train // batch))
        inference.fit(flow, x, max_steps=kw["eval_every"], **kw)  # warm-up compile
        t0 = time.perf_counter()
        _, hist = inference.fit(flow, x, max_steps=steps, **kw)
        res["nf-ppl"] = (time.perf_counter() - t0, np.asarray(hist.val_loss), np.asarray(hist.wall_time), steps)
        # flowjax
        from flowjax.distributions import Normal
        from flowjax.flows import masked_autoregressive_flow
        from flowjax.train import fit_to_data

        fj = masked_autoregressive_flow(jax.random.PRNGKey(0), base_dist=Normal(jnp.zeros(d)), flow_layers=layers,
                                        nn_width=width, nn_depth=1)
        fit_to_data(jax.random.PRNGKey(1), fj, x, learning_rate=lr, max_epochs=1, batch_size=batch,
                    show_progress=False)  # warm-up compile
        t0 = time.perf_counter()
        _, losses = fit_to_data(jax.random.PRNGKey(1), fj, x, learning_rate=lr, max_epochs=epochs,
                                max_patience=10**9, batch_size=batch, show_progress=False)
        secs = time.perf_counter() - t0
        val = np.asarray(losses["val"])
        res["flowjax"] = (secs, val, secs * np.arange(1, len(val) + 1) / len(val), len(val) * (n_train // batch))
        target = max(np.min(r[1]) for r in res.values()) + 0.02
        for lib, (secs, val, wall, nsteps) in res.items():
            hit = np.flatnonzero(val <= target)
            rows.append({"data": name, "library": lib, "steps/s": nsteps / secs, "best val NLL": float(np.min(val)),
                         "target NLL": float(target), "time to target s": float(wall[hit[0]]) if hit.size else float("nan")})
    table(rows, ["data", "library", "steps/s", "best val NLL", "target NLL", "time to target s"],
          "MAF maximum likelihood: inference.fit vs flowjax.fit_to_data (4 layers, width 32, batch 128, Adam 1e-3)")


def bench_scale(dims, steps, nuts_max_dim, seeds=(0,), quick=False):
    import inference_scaling as sc

    rows = []
    for dim in dims:
        rows += sc.rows_for(dim, steps, nuts_max_dim, log=lambda m: print(m, file=sys.stderr, flush=True),
                            seeds=tuple(seeds), only=("AutoNormal", "AutoFlow (default)") if quick else None)
    table(rows, sc.COLUMNS, f"Hierarchical logistic regression, D latent coordinates: {steps} SVI steps per guide, "
          f"seeds {list(seeds)} (errors against NUTS in the same run, means over seeds; ELBO from 256 draws)")


HALF_CAUCHY_DATA = np.array([0.4, -0.3, 1.1])


def student_t_model(df=1.5):
    numpyro.sample("x", dist.StudentT(df, 0.0, 1.0))


def half_cauchy_scale_model():
    """``tau ~ HalfCauchy(1)``, ``y_i ~ N(0, tau)`` for three points: the posterior of ``tau`` has a polynomial
    right tail (``tau^-5``), which an exponential-tailed guide in ``log tau`` cannot follow."""
    tau = numpyro.sample("tau", dist.HalfCauchy(1.0))
    numpyro.sample("y", dist.Normal(0.0, tau), obs=jnp.asarray(HALF_CAUCHY_DATA))


def _exact_quantiles(case, probs):
    from scipy import stats

    if case == "Student-t(1.5)":
        return stats.t.ppf(probs, 1.5)
    # half-Cauchy scale: the 1-D posterior of tau by quadrature on a log grid
    log_tau = np.linspace(-12.0, 14.0, 400001)
    tau = np.exp(log_tau)
    log_post = (np.log(2 / np.pi) - np.log1p(tau ** 2) + np.sum(stats.norm.logpdf(HALF_CAUCHY_DATA[:, None], 0.0, tau),
                                                                   axis=0) + log_tau)  # density in log tau
    w = np.exp(log_post - log_post.max())
    cdf = np.cumsum(w) / w.sum()
    return np.interp(probs, cdf, tau)


def bench_heavy(steps, seeds, nuts_samples, quick=False):
    """Tails of heavy-tailed posteriors: 0.5% and 99.5% quantiles against the exact ones (issue 19 item 3)."""
    cases = {"Student-t(1.5)": (student_t_model, "x"), "half-Cauchy scale (tau)": (half_cauchy_scale_model, "tau")}
    guides = {
        "AutoNormal": lambda m: AutoNormal(m),
        "AutoFlow (normal base)": lambda m: inference.AutoFlow(m, "iaf"),
        "AutoFlow (Student-t base)": lambda m: inference.AutoFlow(m, "iaf", base="student_t"),
    }
    if quick:  # the smoke run: one case, our guide, a few NUTS draws
        cases = dict(list(cases.items())[:1])
        guides = {k: v for k, v in guides.items() if "Student-t" in k}
    probs = np.array([0.005, 0.995])
    rows = []
    for case, (model, site) in cases.items():
        exact = _exact_quantiles(case, probs)
        for label, make in guides.items():
            errs, t0 = [], time.perf_counter()
            for seed in seeds:
                guide = make(model)
                params, _, _ = inference.run_svi(model, guide, num_steps=steps, seed=seed,
                                                 optimizer=inference.suggest_optimizer(steps, 1e-2))
                draws = np.asarray(guide.sample_posterior(jax.random.PRNGKey(7), params,
                                                          sample_shape=(40000,))[site])
                errs.append(np.abs(np.quantile(draws, probs) - exact) / np.abs(exact))
            errs = np.mean(errs, axis=0)
            rows.append({"posterior": case, "method": label, "0.5% q rel err": float(errs[0]),
                         "99.5% q rel err": float(errs[1]), "seconds": (time.perf_counter() - t0) / len(seeds)})
        t0 = time.perf_counter()
        mc = MCMC(NUTS(model), num_warmup=nuts_samples, num_samples=nuts_samples * 5, progress_bar=False)
        mc.run(jax.random.PRNGKey(0))
        draws = np.asarray(mc.get_samples()[site])
        errs = np.abs(np.quantile(draws, probs) - exact) / np.abs(exact)
        rows.append({"posterior": case, "method": f"NUTS ({nuts_samples} warmup, {nuts_samples * 5} draws)",
                     "0.5% q rel err": float(errs[0]), "99.5% q rel err": float(errs[1]),
                     "seconds": time.perf_counter() - t0})
    table(rows, ["posterior", "method", "0.5% q rel err", "99.5% q rel err", "seconds"],
          f"Heavy-tailed posteriors: relative error of the 0.5% and 99.5% quantiles against the exact ones, "
          f"{steps} SVI steps, seeds {list(seeds)} (mean over seeds; 40,000 guide draws)")


def bimodal_model(minor=0.3):
    """Two well-separated modes in 2-D (masses 0.7 and 0.3, sd 0.5 each, 5 sds apart)."""
    mix = dist.MixtureSameFamily(dist.Categorical(jnp.array([1 - minor, minor])),
                                 dist.MultivariateNormal(jnp.array([[-2.5, 0.0], [2.5, 0.0]]), jnp.eye(2)[None] * 0.25))
    numpyro.sample("z", mix)


def bench_modes(steps, seeds, nuts_samples, quick=False):
    """Mass of the minor mode (exact 0.3) under each guide and under NUTS (issue 19 items 2 and 4)."""
    from numpyro.infer.autoguide import AutoBNAFNormal

    guides = {
        "AutoNormal (ELBO)": (lambda: AutoNormal(bimodal_model), None),
        "AutoBNAFNormal (ELBO)": (lambda: AutoBNAFNormal(bimodal_model), None),
        "AutoFlow default (ELBO)": (lambda: inference.AutoFlow(bimodal_model), None),
        "AutoFlow(iaf), IWAE(16)": (lambda: inference.AutoFlow(bimodal_model), lambda: inference.IWAE(16)),
        "AutoFlow(maf, stl=False, path_pooling='resample'), MassCovering()": (
            lambda: inference.AutoFlow(bimodal_model, "maf", stl=False, path_pooling="resample"),
            lambda: inference.MassCovering()),
    }
    if quick:
        guides = dict(list(guides.items())[-1:])
    rows = []
    for label, (make, make_loss) in guides.items():
        masses, t0 = [], time.perf_counter()
        for seed in seeds:
            guide = make()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                params, _, _ = inference.run_svi(bimodal_model, guide, num_steps=steps, seed=seed,
                                                 loss=make_loss() if make_loss else None)
            z = np.asarray(guide.sample_posterior(jax.random.PRNGKey(7), params, sample_shape=(20000,))["z"])
            masses.append(float(np.mean(z[:, 0] > 0)))
        rows.append({"method": label, "minor-mode mass per seed (exact 0.3)": ", ".join(f"{m:.3f}" for m in masses),
                     "max abs error": float(np.max(np.abs(np.array(masses) - 0.3))),
                     "seconds": (time.perf_counter() - t0) / len(seeds)})
    t0 = time.perf_counter()
    masses = []
    for chain_seed in seeds:
        mc = MCMC(NUTS(bimodal_model), num_warmup=nuts_samples, num_samples=nuts_samples * 2, progress_bar=False)
        mc.run(jax.random.PRNGKey(chain_seed))
        masses.append(float(np.mean(np.asarray(mc.get_samples()["z"])[:, 0] > 0)))
    rows.append({"method": f"NUTS, one chain ({nuts_samples} warmup, {nuts_samples * 2} draws)",
                 "minor-mode mass per seed (exact 0.3)": ", ".join(f"{m:.3f}" for m in masses),
                 "max abs error": float(np.max(np.abs(np.array(masses) - 0.3))),
                 "seconds": (time.perf_counter() - t0) / len(seeds)})
    table(rows, ["method", "minor-mode mass per seed (exact 0.3)", "max abs error", "seconds"],
          f"Two well-separated modes (masses 0.7 / 0.3): the minor mode's mass, {steps} SVI steps, seeds {list(seeds)}")


def bench_discrete(steps, quick=False):
    """AutoFlow + TraceEnum_ELBO against NUTS with enumeration on models with discrete sites (issue 19 item 1)."""
    import importlib.util

    if importlib.util.find_spec("funsor") is None:
        print("\n(discrete section skipped: funsor is not installed; pip install 'nf-ppl[enum]')")
        return
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import test_enumeration as te
    from numpyro.infer import TraceEnum_ELBO

    cases = {"Gaussian mixture (50 points)": (te.mixture, te.MIX_DATA, ("w", "mu", "sigma")),
             "HMM, 2 states, 22 steps": (te.hmm, te.HMM_DATA, ("means", "scale"))}
    rows = []
    for case, (model, data, sites) in cases.items():
        t0 = time.perf_counter()
        mc = MCMC(NUTS(model), num_warmup=50 if quick else 1000, num_samples=50 if quick else 4000, progress_bar=False)
        mc.run(jax.random.PRNGKey(0), data)
        ref = {k: np.asarray(v) for k, v in mc.get_samples().items()}
        nuts_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        guide = inference.AutoFlow(model)
        params, _, _ = inference.run_svi(model, guide, data, num_steps=steps, seed=0, loss=TraceEnum_ELBO())
        draws = guide.sample_posterior(jax.random.PRNGKey(1), params, data, sample_shape=(4000,))
        err = inference.posterior_errors({k: np.asarray(v) for k, v in draws.items() if k in sites},
                                         {k: ref[k] for k in sites})
        rows.append({"model": case, "AutoFlow mean err (NUTS sd)": err["mean_err_sd"],
                     "AutoFlow sd rel err": err["sd_rel_err"], "AutoFlow s": time.perf_counter() - t0,
                     "NUTS s (1000 + 4000)": nuts_s})
    table(rows, ["model", "AutoFlow mean err (NUTS sd)", "AutoFlow sd rel err", "AutoFlow s", "NUTS s (1000 + 4000)"],
          f"Enumerated discrete sites: AutoFlow with TraceEnum_ELBO ({steps} steps) against NUTS with enumeration")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sections", default="pdb,funnel,speed,fit,scale,heavy,modes,discrete")
    ap.add_argument("--steps", type=int, default=2000, help="SVI steps per guide (full run)")
    ap.add_argument("--posterior", help="(internal) score the guides on this posterior, print JSON rows")
    ap.add_argument("--guides", help="semicolon-separated guide labels to run in pdb/funnel (default: all)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per guide on posteriordb")
    ap.add_argument("--scale-dims", default="10,100,1000,10000", help="latent dimensions of the scale section")
    ap.add_argument("--scale-seeds", type=int, default=3, help="SVI seeds per guide in the scale section")
    ap.add_argument("--nuts-max-dim", type=int, default=10000, help="largest D with a NUTS reference (scale)")
    ap.add_argument("--nuts-warmup", type=int, default=0,
                    help="pdb: also run NUTS (this many warm-up steps) and give each guide NUTS's time to equal accuracy")
    ap.add_argument("--posteriors", help="pdb: comma-separated posterior names (default: all)")
    args = ap.parse_args()
    q = args.quick
    global GUIDES, NUTS_WARMUP
    GUIDES = args.guides.split(";") if args.guides else None
    NUTS_WARMUP = args.nuts_warmup
    if args.posterior:
        print(json.dumps(posterior_rows(args.posterior, args.steps, range(args.seeds), q)))
        return
    sections = args.sections.split(",")
    t0 = time.perf_counter()
    print(f"jax {jax.__version__}, numpyro {numpyro.__version__}, devices {jax.devices()}, quick={q}")
    if "pdb" in sections:
        names = ["eight_schools-eight_schools_noncentered"] if q else [
            "eight_schools-eight_schools_noncentered", "eight_schools_centered", *list(pdb.POSTERIORS)[1:]]
        if args.posteriors:
            names = [n for n in names if n.split("-")[-1] in args.posteriors.split(",") or n in args.posteriors.split(",")]
        bench_posteriordb(20 if q else args.steps, names, 1 if q else args.seeds, q)
    if "funnel" in sections:
        bench_funnel(20 if q else args.steps, range(1 if q else 4), 20 if q else 2000, q)
    if "speed" in sections:
        bench_svi_speed(20 if q else 500, 20 if q else args.steps, q)
    if "fit" in sections:
        bench_fit_vs_flowjax(q)
    if "scale" in sections:  # --quick: D = 10 and no NUTS reference (a smoke run of the table)
        dims = [10] if q else [int(d) for d in args.scale_dims.split(",")]
        bench_scale(dims, 20 if q else args.steps, 0 if q else args.nuts_max_dim,
                    range(1 if q else args.scale_seeds), q)
    if "heavy" in sections:
        bench_heavy(20 if q else args.steps, range(1 if q else 3), 20 if q else 2000, q)
    if "modes" in sections:
        bench_modes(20 if q else args.steps, range(1 if q else 3), 20 if q else 2000, q)
    if "discrete" in sections:
        bench_discrete(20 if q else args.steps, q)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

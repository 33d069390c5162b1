"""``nf-ppl demo``: the main job, end to end, writing a report folder (Markdown + PNG plots).

1. Symbolic change of variables (SymPy): polar coordinates and x -> x^2 giving chi-square(1),
   each checked against an independent closed form.
2. Density estimation: a MAF and a neural spline flow fitted to two moons by maximum likelihood,
   with density contours and samples plotted.
3. Bayesian inference: an IAF flow guide fitted by SVI to Neal's funnel, compared with AutoNormal
   and NUTS (standard deviation of the funnel's neck ``v``, true value 3), with an ArviZ summary.

``--quick`` runs the same steps with tiny budgets (seconds; a two-layer flow guide with one warm-start
path, and no AutoNormal); the full run takes about two to three minutes on a 2-core CPU.  Progress bars
are shown on a terminal only, so a report printed to a log file or a pipe stays readable.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

_TERMINAL = sys.stderr.isatty()  # progress bars only where they redraw in place

FUNNEL_DIM = 10


def two_moons(seed: int, n: int) -> np.ndarray:
    """Two interleaved half circles with Gaussian noise (standardised), as in scikit-learn."""
    rng = np.random.default_rng(seed)
    t = np.pi * rng.uniform(size=n)
    upper = rng.uniform(size=n) < 0.5
    x = np.where(upper, np.cos(t), 1 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    data = np.stack([x, y], -1) + 0.05 * rng.normal(size=(n, 2))  # scikit-learn's make_moons(noise=0.05)
    return (data - data.mean(0)) / data.std(0)


# Pass line of the density part: with the demo's 7000 training rows maf's default fit scores -1.20
# to -1.30 and nsf's -1.22 to -1.24 over twelve initial draws (seeds 0-11; bench/RESULTS.md), a fit
# that fills the gap between the moons (as before 2026-12) -1.6 to -2.  With 2400 rows (the demo
# before 2026-12-06) maf's fit from one or two of twelve draws stopped at -1.4 to -1.6 while still
# learning slowly, so the demo fits the number of rows on which every draw tried separates the moons.
PASS_LOG_LIKELIHOOD = -1.45
MOONS_ROWS, MOONS_TRAIN = 8000, 7000  # --quick: 3000 and 2400


class Report:
    def __init__(self, folder: str):
        self.folder = folder
        self.lines: list[str] = ["# nf-ppl demo report", ""]
        self.failures: list[str] = []

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def check(self, ok: bool, what: str) -> None:
        self.say(f"- [{'pass' if ok else 'FAIL'}] {what}")
        if not ok:
            self.failures.append(what)

    def figure(self, fig, name: str, caption: str) -> None:
        path = os.path.join(self.folder, name)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        self.lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
        print(f"  plot: {path}")

    def write(self) -> str:
        path = os.path.join(self.folder, "report.md")
        with open(path, "w") as fh:
            fh.write("\n".join(self.lines) + "\n")
        return path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    except ImportError:
        print("matplotlib is not installed (pip install 'nf-ppl[plot]'): plots are skipped")
        return None


# -- 1. symbolic ---------------------------------------------------------------------------------
def symbolic_part(report: Report) -> None:
    import sympy as sp

    from symbolic import change_of_variables

    report.say("## 1. Change of variables, derived by SymPy")
    r, t, x, y = sp.symbols("r t x y", real=True)
    polar = change_of_variables([r * sp.cos(t), r * sp.sin(t)], [r, t], 1 / (2 * sp.pi),
                                {r: (0, 1), t: (0, 2 * sp.pi)}, outputs=[x, y])
    report.say("Polar coordinates (r, t) -> (r cos t, r sin t) of Uniform([0,1] x [0, 2 pi]):")
    report.say(f"- det J = `{sp.simplify(polar.det)}`, pushforward density `{polar.density}` on `{polar.output_support}`")
    expected = 1 / (2 * sp.pi * sp.sqrt(x ** 2 + y ** 2))
    report.check(sp.simplify(polar.density - expected) == 0, "density equals 1 / (2 pi sqrt(x^2 + y^2))")
    mass, how = polar.normalization()
    report.check(abs(float(mass) - 1) < 1e-6, f"density integrates to 1 over the unit disc ({how})")

    u = sp.Symbol("x", real=True)
    phi = sp.exp(-u ** 2 / 2) / sp.sqrt(2 * sp.pi)
    chi2 = change_of_variables(u ** 2, u, phi)
    out = chi2.outputs[0] if hasattr(chi2, "outputs") else sp.Symbol("y")
    report.say("x -> x^2 of N(0, 1), both branches +-sqrt(y) summed:")
    report.say(f"- branches `{chi2.branches}`, density `{sp.simplify(chi2.density)}` on `{chi2.output_support}`")
    from sympy.stats import ChiSquared, density

    reference = density(ChiSquared("C", 1))(out)
    report.check(sp.simplify(chi2.density - reference) == 0, "density equals sympy.stats ChiSquared(1)")
    report.say()


# -- 2. density estimation -----------------------------------------------------------------------
def density_part(report: Report, quick: bool, seed: int, plt) -> None:
    import jax

    import inference

    report.say("## 2. Density estimation on two moons (maximum likelihood)")
    rows, n_train = (3000, 2400) if quick else (MOONS_ROWS, MOONS_TRAIN)
    data = two_moons(seed, rows)
    train, test = data[:n_train], data[n_train:]
    names = {"MAF": "maf", "spline flow (NSF)": "nsf"}
    size = dict(num_layers=2, hidden_dims=(16, 16)) if quick else {}  # the full run: the builders' defaults
    fitted, scores = {}, {}
    for i, (name, builder) in enumerate(names.items()):
        start = time.perf_counter()
        flow = inference.build_flow(builder, seed + i, 2, **size)
        flow, history = inference.fit(flow, train, seed=seed, progress=_TERMINAL, **({"max_epochs": 10} if quick else {}))
        scores[name] = float(np.mean(np.asarray(flow.log_prob(test))))
        fitted[name] = flow
        report.say(f"- {name}: held-out mean log-likelihood {scores[name]:.3f} nats "
                   f"({time.perf_counter() - start:.1f} s; {history.stop_reason} after "
                   f"{history.epochs[-1]:.0f} epochs)")
    if not quick:
        worst = min(scores, key=scores.get)
        report.check(scores[worst] > PASS_LOG_LIKELIHOOD,
                     f"both flows above {PASS_LOG_LIKELIHOOD} nats held out (worst: {worst}, {scores[worst]:.3f}; "
                     "a fit that smears mass across the gap between the moons scores below it)")
    if plt is not None:
        grid = np.linspace(-2.5, 2.5, 160)
        gx, gy = np.meshgrid(grid, grid)
        pts = np.stack([gx, gy], -1)
        fig, axes = plt.subplots(2, len(fitted) + 1, figsize=(4 * (len(fitted) + 1), 8))
        axes[0, 0].scatter(train[:2000, 0], train[:2000, 1], s=2, alpha=0.4)
        axes[0, 0].set_title(f"training data ({min(2000, n_train)} of {n_train} rows)")
        axes[1, 0].axis("off")
        for j, (name, flow) in enumerate(fitted.items(), start=1):
            dens = np.exp(np.asarray(flow.log_prob(pts)))
            axes[0, j].contourf(gx, gy, dens, levels=30)
            axes[0, j].set_title(f"{name}: density")
            draws = np.asarray(flow.sample(jax.random.PRNGKey(seed + 10), (2000,)))
            axes[1, j].scatter(draws[:, 0], draws[:, 1], s=2, alpha=0.4, color="C1")
            axes[1, j].set_title(f"{name}: 2000 samples")
            for ax in axes[:, j]:
                ax.set_xlim(-2.5, 2.5)
                ax.set_ylim(-2.5, 2.5)
        axes[0, 0].set_xlim(-2.5, 2.5)
        axes[0, 0].set_ylim(-2.5, 2.5)
        report.figure(fig, "two_moons.png", "Two moons: data, fitted densities (top) and samples (bottom)")
        plt.close(fig)
    report.say()


# -- 3. Bayesian inference -------------------------------------------------------------------------
def funnel_model(dim: int = FUNNEL_DIM):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    def model():
        v = numpyro.sample("v", dist.Normal(0.0, 3.0))
        numpyro.sample("x", dist.Normal(jnp.zeros(dim - 1), jnp.exp(v / 2)).to_event(1))

    return model


def inference_part(report: Report, quick: bool, seed: int, plt) -> None:
    import arviz as az
    import jax
    from numpyro.infer import MCMC, NUTS, Predictive
    from numpyro.infer.autoguide import AutoNormal

    import inference

    model = funnel_model()
    steps = 300 if quick else 6000
    n_draws = 500 if quick else 4000
    draws, times = {}, {}
    # --quick (a smoke run): a small flow and one path, and no AutoNormal (its comparison is not checked there)
    guides = {"IAF flow guide": inference.AutoFlow(model, flow="iaf", num_layers=2, num_paths=1) if quick
              else inference.AutoFlow(model, flow="iaf")}
    if not quick:
        guides["AutoNormal"] = AutoNormal(model)
    names = [*guides, "NUTS"]
    report.say(f"## 3. Neal's funnel (d = {FUNNEL_DIM}): {' vs '.join(names)}")
    if quick:
        report.say("(--quick: short runs, not converged; the full demo trains 6000 steps, draws 4000 and checks "
                   "the guides against the truth)")
        report.say("")
    for name, guide in guides.items():
        params, elbo, seconds = inference.run_svi(model, guide, num_steps=steps, seed=seed, progress_bar=_TERMINAL)
        draws[name] = Predictive(guide, params=params, num_samples=n_draws)(jax.random.PRNGKey(seed + 1))
        times[name] = seconds
        report.say(f"- {name}: final ELBO {np.mean(elbo[-100:]):.2f}, {seconds:.1f} s")
    mcmc = MCMC(NUTS(model), num_warmup=200 if quick else 1000, num_samples=n_draws // 2 if quick else 2000,
                progress_bar=_TERMINAL)
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed + 2))
    times["NUTS"] = time.perf_counter() - start
    draws["NUTS"] = mcmc.get_samples()
    report.say(f"- NUTS: {times['NUTS']:.1f} s, {int(mcmc.get_extra_fields()['diverging'].sum())} divergences")
    report.say("")
    report.say("| method | sd of v (true 3.0) | mean of v (true 0.0) |")
    report.say("|---|---|---|")
    sds = {}
    for name, d in draws.items():
        v = np.asarray(d["v"])
        sds[name] = float(v.std())
        report.say(f"| {name} | {v.std():.2f} | {v.mean():.2f} |")
    report.say("")
    if not quick:
        report.check(abs(sds["IAF flow guide"] - 3) < abs(sds["AutoNormal"] - 3),
                     "the flow guide's sd of v is closer to the truth than AutoNormal's")
    idata = inference.draws_to_inference_data({k: np.asarray(v)[None] for k, v in draws["IAF flow guide"].items()})
    summary = az.summary(idata, var_names=["v"], kind="stats")
    report.say("ArviZ summary of the IAF guide's draws of v (the draws of the table's row):")
    report.say("")
    report.say("```")
    report.say(summary.to_string())
    report.say("```")
    report.say("")
    if plt is not None:
        fig, axes = plt.subplots(1, len(draws), figsize=(4.4 * len(draws), 4), sharex=True, sharey=True)
        for ax, (name, d) in zip(axes, draws.items()):
            ax.scatter(np.asarray(d["x"])[:, 0], np.asarray(d["v"]), s=2, alpha=0.3)
            ax.set_title(name)
            ax.set_xlabel("x[0]")
        axes[0].set_ylabel("v")
        axes[0].set_xlim(-20, 20)
        axes[0].set_ylim(-9, 9)
        report.figure(fig, "funnel.png", f"Neal's funnel: (x[0], v) draws of {', '.join(names[:-1])} and NUTS")
        plt.close(fig)


def run(quick: bool = False, out: str | None = None, seed: int = 0) -> int:
    folder = os.path.abspath(out or "nf-ppl-report")
    os.makedirs(folder, exist_ok=True)
    report = Report(folder)
    plt = _pyplot()
    start = time.perf_counter()
    symbolic_part(report)
    density_part(report, quick, seed, plt)
    inference_part(report, quick, seed, plt)
    report.say(f"Total time {time.perf_counter() - start:.0f} s" + (" (--quick)" if quick else ""))
    path = report.write()
    print(f"\nreport written to {path}")
    if report.failures:
        print(f"{len(report.failures)} check(s) failed: {report.failures}")
        return 1
    return 0

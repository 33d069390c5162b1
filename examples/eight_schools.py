"""Eight schools, centered and non-centered: flow guides vs NUTS, with ArviZ summaries and a forest plot.

What it shows
-------------
The classic hierarchical model (Rubin 1981): ``mu ~ N(0, 5^2)``, ``tau ~ HalfCauchy(5)``,
``theta_j ~ N(mu, tau^2)``, ``y_j ~ N(theta_j, sigma_j^2)`` for 8 schools, in its centered form and
in the non-centered form ``theta_j = mu + tau * eta_j``, ``eta_j ~ N(0, 1)``.

For each form an IAF guide (``inference.AutoFlow``) is trained with SVI and compared with NUTS:
``inference.to_inference_data`` turns the guide's draws into ArviZ data (an ``InferenceData``
under ArviZ 0.x, a ``DataTree`` under 1.x) and ``arviz.summary`` prints means, sds and
intervals next to NUTS's (``arviz.from_numpyro``), and ``inference.diagnose`` reports the guide's
Pareto k-hat against the sample-size threshold ``min(1 - 1/log10(S), 0.7)`` (below it the
importance weights, and so the guide's tails, can be trusted).  The centered form's funnel between ``tau`` and ``theta``
is harder for both methods (NUTS reports divergences there).

Plot: ``eight_schools_forest.png`` (a forest plot, drawn with matplotlib, of ``mu``, ``tau`` and ``theta`` for
the four fits).

Run ``python examples/eight_schools.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402


def main(argv=None) -> int:
    args = C.parse_args("eight_schools", __doc__.split("\n")[0], argv)
    out = C.prepare_output(args)
    with C.quick_compile(args.quick):
        return _run(args, out)


def _run(args, out) -> int:
    import arviz as az
    import jax
    import matplotlib.pyplot as plt
    from numpyro.infer import MCMC, NUTS

    import inference

    quick = args.quick
    svi_steps = 300 if quick else 6000
    warmup, draws_n = (100, 100) if quick else (1000, 2000)
    sigma, y = C.EIGHT_SCHOOLS_SIGMA, C.EIGHT_SCHOOLS_Y
    models = {"centered": C.eight_schools_centered, "non-centered": C.eight_schools_noncentered}
    if quick:  # a smoke run: one form is enough to exercise every step (tests/test_examples.py)
        models = {"non-centered": models["non-centered"]}
    idatas, metrics = {}, {"posterior_mean": {}, "posterior_sd": {}, "khat": {}, "divergences": {}}
    pd_opts = {"display.width": 120, "display.max_columns": 12}

    for m_index, (form, model) in enumerate(models.items()):
        print(f"\n================ {form} eight schools ================")
        guide = inference.AutoFlow(model, "iaf", num_layers=2 if quick else 3,
                                   hidden_dims=(16,) if quick else (32, 32))
        params, elbo, secs = inference.run_svi(model, guide, sigma, y=y, num_steps=svi_steps, seed=args.seed,
                                               optimizer=inference.suggest_optimizer(svi_steps, 1e-2))
        diag = inference.diagnose(model, guide, params, sigma, y=y, num_samples=200 if quick else 4000)
        metrics["khat"][form] = diag["khat"]
        print(f"IAF guide: {svi_steps} SVI steps in {secs:.1f} s, ELBO {diag['elbo']:.2f}, "
              f"importance-weighted bound {diag['iw_bound']:.2f}, k-hat {diag['khat']:.2f} -> {diag['reading']}")
        idata_vi = inference.to_inference_data(guide, params, sigma, y=y, num_samples=draws_n,
                                               num_chains=2, seed=args.seed + 1)
        if "theta" not in idata_vi.posterior and "eta" in idata_vi.posterior:
            post = idata_vi.posterior
            theta = post["mu"].values[..., None] + post["tau"].values[..., None] * post["eta"].values
            idata_vi = inference.draws_to_inference_data({**{k: post[k].values for k in post.data_vars},
                                                          "theta": theta})

        with C.timer() as t:
            mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=draws_n, num_chains=2,
                        chain_method="sequential", progress_bar=False)  # two chains: r_hat is defined
            mcmc.run(jax.random.PRNGKey(args.seed + 10 + m_index), sigma, y=y,
                     extra_fields=("diverging",))
        div = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
        metrics["divergences"][form] = div
        idata_nuts = az.from_numpyro(mcmc)
        print(f"NUTS: 2 chains of {warmup} warm-up + {draws_n} draws in {t():.1f} s, {div} divergences")

        import pandas as pd

        names = ["mu", "tau", "theta"]
        # the plot's 90% highest-density intervals (ArviZ 1.x names the level ci_prob and defaults to
        # equal-tailed intervals; 0.x calls it hdi_prob)
        level = {"ci_prob": 0.9, "ci_kind": "hdi"} if int(az.__version__.split(".")[0]) >= 1 else {"hdi_prob": 0.9}
        with pd.option_context(*[x for kv in pd_opts.items() for x in kv]):
            for label, idata, kind in (("IAF guide", idata_vi, "stats"), ("NUTS", idata_nuts, "all")):
                summ = az.summary(idata, var_names=names, kind=kind, round_to=2, **level)
                what = "independent draws: no r_hat or ESS to read" if kind == "stats" else \
                    "two chains: r_hat is near 1.00 where they agree; ESS counts effective draws"
                print(f"\n-- {label} ({form}; {what})\n{summ}")
                key = f"{form}/{label}"
                metrics["posterior_mean"][key] = {v: float(idata.posterior[v].mean()) for v in ("mu", "tau")}
                metrics["posterior_sd"][key] = {v: float(idata.posterior[v].std()) for v in ("mu", "tau")}
        idatas[f"IAF guide, {form}"] = idata_vi
        idatas[f"NUTS, {form}"] = idata_nuts

    fig = _forest(plt, idatas, ["mu", "tau", "theta"], prob=0.9)
    fig.suptitle(f"Eight schools: 90% HDIs, IAF guides vs NUTS ({' and '.join(models)})", fontsize=10)  # what ran
    C.save_figure(fig, out, "eight_schools_forest.png")

    print("\nposterior means of mu / tau:")
    for key, m in metrics["posterior_mean"].items():
        print(f"   {key:28s} mu {m['mu']:6.2f}   tau {m['tau']:6.2f}")
    C.save_metrics(out, metrics)
    _ = plt  # matplotlib is configured (Agg) by _common
    return 0


def _forest(plt, idatas: dict, names: list, prob: float):
    """Highest-density ``prob`` intervals (as in the printed summaries) and medians of every scalar
    of ``names``, one colour per fit.

    Drawn with matplotlib from the draws, so it looks the same under ArviZ 0.x and 1.x (whose
    ``plot_forest`` signatures differ).
    """
    rows = []
    for name in names:
        size = int(np.prod(next(iter(idatas.values())).posterior[name].shape[2:], dtype=int))
        rows += [(name, i, f"{name}[{i}]" if size > 1 else name) for i in range(size)]
    fig, ax = plt.subplots(figsize=(8, 9))
    for j, (label, idata) in enumerate(idatas.items()):
        offset = (j - (len(idatas) - 1) / 2) * 0.8 / len(idatas)
        for r, (name, i, _) in enumerate(rows):
            draws = np.asarray(idata.posterior[name]).reshape(-1, max(1, int(np.prod(idata.posterior[name].shape[2:]))))
            (lo, hi), med = _hdi(draws[:, i], prob), np.median(draws[:, i])
            y = len(rows) - 1 - r + offset
            ax.plot([lo, hi], [y, y], color=f"C{j}", lw=1.5, label=label if r == 0 else None)
            ax.plot([med], [y], "o", color=f"C{j}", ms=3)
    ax.set_yticks(range(len(rows)), [text for *_, text in reversed(rows)])
    ax.set_xlabel(f"{int(prob * 100)}% highest-density interval and median")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=len(idatas))  # below: covers no interval
    return fig


def _hdi(draws, prob: float):
    """The shortest interval holding ``prob`` of the draws (ArviZ's HDI of one unimodal scalar)."""
    x = np.sort(np.asarray(draws))
    k = max(1, int(np.floor(prob * len(x))))
    widths = x[k:] - x[:-k]
    i = int(np.argmin(widths))
    return x[i], x[i + k]


if __name__ == "__main__":
    sys.exit(main())

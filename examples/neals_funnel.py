"""Neal's funnel: an IAF guide vs AutoNormal vs NUTS, and flow-preconditioned NUTS (NeuTra).

What it shows
-------------
Neal's funnel (``v ~ N(0, 3^2)``, ``x_i | v ~ N(0, e^v)``, ``d = 10`` coordinates; ``d = 3`` in
``--quick``) has a neck where the scale of ``x`` shrinks by orders of magnitude, which a
mean-field Gaussian cannot follow and which plain NUTS explores slowly.

1. Variational inference with ``inference.AutoFlow`` (an inverse autoregressive flow on top of
   the AutoNormal-like affine start) and NumPyro's ``AutoNormal``; the standard deviation of
   ``v`` under each guide is printed next to the truth (3).
2. Plain NUTS vs NeuTra (``inference.neutra_nuts``: NUTS in the flow's base space, where the
   funnel is close to a standard normal): effective sample size of ``v`` (``arviz.ess``),
   run time and effective samples per second (for NeuTra also counting the guide's training),
   divergences.

Plots: ``funnel_marginals.png`` (draws of each method over the exact ``(v, x_1)`` density) and
``funnel_v_traces.png`` (the chains of ``v``: NeuTra mixes through the neck, NUTS sticks).

Run ``python examples/neals_funnel.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402


def main(argv=None) -> int:
    args = C.parse_args("neals_funnel", __doc__.split("\n")[0], argv)
    out = C.prepare_output(args)
    with C.quick_compile(args.quick):
        return _run(args, out)


def _ess(draws) -> float:
    import arviz as az

    return float(az.ess(np.asarray(draws, np.float64)[None, :]))


def _run(args, out) -> int:
    import jax
    import matplotlib.pyplot as plt
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.autoguide import AutoNormal

    import inference

    quick = args.quick
    dim = 3 if quick else 10
    svi_steps = 300 if quick else 5000
    warmup, draws_n = (100, 250) if quick else (1000, 2000)
    model = C.funnel_model(dim)
    metrics = {"dim": dim, "v_sd": {"truth": 3.0}, "v_mean": {"truth": 0.0}}
    samples = {}

    print(f"\n== 1. Variational fits on the {dim}-dimensional funnel ({svi_steps} SVI steps) ==")
    guides = {
        "AutoNormal": AutoNormal(model),
        "IAF (AutoFlow)": inference.AutoFlow(model, "iaf", num_layers=2 if quick else 4,
                                             hidden_dims=(8, 8) if quick else (32, 32), init_scale=1.0),
    }
    fitted = {}
    for i, (label, guide) in enumerate(guides.items()):
        params, elbo, secs = inference.run_svi(model, guide, num_steps=svi_steps, seed=args.seed + i,
                                               optimizer=inference.suggest_optimizer(svi_steps, 5e-3))
        post = guide.sample_posterior(jax.random.PRNGKey(args.seed + 10 + i), params, sample_shape=(2000,))
        v = np.asarray(post["v"])
        samples[label] = np.stack([v, np.asarray(post["x"])[:, 0]], -1)
        fitted[label] = (guide, params)
        metrics.setdefault("svi_seconds", {})[label] = secs
        metrics["v_sd"][label] = float(v.std())
        metrics["v_mean"][label] = float(v.mean())
        metrics.setdefault("final_elbo", {})[label] = float(np.mean(elbo[-max(1, svi_steps // 10):]))
        print(f"   {label:15s} ELBO {metrics['final_elbo'][label]:8.3f}   v: mean {v.mean():+.2f}, sd {v.std():.2f} "
              f"(truth 0, 3)   [{secs:.1f} s]")

    print(f"\n== 2. NUTS vs NeuTra-NUTS ({warmup} warm-up + {draws_n} draws) ==")
    with C.timer() as secs:
        mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=draws_n, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(args.seed + 20))
        nuts = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
        nuts_div = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    nuts_secs = secs()
    guide, params = fitted["IAF (AutoFlow)"]
    with C.timer() as secs:
        mcmc_n, neutra = inference.neutra_nuts(model, guide, params, num_warmup=warmup, num_samples=draws_n,
                                               seed=args.seed + 21)
        neutra = {k: np.asarray(v) for k, v in neutra.items()}
        neutra_div = int(np.asarray(mcmc_n.get_extra_fields()["diverging"]).sum())
    neutra_secs = secs()
    for label, draws, secs_, div in (("NUTS", nuts, nuts_secs, nuts_div), ("NeuTra", neutra, neutra_secs, neutra_div)):
        v = draws["v"]
        ess = _ess(v)
        samples[label] = np.stack([v, draws["x"][:, 0]], -1)
        metrics["v_sd"][label] = float(v.std())
        metrics["v_mean"][label] = float(v.mean())
        metrics.setdefault("ess_v", {})[label] = ess
        metrics.setdefault("ess_v_per_second", {})[label] = ess / secs_
        metrics.setdefault("divergences", {})[label] = div
        metrics.setdefault("mcmc_seconds", {})[label] = secs_
        print(f"   {label:7s} v: mean {v.mean():+.2f}, sd {v.std():.2f}; ESS(v) {ess:7.1f} in {secs_:5.1f} s "
              f"(compile included) = {ess / secs_:7.1f} ESS/s; {div} divergences")

    # --- plots
    xlim, ylim = (-9.0, 9.0), (-20.0, 20.0)
    gv, gx = np.meshgrid(np.linspace(*xlim, 200), np.linspace(*ylim, 200), indexing="ij")
    exact = C.funnel_log_density(gv, gx)
    order = ["AutoNormal", "IAF (AutoFlow)", "NUTS", "NeuTra"]
    fig, axes = plt.subplots(1, 4, figsize=(15, 4), sharey=True)
    for ax, label in zip(axes, order):
        ax.contourf(gv, gx, np.clip(exact, -14, None), levels=14, cmap="Greys")
        pts = samples[label]
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, color="C3", linewidths=0)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_xlabel("v")
        ax.set_title(f"{label}: sd(v) = {pts[:, 0].std():.2f} (truth 3)", fontsize=9)
    axes[0].set_ylabel("x_1")
    fig.suptitle(f"Neal's funnel (d = {dim}): draws (red) over the exact log density of (v, x_1) (grey)", fontsize=11)
    fig.tight_layout()
    C.save_figure(fig, out, "funnel_marginals.png")

    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.plot(nuts["v"], lw=0.7, label=f"NUTS (ESS {metrics['ess_v']['NUTS']:.0f})")
    ax.plot(neutra["v"], lw=0.7, alpha=0.8, label=f"NeuTra (ESS {metrics['ess_v']['NeuTra']:.0f})")
    ax.set_xlabel("draw")
    ax.set_ylabel("v")
    ax.set_title("Trace of the funnel's log-scale v (after warm-up)", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    C.save_figure(fig, out, "funnel_v_traces.png")

    r = metrics["ess_v_per_second"]
    training = metrics["svi_seconds"]["IAF (AutoFlow)"]
    with_training = metrics["ess_v"]["NeuTra"] / (metrics["mcmc_seconds"]["NeuTra"] + training)
    metrics["ess_v_per_second"]["NeuTra, guide training included"] = with_training
    print(f"\nNeuTra / NUTS effective samples per second for v: {r['NeuTra'] / max(r['NUTS'], 1e-12):.2f}x "
          f"for the sampling alone; {with_training / max(r['NUTS'], 1e-12):.2f}x counting the IAF guide's "
          f"{training:.1f} s of training")
    C.save_metrics(out, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Density estimation in 2-D: MAF vs RealNVP vs a neural spline flow, fitted by maximum likelihood.

What it shows
-------------
Three flows (``nf_ppl.maf``, ``nf_ppl.realnvp`` and the autoregressive rational-quadratic spline
flow ``nsf`` from ``nf_ppl.flows``) are fitted with ``inference.fit`` (minibatch maximum
likelihood, validation split, early stopping) to two targets:

* ``moons``: the two interleaved half circles;
* ``gaussian ring``: an equal mixture of 8 narrow Gaussians evenly spaced on a circle.

For each target the held-out mean log-likelihood of every flow is printed next to the baseline
of a single Gaussian fitted to the training data (a flow that learned anything beats it), and
``density_<target>.png`` shows the data, each flow's density (contours) and draws from each flow.

Run ``python examples/density_2d.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402

LIMS = {"moons": ((-2.6, 2.6), (-2.0, 2.0)), "gaussian ring": ((-3.0, 3.0), (-3.0, 3.0))}


def _spline_builder():
    """The spline flow builder ``nf_ppl.nsf``."""
    import nf_ppl

    return nf_ppl.nsf


def gaussian_baseline(train, test) -> float:
    """Held-out mean log-likelihood of a full-covariance Gaussian fitted to ``train``."""
    return float(np.mean(_gauss_logpdf(train, test)))


def _gauss_logpdf(train, pts):
    """Log density at ``pts`` of the maximum-likelihood Gaussian of ``train``."""
    mu, cov = train.mean(0), np.cov(train.T)
    diff = pts - mu
    sol = np.linalg.solve(cov, diff.T).T
    return -0.5 * np.sum(diff * sol, 1) - 0.5 * np.linalg.slogdet(cov)[1] - np.log(2 * np.pi)


def main(argv=None) -> int:
    args = C.parse_args("density_2d", __doc__.split("\n")[0], argv)
    out = C.prepare_output(args)
    with C.quick_compile(args.quick):
        return _run(args, out)


def _run(args, out) -> int:
    import jax
    import matplotlib.pyplot as plt

    import inference
    import nf_ppl

    quick = args.quick
    n = 1500 if quick else 8000
    n_test = 500 if quick else 2000
    width = 16 if quick else 64
    steps = 200 if quick else 4000
    builders = {
        "MAF": lambda k: nf_ppl.maf(k, 2, num_layers=3 if quick else 5, hidden_dims=(width, width)),
        "RealNVP": lambda k: nf_ppl.realnvp(k, 2, num_layers=4 if quick else 8, hidden_dims=(width, width)),
    }
    nsf = _spline_builder()
    if nsf is not None:
        builders["spline (NSF)"] = lambda k: nsf(k, 2, num_layers=1 if quick else 4, hidden_dims=(width, width),
                                                 num_bins=8, tail_bound=3.5)
    if quick and nsf is not None:  # a smoke run: the spline flow alone (each flow type is one more compile)
        builders = {"spline (NSF)": builders["spline (NSF)"]}
    targets = {"moons": C.two_moons, "gaussian ring": C.gaussian_ring_mixture}
    rng = np.random.default_rng(args.seed)
    dtype = C.float_dtype()
    metrics = {"heldout_loglik": {}, "gaussian_baseline": {}, "fit_seconds": {}}
    # one jitted log-density (held-out rows and plot grid in one call) and one jitted sampler, so each
    # flow type compiles once and the second target reuses the compiled code
    n_grid = 100
    log_prob = jax.jit(lambda f, p: f.log_prob(p))
    sample = jax.jit(lambda f, k: f.sample(k, (2000,)))

    for t_index, (target, make_data) in enumerate(targets.items()):
        data = make_data(rng, n).astype(dtype)
        test = make_data(rng, n_test).astype(dtype)
        xlim, ylim = LIMS[target]
        gx, gy, grid = C.grid_2d(xlim, ylim, n_grid)
        points = np.concatenate([test, grid]).astype(dtype)
        base = gaussian_baseline(data, test)
        metrics["gaussian_baseline"][target] = base
        print(f"\n== target: {target} ({n} training points, {n_test} held out) ==")
        print(f"   {'Gaussian baseline':16s} held-out mean log-likelihood {base:8.3f} nats")
        fitted = {}
        for f_index, (label, build) in enumerate(builders.items()):
            key = jax.random.PRNGKey(args.seed + 100 * t_index + f_index)
            with C.timer() as secs:
                flow, hist = inference.fit(build(key), data, max_steps=steps, batch_size=256,
                                           learning_rate=3e-3 if quick else 1e-3, schedule="cosine",
                                           val_fraction=0.0 if quick else 0.1, eval_every=100,
                                           patience=None, clip_norm=5.0, seed=args.seed, progress=False)
                lp = np.asarray(log_prob(flow, points), np.float64)
            ll = float(lp[:n_test].mean())
            fitted[label] = (flow, lp[n_test:])
            metrics["heldout_loglik"].setdefault(target, {})[label] = ll
            metrics["fit_seconds"][f"{target}/{label}"] = secs()
            val = (f"best val NLL {hist.best_val_loss:.3f} at step {hist.best_step}, " if not quick else "")
            print(f"   {label:16s} held-out mean log-likelihood {ll:8.3f} nats  ({val}{secs():.1f} s)")

        # plot: data | densities (top), baseline | samples (bottom)
        cols = 1 + len(fitted)
        fig, axes = plt.subplots(2, cols, figsize=(3.1 * cols, 6.2))
        C.plot_samples(axes[0, 0], data, xlim, ylim, f"training data ({n} points)", color="k")
        C.plot_density(axes[1, 0], lambda p: _gauss_logpdf(data, p), xlim, ylim,
                       f"Gaussian baseline ({base:.2f} nats)", n=n_grid)
        for j, (label, (flow, grid_lp)) in enumerate(fitted.items(), start=1):
            ll = metrics["heldout_loglik"][target][label]
            C.plot_density(axes[0, j], lambda p, g=grid_lp: g, xlim, ylim,
                           f"{label} density (held-out {ll:.2f} nats)", n=n_grid)
            draws = np.asarray(sample(flow, jax.random.PRNGKey(args.seed + 7)))
            C.plot_samples(axes[1, j], draws, xlim, ylim, f"{label}: 2000 draws", color=f"C{j}")
        fig.suptitle(f"{target}: flows fitted by maximum likelihood (top: density, bottom: samples)", fontsize=11)
        fig.tight_layout()
        C.save_figure(fig, out, f"density_{target.replace(' ', '_')}.png")

    best = {t: max(v.values()) for t, v in metrics["heldout_loglik"].items()}
    metrics["best_minus_baseline"] = {t: best[t] - metrics["gaussian_baseline"][t] for t in best}
    print("\nbest flow minus Gaussian baseline (held-out nats per point): "
          + ", ".join(f"{t}: {d:+.3f}" for t, d in metrics["best_minus_baseline"].items()))
    C.save_metrics(out, metrics)
    return 0

if __name__ == "__main__":
    sys.exit(main())

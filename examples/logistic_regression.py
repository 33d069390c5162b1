"""Bayesian logistic regression on the breast-cancer data: a flow guide vs NUTS, accuracy and calibration.

What it shows
-------------
scikit-learn's bundled Wisconsin breast-cancer data (569 tumours, 30 features; no download) is
standardised with training-set statistics and split 75/25.  The model is
``w ~ N(0, I)``, ``b ~ N(0, 5^2)``, ``y_i ~ Bernoulli(sigmoid(x_i . w + b))`` (31 latent
dimensions).  An IAF guide (``inference.AutoFlow``) trained by SVI is compared with NUTS:

* held-out accuracy and log-loss of the posterior predictive ``p(y = 1 | x) = E[sigmoid(x . w + b)]``;
* agreement of the two posteriors (difference of means in NUTS standard deviations);
* a reliability (calibration) diagram: predicted probability vs observed frequency, in bins.

Plot: ``calibration.png`` (reliability diagram with a histogram of the predicted probabilities).

Run ``python examples/logistic_regression.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402


def logistic_model(x, y=None):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    d = x.shape[1]
    w = numpyro.sample("w", dist.Normal(jnp.zeros(d), 1.0).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 5.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)


def load_data(seed: int):
    """Standardised breast-cancer features (train statistics) and a 75/25 split."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(seed)
    x_tr, x_te, y_tr, y_te = C.train_test_split(rng, x, y, test_fraction=0.25)
    mu, sd = x_tr.mean(0), x_tr.std(0)
    dtype = C.float_dtype()
    return ((x_tr - mu) / sd).astype(dtype), ((x_te - mu) / sd).astype(dtype), y_tr, y_te


def predictive(w, b, x):
    """Posterior predictive ``P(y = 1 | x)``: sigmoid averaged over the draws ``w (S, d)``, ``b (S,)``."""
    logits = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)
    return (1.0 / (1.0 + np.exp(-logits))).mean(1)


def reliability(p, y, bins: int = 10):
    """``(mean predicted, observed frequency, count)`` per occupied probability bin, and the ECE."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    rows = []
    for k in range(bins):
        m = idx == k
        if m.any():
            rows.append((p[m].mean(), y[m].mean(), m.sum()))
    rows = np.asarray(rows)
    ece = float(np.sum(rows[:, 2] * np.abs(rows[:, 0] - rows[:, 1])) / len(p))
    return rows, ece


def main(argv=None) -> int:
    args = C.parse_args("logistic_regression", __doc__.split("\n")[0], argv)
    out = C.prepare_output(args)
    with C.quick_compile(args.quick):
        return _run(args, out)


def _run(args, out) -> int:
    import jax
    import matplotlib.pyplot as plt
    from numpyro.infer import MCMC, NUTS

    import inference

    quick = args.quick
    x_tr, x_te, y_tr, y_te = load_data(args.seed)
    print(f"breast cancer: {len(x_tr)} training and {len(x_te)} test rows, {x_tr.shape[1]} standardised features")
    y_tr_f = y_tr.astype(x_tr.dtype)
    svi_steps = 300 if quick else 5000
    warmup, draws_n = (100, 100) if quick else (500, 1000)
    metrics = {"accuracy": {}, "log_loss": {}, "ece": {}, "seconds": {}}
    draws = {}

    guide = inference.AutoFlow(logistic_model, "iaf", num_layers=1 if quick else 2, hidden_dims=(32,) if quick else (64, 64))
    params, elbo, secs = inference.run_svi(logistic_model, guide, x_tr, y_tr_f, num_steps=svi_steps, seed=args.seed,
                                           optimizer=inference.suggest_optimizer(svi_steps, 1e-2))
    post = guide.sample_posterior(jax.random.PRNGKey(args.seed + 1), params, x_tr, sample_shape=(1000,))
    draws["IAF guide"] = (np.asarray(post["w"]), np.asarray(post["b"]))
    metrics["seconds"]["IAF guide"] = secs
    print(f"IAF guide: {svi_steps} SVI steps in {secs:.1f} s, final ELBO {np.mean(elbo[-50:]):.1f}")

    with C.timer() as t:
        mcmc = MCMC(NUTS(logistic_model), num_warmup=warmup, num_samples=draws_n, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(args.seed + 2), x_tr, y_tr_f)
    s = mcmc.get_samples()
    draws["NUTS"] = (np.asarray(s["w"]), np.asarray(s["b"]))
    metrics["seconds"]["NUTS"] = t()
    print(f"NUTS: {warmup} warm-up + {draws_n} draws in {t():.1f} s")

    # posterior agreement (means in NUTS sds)
    w_vi, w_mc = draws["IAF guide"][0], draws["NUTS"][0]
    z = np.abs(w_vi.mean(0) - w_mc.mean(0)) / w_mc.std(0)
    metrics["mean_diff_in_nuts_sd"] = float(z.mean())
    metrics["sd_ratio_vi_over_nuts"] = float(np.mean(w_vi.std(0) / w_mc.std(0)))
    print(f"posterior agreement: |mean_VI - mean_NUTS| / sd_NUTS averaged over w: {z.mean():.2f}; "
          f"sd_VI / sd_NUTS: {metrics['sd_ratio_vi_over_nuts']:.2f}")

    fig, (ax, axh) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
    print("\nheld-out performance:")
    for j, (label, (w, b)) in enumerate(draws.items()):
        p = predictive(w, b, x_te)
        acc = float(np.mean((p > 0.5) == y_te))
        eps = 1e-12
        ll = float(-np.mean(y_te * np.log(p + eps) + (1 - y_te) * np.log(1 - p + eps)))
        rows, ece = reliability(p, y_te, bins=5)  # few test rows: coarse bins
        metrics["accuracy"][label], metrics["log_loss"][label], metrics["ece"][label] = acc, ll, ece
        print(f"   {label:10s} accuracy {acc:.3f}   log-loss {ll:.3f}   expected calibration error {ece:.3f}")
        ax.plot(rows[:, 0], rows[:, 1], "-", color=f"C{j}", label=f"{label} (acc {acc:.3f}, ECE {ece:.3f})")
        ax.scatter(rows[:, 0], rows[:, 1], s=12 + 6 * np.sqrt(rows[:, 2]), color=f"C{j}", zorder=3)
        for px, py, cnt in rows:
            ax.annotate(f"{int(cnt)}", (px, py), textcoords="offset points", xytext=(6, -10 - 8 * j),
                        fontsize=7, color=f"C{j}")
        axh.hist(p, bins=np.linspace(0, 1, 21), alpha=0.5, color=f"C{j}", label=label)
    ax.set_ylim(-0.15, 1.08)  # room for the count labels under the points at 0
    ax.set_ylabel("observed frequency of y = 1 (benign)")
    ax.set_title("Reliability diagram, held-out rows (5 bins; marker size and labels: rows per bin)", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    axh.set_xlabel("predicted probability P(y = 1 | x)")
    axh.set_ylabel("test rows")
    axh.legend(fontsize=7)
    fig.tight_layout()
    C.save_figure(fig, out, "calibration.png")
    C.save_metrics(out, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())

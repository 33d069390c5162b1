"""A flow as a prior: sequential Bayesian updating through a flow fitted to posterior draws.

What it shows
-------------
Model: ``mu ~ N(0, 10^2)``, ``sigma ~ LogNormal(0, 1)``, ``y_i ~ N(mu, sigma^2)``.  Two data sets
``A`` and ``B`` from the same source arrive one after the other.

1. NUTS on data set A gives draws of the posterior ``p(mu, sigma | A)``.
2. A masked autoregressive flow is fitted (``inference.fit``, maximum likelihood) to those draws
   in the unconstrained coordinates ``(mu, log sigma)``.
3. The fitted flow is the prior of a second model that sees only data set B:
   ``(mu, log sigma) ~ flow``, ``y_i ~ N(mu, sigma^2)`` for ``y in B``; NUTS again.
4. Check: NUTS on A and B together with the original prior.  If the flow captured
   ``p(mu, sigma | A)`` well, the sequential posterior ``p(mu, sigma | A, B)`` matches the joint one;
   the posterior means and sds of ``mu`` and ``sigma`` are printed side by side.

Plot: ``flow_prior.png`` (draws of the posterior after A with the flow's density contours; the
sequential and the joint posterior after A and B; and the marginal of ``mu`` for each).

Run ``python examples/flow_prior.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common as C  # noqa: E402


def gaussian_model(y, prior=None):
    """``y_i ~ N(mu, sigma^2)``; the prior of ``(mu, log sigma)`` is the original one or ``prior`` (a flow)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    if prior is None:
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        sigma = numpyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    else:
        z = numpyro.sample("z", prior)  # z = (mu, log sigma)
        mu = numpyro.deterministic("mu", z[0])
        sigma = numpyro.deterministic("sigma", jnp.exp(z[1]))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def main(argv=None) -> int:
    args = C.parse_args("flow_prior", __doc__.split("\n")[0], argv)
    out = C.prepare_output(args)
    with C.quick_compile(args.quick):
        return _run(args, out)


def _nuts(model, y, seed, warmup, draws_n, **kwargs):
    import jax
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=draws_n, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), y, **kwargs)
    s = mcmc.get_samples()
    return np.asarray(s["mu"], np.float64), np.asarray(s["sigma"], np.float64)


def _run(args, out) -> int:
    import jax
    import matplotlib.pyplot as plt

    import inference
    import nf_ppl

    quick = args.quick
    rng = np.random.default_rng(args.seed)
    dtype = C.float_dtype()
    true_mu, true_sigma = 1.5, 0.8
    n_a, n_b = 20, 20
    y_a = rng.normal(true_mu, true_sigma, n_a).astype(dtype)
    y_b = rng.normal(true_mu, true_sigma, n_b).astype(dtype)
    warmup, draws_n = (100, 600) if quick else (1000, 8000)
    print(f"data: A has {n_a} points (mean {y_a.mean():.3f}), B has {n_b} (mean {y_b.mean():.3f}); "
          f"source N({true_mu}, {true_sigma}^2)")

    # 1. posterior after A
    mu_a, sigma_a = _nuts(gaussian_model, y_a, args.seed, warmup, draws_n)
    z_a = np.stack([mu_a, np.log(sigma_a)], -1).astype(dtype)
    print(f"1. NUTS on A: {len(z_a)} draws of (mu, log sigma)")

    # 2. a flow fitted to those draws
    steps = 300 if quick else 3000
    flow = nf_ppl.maf(jax.random.PRNGKey(args.seed), 2, num_layers=2 if quick else 4,
                      hidden_dims=(16, 16) if quick else (32, 32))
    flow, hist = inference.fit(flow, z_a, max_steps=steps, batch_size=256, learning_rate=3e-3, schedule="cosine",
                               eval_every=100, val_fraction=0.2, patience=None, seed=args.seed, progress=False)
    print(f"2. MAF fitted to the draws: validation NLL {hist.best_val_loss:.3f} at step {hist.best_step}")

    # 3. the flow as the prior of a model of B alone
    mu_seq, sigma_seq = _nuts(gaussian_model, y_b, args.seed + 1, warmup, draws_n, prior=flow)
    print("3. NUTS on B with the flow prior")

    # 4. reference: both data sets at once
    mu_joint, sigma_joint = _nuts(gaussian_model, np.concatenate([y_a, y_b]), args.seed + 2, warmup, draws_n)
    print("4. NUTS on A and B together with the original prior\n")

    table = {"after A": (mu_a, sigma_a), "sequential (flow prior + B)": (mu_seq, sigma_seq),
             "joint (A and B)": (mu_joint, sigma_joint)}
    metrics = {"posterior": {}}
    print(f"   {'posterior':30s} {'mean mu':>8s} {'sd mu':>7s} {'mean sigma':>11s} {'sd sigma':>9s}")
    for label, (m, s) in table.items():
        metrics["posterior"][label] = {"mu_mean": m.mean(), "mu_sd": m.std(), "sigma_mean": s.mean(),
                                       "sigma_sd": s.std()}
        print(f"   {label:30s} {m.mean():8.3f} {m.std():7.3f} {s.mean():11.3f} {s.std():9.3f}")
    seq, joint = metrics["posterior"]["sequential (flow prior + B)"], metrics["posterior"]["joint (A and B)"]
    metrics["mu_mean_diff_in_sd"] = abs(seq["mu_mean"] - joint["mu_mean"]) / joint["mu_sd"]
    metrics["sigma_mean_diff_in_sd"] = abs(seq["sigma_mean"] - joint["sigma_mean"]) / joint["sigma_sd"]
    metrics["mu_sd_ratio"] = seq["mu_sd"] / joint["mu_sd"]
    metrics["sigma_sd_ratio"] = seq["sigma_sd"] / joint["sigma_sd"]
    print(f"\n   sequential vs joint: mean of mu differs by {metrics['mu_mean_diff_in_sd']:.2f} sd, "
          f"of sigma by {metrics['sigma_mean_diff_in_sd']:.2f} sd; sd ratios {metrics['mu_sd_ratio']:.2f} (mu), "
          f"{metrics['sigma_sd_ratio']:.2f} (sigma)")

    # plot
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    after_b = np.stack([np.concatenate([mu_joint, mu_seq]), np.log(np.concatenate([sigma_joint, sigma_seq]))], -1)
    lo, hi = np.minimum(z_a.min(0), after_b.min(0)), np.maximum(z_a.max(0), after_b.max(0))  # one range for all panels
    pad = 0.1 * (hi - lo)
    xlim, ylim = (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])
    gx, gy, pts = C.grid_2d(xlim, ylim, 100)
    lp = np.asarray(flow.log_prob(pts.astype(dtype))).reshape(gx.shape)
    ax = axes[0]
    ax.scatter(z_a[:, 0], z_a[:, 1], s=2, alpha=0.3, color="k", linewidths=0, label="NUTS draws, after A")
    ax.contour(gx, gy, np.exp(lp), levels=6, cmap="viridis")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("mu")
    ax.set_ylabel("log sigma")
    ax.set_title("posterior after A: draws and the fitted flow (contours)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[1]
    ax.scatter(mu_joint, np.log(sigma_joint), s=2, alpha=0.3, color="C1", linewidths=0, label="joint (A and B)")
    ax.scatter(mu_seq, np.log(sigma_seq), s=2, alpha=0.3, color="C0", linewidths=0,
               label="sequential (flow prior + B)")
    ax.set_xlabel("mu")
    ax.set_ylabel("log sigma")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_title("posterior after A and B: sequential vs joint", fontsize=9)
    ax.legend(fontsize=7, loc="upper right", markerscale=4)
    ax = axes[2]
    bins = np.linspace(*xlim, 50)
    for (label, (m, _)), color in zip(table.items(), ("k", "C0", "C1")):
        ax.hist(m, bins=bins, density=True, histtype="step", lw=1.5, color=color, label=label)
    ax.axvline(true_mu, color="r", ls=":", lw=1, label="true mu")
    ax.set_xlim(*xlim)
    ax.set_xlabel("mu")
    ax.set_ylabel("density")
    ax.set_title("marginal posterior of mu", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle("Sequential updating with a flow prior (MAF fitted to the posterior draws after A)", fontsize=11)
    fig.tight_layout()
    C.save_figure(fig, out, "flow_prior.png")
    C.save_metrics(out, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())

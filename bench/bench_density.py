"""Benchmark: flows as density models, nf-ppl's defaults against flowjax's, and an ablation.

Protocol (every table): each data set is split 70/10/20 (train / validation / test) by a
seed-dependent permutation and standardised with the training rows' mean and sd; figures are the
**test** mean log-likelihood per example in those standardised units (nats, higher is better),
averaged over seeds, with the epochs trained and the wall time (compile included) of the fit.

* ``defaults``: ``inference.build_flow(name, seed, dim)`` then ``inference.fit(flow, train,
  val_data=val)`` and nothing else, for ``maf``, ``realnvp``, ``iaf`` (affine) and ``nsf``,
  ``spline_coupling`` (splines), next to flowjax's ``masked_autoregressive_flow`` with its
  default ``Affine`` transformer and with ``RationalQuadraticSpline(knots=8, interval=4)``,
  trained by ``fit_to_data`` with its defaults on the same training + validation rows (it
  splits the same number of validation rows off itself).
* ``ablation``: MAF at flowjax's default architecture (8 layers, one hidden layer of 50, ReLU,
  reversed order between layers) trained with flowjax's defaults (Adam 5e-4, batch 100, 100
  epochs, patience 5, best-validation parameters), one change at a time: our MADE weights
  (normal, sd 1/sqrt(fan_in)) vs flowjax's uniform ones, minibatches with replacement vs
  shuffled epochs, the scale map (softplus vs exp), the start (random vs near-identity).

    python bench/bench_density.py [--quick] [--sections defaults,ablation] [--seeds 3]
                                  [--data moons,breast_cancer,digits]

``--quick``: one seed, 1500 two-moons points, 2 epochs, flowjax's affine MAF, the ablation's
baseline row and the ``maf`` defaults row (a smoke run: the figures say nothing about quality).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, make_moons

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import inference  # noqa: E402
import nf_ppl  # noqa: E402
from common import machine, table  # noqa: E402


# -- data ----------------------------------------------------------------------------------------

def _split(x, seed):
    idx = np.random.default_rng(seed).permutation(len(x))
    a, b = int(0.7 * len(x)), int(0.8 * len(x))
    train, val, test = x[idx[:a]], x[idx[a:b]], x[idx[b:]]
    mu, sd = train.mean(0), train.std(0) + 1e-8
    return [((p - mu) / sd).astype(np.float32) for p in (train, val, test)]


def moons(seed, n=10000):
    return _split(make_moons(n, noise=0.05, random_state=seed)[0], seed)


def breast_cancer(seed):
    return _split(load_breast_cancer().data, seed)


def digits(seed):
    x = load_digits().data
    return _split(x + np.random.default_rng(100 + seed).uniform(size=x.shape), seed)  # uniform dequantisation


DATA = {"moons": ("two moons (d=2)", moons), "breast_cancer": ("breast_cancer (d=30)", breast_cancer),
        "digits": ("digits, dequantised (d=64)", digits)}


# -- nf-ppl ----------------------------------------------------------------------------------------

def ours_defaults(name, seed, train, val, test, max_epochs=None):
    flow = inference.build_flow(name, seed, train.shape[1])
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted, hist = inference.fit(flow, train, val_data=val, progress=False, max_epochs=max_epochs, seed=seed)
    return float(np.mean(np.asarray(fitted.log_prob(test)))), hist.epochs[-1], time.perf_counter() - start


@contextlib.contextmanager
def uniform_made_weights():
    """flowjax's (equinox's) initialisation: weights and biases uniform in +-1/sqrt(fan_in)."""
    from nf_ppl import nn
    original = nn._dense_init

    def uniform(key, fan_in, fan_out, dtype, out_scale=None):
        k_w, k_b = jax.random.split(key)
        lim = float(1.0 / np.sqrt(max(fan_in, 1)))
        w = jax.random.uniform(k_w, (fan_out, fan_in), dtype, -lim, lim)
        if out_scale is not None:
            return float(out_scale) * w, jnp.zeros(fan_out, dtype)
        return w, jax.random.uniform(k_b, (fan_out,), dtype, -lim, lim)

    nn._dense_init = uniform
    try:
        yield
    finally:
        nn._dense_init = original


def ours_ablation(change, seed, train, val, test, epochs):
    arch = dict(num_layers=8, hidden_dims=(50,), activation="relu")
    train_kw = dict(batch_size=100, learning_rate=5e-4, max_epochs=epochs, patience=5, eval_every=None,
                    sampling="shuffle", time_budget=None)
    ctx = contextlib.nullcontext()
    if change == "uniform weights":
        ctx = uniform_made_weights()
    elif change == "with replacement":
        train_kw["sampling"] = "replacement"
    elif change == "scale exp":
        arch["scale"] = "exp"
    elif change == "near-identity start":
        arch["out_scale"] = 0.01
    elif change == "elu":
        arch["activation"] = "elu"
    elif change == "our defaults (batch 256, lr 1e-3, patience 20)":
        train_kw.update(batch_size=256, learning_rate=1e-3, patience=20)
    with ctx:
        flow = nf_ppl.maf(jax.random.PRNGKey(seed), train.shape[1], **arch)
    n_train = len(train)
    train_kw["eval_every"] = -(-n_train // train_kw["batch_size"])  # evaluate every epoch, as flowjax does
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted, hist = inference.fit(flow, train, val_data=val, progress=False, seed=seed, **train_kw)
    return float(np.mean(np.asarray(fitted.log_prob(test)))), hist.epochs[-1], time.perf_counter() - start


# -- flowjax -----------------------------------------------------------------------------------------

def flowjax_defaults(kind, seed, train, val, test, max_epochs=100):
    from flowjax.bijections import Affine, RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import masked_autoregressive_flow
    from flowjax.train import fit_to_data

    transformer = Affine() if kind == "affine" else RationalQuadraticSpline(knots=8, interval=4)
    key, fit_key = jax.random.split(jax.random.PRNGKey(seed))
    flow = masked_autoregressive_flow(key, base_dist=Normal(jnp.zeros(train.shape[1])), transformer=transformer)
    both = np.concatenate([train, val])
    start = time.perf_counter()
    fitted, losses = fit_to_data(fit_key, flow, both, val_prop=len(val) / len(both), max_epochs=max_epochs,
                                 show_progress=False)
    lp = float(np.mean(np.asarray(fitted.log_prob(test))))
    return lp, len(losses["val"]), time.perf_counter() - start


# -- tables --------------------------------------------------------------------------------------------

def _mean_rows(fn, seeds, load):
    runs = [fn(s, *load(s)) for s in seeds]
    lp, ep, t = (np.mean([r[i] for r in runs]) for i in range(3))
    spread = np.ptp([r[0] for r in runs]) if len(runs) > 1 else 0.0
    return lp, spread, ep, t


def defaults_table(datasets, seeds, quick):
    rows = []
    cap = 2 if quick else None
    for d in datasets:
        title, load = DATA[d]
        kinds = ("affine",) if quick else ("affine", "spline")
        peers = {k: _mean_rows(lambda s, *a: flowjax_defaults(k, s, *a, max_epochs=cap or 100), seeds, load) for k in kinds}
        for kind, label in (("affine", "flowjax MAF (Affine)"), ("spline", "flowjax MAF (RQ spline, 8 knots)"))[:len(kinds)]:
            lp, spread, ep, t = peers[kind]
            rows.append([title, label, f"{lp:.3f}", f"{spread:.3f}", f"{ep:.0f}", f"{t:.1f}", ""])
        builders = (("maf", "affine"), ("realnvp", "affine"), ("iaf", "affine"), ("nsf", "spline"),
                    ("spline_coupling", "spline"))
        for name, kind in builders[:1] if quick else builders:
            lp, spread, ep, t = _mean_rows(lambda s, *a: ours_defaults(name, s, *a, max_epochs=cap), seeds, load)
            gap = lp - peers[kind][0]
            rows.append([title, f"nf-ppl {name}", f"{lp:.3f}", f"{spread:.3f}", f"{ep:.0f}", f"{t:.1f}",
                         f"{gap:+.3f} vs flowjax {kind}"])
            print(f"  {title} {name}: {lp:.3f}", file=sys.stderr, flush=True)
    print("### Defaults vs defaults: test log-likelihood per example (standardised units), mean over seeds\n")
    print(table(["data", "flow", "test LL", "spread over seeds", "epochs", "wall s", "difference"], rows))
    print()


ABLATION = ("baseline (ours at flowjax's architecture and training)", "uniform weights", "with replacement",
            "scale exp", "near-identity start", "elu", "our defaults (batch 256, lr 1e-3, patience 20)")


def ablation_table(datasets, seeds, quick):
    rows = []
    epochs = 2 if quick else 100
    for d in datasets:
        title, load = DATA[d]
        lp, spread, ep, t = _mean_rows(lambda s, *a: flowjax_defaults("affine", s, *a, max_epochs=epochs), seeds, load)
        rows.append([title, "flowjax MAF defaults", f"{lp:.3f}", f"{spread:.3f}", f"{ep:.0f}", f"{t:.1f}"])
        for change in ABLATION[:1] if quick else ABLATION:
            lp, spread, ep, t = _mean_rows(lambda s, *a: ours_ablation(change, s, *a, epochs), seeds, load)
            rows.append([title, f"nf-ppl maf: {change}", f"{lp:.3f}", f"{spread:.3f}", f"{ep:.0f}", f"{t:.1f}"])
            print(f"  {title} {change}: {lp:.3f}", file=sys.stderr, flush=True)
    print("### MAF ablation at flowjax's architecture and training settings, one change at a time\n")
    print(table(["data", "run", "test LL", "spread over seeds", "epochs", "wall s"], rows))
    print()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sections", default="defaults,ablation")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--data", default="moons,breast_cancer,digits")
    args = p.parse_args()
    seeds = range(1 if args.quick else args.seeds)
    datasets = ["moons"] if args.quick else args.data.split(",")
    if args.quick:
        DATA["moons"] = ("two moons (d=2, 1500 points)", lambda seed: moons(seed, 1500))
    print(f"Machine: {machine()}\n")
    sections = args.sections.split(",")
    if "ablation" in sections:
        ablation_table(datasets, seeds, args.quick)
    if "defaults" in sections:
        defaults_table(datasets, seeds, args.quick)


if __name__ == "__main__":
    main()

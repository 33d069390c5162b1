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

* ``equal``: ``maf`` and ``realnvp`` at flowjax's default architecture (8 layers, one hidden
  layer of 50, ReLU) and flowjax's MAF and coupling flow, all trained as flowjax trains (Adam 5e-4,
  batch 100) for ``--equal-epochs`` epochs with no early stop, best validation parameters; ``maf``
  also with flowjax's initialisation and, on d = 2, holding flowjax's own initial weights
  (:func:`maf_from_flowjax`), which separates the initialisation from the training loop.
* ``stopping``: each ``--flow`` (comma-separated) fitted ``--epochs`` epochs with an evaluation
  every epoch and no early stop; early-stopping rules (evaluate every N epochs, stop after P
  without improvement) are replayed on those histories, giving the test log-likelihood each rule
  would have returned and its epochs (``--save-histories F.npz`` keeps the histories).
* ``draws``: each ``--flow`` built from ``--seeds`` initial draws (``build_flow(name, s, 2)``,
  s = 0, 1, ...) and fitted with ``fit``'s defaults (and ``--fit-options``) to the demo's two
  moons (``nf_ppl.demo.two_moons(0, rows)``, the first ``--rows`` rows for training, the 600 after
  them for the test): how the default fit depends on the initial weights, and on the number of rows.
* ``sweeps``: the sequential direction of a trained flow (``maf`` sampling, ``iaf`` log-density and
  its gradient, the defaults fit of seed 0): sweeps each layer takes to its fixed point (the mean
  over layers), and the time of 1024 draws / of one value-and-gradient step on 256 training rows,
  three ways: ``d`` sweeps every time (``nf_ppl.fixed_point.FIXED_SWEEPS_UP_TO`` raised above ``d``),
  stopped when a sweep changes nothing bit for bit (``SWEEP_RTOL = 0``), and stopped when no value
  moves by more than rounding (today's rule).
* ``conditional``: p(y | x) on a heteroscedastic, skewed toy problem (``y = sin(2x) + s(x) e``,
  ``e`` skew-normal with x-dependent skew; :func:`hetero_truth`): conditional ``maf``, ``nsf``, ``bnaf`` and ``naf``
  (``build_flow(name, seed, 1, context_dim=1)`` + ``fit(..., context=x)``), the conditional MVN
  baseline, flowjax's conditional MAF (affine and spline), and the true conditional log-likelihood
  as the ceiling; the plot ``bench/density_conditional.png`` draws p(y | x) at three x.
* ``neural``: the builders outside the defaults table, ``bnaf`` and ``naf``, with ``maf`` and ``nsf``,
  defaults against defaults, on a 1-D mixture of two separated Gaussians (its true log-likelihood
  as the ceiling) and two moons, next to flowjax's BNAF and spline MAF, a fitted Gaussian and ``maf``
  on a learned mixture base (:func:`neural_table`; not in the default sections).

    python bench/bench_density.py [--quick] [--sections defaults,ablation,equal,curves,conditional] [--seeds 3]
                                  [--data moons,breast_cancer,digits]
    python bench/bench_density.py --sections stopping --flow maf,nsf --data digits --epochs 300
    python bench/bench_density.py --sections draws --flow maf --seeds 12 --rows 2400 [--fit-options '{"ema": null}']
    python bench/bench_density.py --sections neural --seeds 3
    python bench/bench_density.py --sections units     # one Gaussian at scales 1e-6..1e6 (units_table)
    python bench/bench_density.py --sections variant --flow bnaf --options '{"skip": 0.0}' --data bimodal,moons

``--data`` also takes ``wine``, ``moons_small`` (two moons, 3000 rows) and ``bimodal`` (the 1-D mixture of the ``neural`` section).

``--quick``: one seed, 1500 two-moons points, 2 epochs, flowjax's affine MAF, the ablation's
baseline row, the ``maf`` defaults row, every row of ``equal`` and the conditional maf / MVN / flowjax
affine rows (a smoke run: the figures say nothing about quality).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_wine, make_moons

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import inference  # noqa: E402
import nf_ppl  # noqa: E402
from common import machine, median_time, table  # noqa: E402


# -- data ----------------------------------------------------------------------------------------

def _split(x, seed, standardise=True):
    idx = np.random.default_rng(seed).permutation(len(x))
    a, b = int(0.7 * len(x)), int(0.8 * len(x))
    train, val, test = x[idx[:a]], x[idx[a:b]], x[idx[b:]]
    mu, sd = (train.mean(0), train.std(0) + 1e-8) if standardise else (0.0, 1.0)
    return [((p - mu) / sd).astype(np.float32) for p in (train, val, test)]


def moons(seed, n=10000):
    return _split(make_moons(n, noise=0.05, random_state=seed)[0], seed)


def moons_small(seed):
    """Two moons with 3000 rows (2100 training rows, 9 steps an epoch at batch 256): the demo's size."""
    return moons(seed, n=3000)


def breast_cancer(seed, standardise=True):
    return _split(load_breast_cancer().data, seed, standardise)


def digits(seed, standardise=True):
    x = load_digits().data
    return _split(x + np.random.default_rng(100 + seed).uniform(size=x.shape), seed, standardise)  # dequantised


def wine(seed, standardise=True):
    return _split(load_wine().data, seed, standardise)  # 178 rows: 124 training rows, full batch at batch 256


BIMODAL = ((0.6, -2.0, 0.5), (0.4, 2.0, 0.3))  # (weight, mean, sd) of each component


def bimodal(seed, n=5000):
    """A 1-D mixture of two separated Gaussians (``BIMODAL``), not standardised: the true density is known."""
    rng = np.random.default_rng(seed)
    comp = rng.choice(len(BIMODAL), size=n, p=[w for w, _, _ in BIMODAL])
    mean, sd = (np.array([c[i] for c in BIMODAL])[comp] for i in (1, 2))
    x = (mean + sd * rng.normal(size=n))[:, None]
    a, b = int(0.7 * n), int(0.8 * n)
    return [p.astype(np.float32) for p in (x[:a], x[a:b], x[b:])]


def bimodal_log_density(x):
    terms = [np.log(w) - 0.5 * ((x - m) / s) ** 2 - np.log(s * np.sqrt(2 * np.pi)) for w, m, s in BIMODAL]
    return np.logaddexp.reduce(terms, axis=0)


DATA = {"moons": ("two moons (d=2)", moons), "moons_small": ("two moons, 3000 rows (d=2)", moons_small),
        "breast_cancer": ("breast_cancer (d=30)", breast_cancer),
        "digits": ("digits, dequantised (d=64)", digits), "wine": ("wine (d=13, 178 rows)", wine),
        "bimodal": ("two separated Gaussians (d=1)", bimodal)}


# -- nf-ppl ----------------------------------------------------------------------------------------

def ours_defaults(name, seed, train, val, test, max_epochs=None, options=None, fit_options=None, row_stats=False):
    """``(test LL, epochs, wall s)`` of the defaults fit; ``row_stats=True`` adds the median and the worst
    test row's log-likelihood."""
    flow = inference.build_flow(name, seed, train.shape[1], **(options or {}))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted, hist = inference.fit(flow, train, val_data=val, progress=False, max_epochs=max_epochs, seed=seed,
                                     **(fit_options or {}))
    wall = time.perf_counter() - start
    lp = np.asarray(fitted.log_prob(test))
    out = (float(np.mean(lp)), hist.epochs[-1], wall)
    return out + (float(np.median(lp)), float(np.min(lp))) if row_stats else out


@contextlib.contextmanager
def flowjax_output_biases():
    """flowjax's (equinox's) whole initialisation: weights and biases uniform in +-1/sqrt(fan_in), the
    output layer's biases too (``weight_init="uniform"`` keeps our zero output biases); with
    ``out_scale=1`` the flows start from the same distribution of weights as flowjax's."""
    from nf_ppl import nn
    original = nn._dense_init

    def uniform(key, fan_in, fan_out, dtype, out_scale=None, weight_init=None):
        w, bias = original(key, fan_in, fan_out, dtype, None, "uniform")  # a hidden layer's draw, bias included
        return (w if out_scale is None else float(out_scale) * w), bias

    nn._dense_init = uniform
    try:
        yield
    finally:
        nn._dense_init = original


def ours_ablation(change, seed, train, val, test, epochs):
    arch = dict(num_layers=8, hidden_dims=(50,), activation="relu")
    train_kw = dict(batch_size=100, learning_rate=5e-4, max_epochs=epochs, patience=5, eval_every=None,
                    sampling="shuffle", time_budget=None)
    if change == "uniform weights":
        arch["weight_init"] = "uniform"
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
    flow = nf_ppl.maf(jax.random.PRNGKey(seed), train.shape[1], **arch)
    n_train = len(train)
    train_kw["eval_every"] = -(-n_train // train_kw["batch_size"])  # evaluate every epoch, as flowjax does
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted, hist = inference.fit(flow, train, val_data=val, progress=False, seed=seed, **train_kw)
    return float(np.mean(np.asarray(fitted.log_prob(test)))), hist.epochs[-1], time.perf_counter() - start


# -- identical architecture, equal epochs ------------------------------------------------------------

EQUAL_ARCH = dict(num_layers=8, hidden_dims=(50,), activation="relu")  # flowjax's default MAF / coupling flow
COPIED_WEIGHTS = "nf-ppl maf holding flowjax's initial weights (d = 2 only)"


def _fit_epochs(flow, seed, train, val, test, epochs):
    """``fit`` with flowjax's training settings for exactly ``epochs`` epochs (no early stop), best
    validation parameters; the test log-likelihood and the wall time."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted, _ = inference.fit(flow, train, val_data=val, progress=False, seed=seed, batch_size=100,
                                  learning_rate=5e-4, max_epochs=epochs, patience=None, time_budget=None)
    return float(np.mean(np.asarray(fitted.log_prob(test)))), epochs, time.perf_counter() - start


def maf_from_flowjax(fj_flow):
    """Our ``maf`` at flowjax's default architecture holding ``fj_flow``'s (a flowjax MAF on d = 2)
    weights, so that both compute the same density: flowjax's density direction runs its layers
    first to last, each followed by a flip; ours flips first and runs the layers last to first, so
    the copy reads the data with its two columns swapped (``x[:, ::-1]``).  flowjax's outputs are
    coordinate-major ``(loc_0, scale_0, loc_1, scale_1)``, ours parameter-major; both start the
    scale at ``softplus(raw + log(e - 1))``; our soft clamp of the log-scale is moved out of the
    way (bound 10^4) and our networks read their inputs unbounded (``conditioner_bound=None``), as
    flowjax's do, so the two agree to rounding."""
    import paramax
    dim = fj_flow.shape[-1]
    if dim != 2:
        raise ValueError(f"maf_from_flowjax maps two-dimensional flows only; got dim={dim}")
    mlp = paramax.unwrap(fj_flow).bijection.bijection.bijection.bijections[0].masked_autoregressive_mlp
    w0, b0 = mlp.layers[0].weight, mlp.layers[0].bias
    order = jnp.array([0, 2, 1, 3])  # coordinate-major -> parameter-major
    w1, b1 = mlp.layers[1].weight[:, order, :], mlp.layers[1].bias[:, order]
    ours = nf_ppl.maf(jax.random.PRNGKey(0), dim, out_scale=1.0, log_scale_bound=1e4, conditioner_bound=None, **EQUAL_ARCH)
    treedef = jax.tree_util.tree_structure(ours)
    return jax.tree_util.tree_unflatten(treedef, [a[::-1] for a in (w0, w1, b0, b1)])


def _equal_ours(build, data_of=lambda a: a):
    """An nf-ppl row of the equal table: ``build(seed, dim)`` makes the flow, ``data_of`` maps every split."""
    def run(seed, train, val, test, epochs):
        train, val, test = (data_of(a) for a in (train, val, test))
        return _fit_epochs(build(seed, train.shape[1]), seed, train, val, test, epochs)
    return run


def _equal_flowjax(kind):
    def run(seed, train, val, test, epochs):
        flow, fit_key = _flowjax_flow(kind, seed, train.shape[1])
        return _flowjax_fit(flow, fit_key, train, val, test, max_epochs=epochs, max_patience=epochs)
    return run


def _maf_flowjax_init(seed, dim):
    with flowjax_output_biases():
        return nf_ppl.maf(jax.random.PRNGKey(seed), dim, out_scale=1.0, **EQUAL_ARCH)


# label -> run(seed, train, val, test, epochs) -> (test LL, epochs, wall s)
EQUAL_RUNS = {
    "flowjax MAF (Affine)": _equal_flowjax("maf"),
    "nf-ppl maf (our initialisation)": _equal_ours(
        lambda seed, dim: nf_ppl.maf(jax.random.PRNGKey(seed), dim, **EQUAL_ARCH)),
    "nf-ppl maf, flowjax's initialisation (uniform weights and output biases)": _equal_ours(_maf_flowjax_init),
    # flowjax's own initial weights, copied; the copy reads the two columns swapped (maf_from_flowjax)
    COPIED_WEIGHTS: _equal_ours(lambda seed, dim: maf_from_flowjax(_flowjax_flow("maf", seed, dim)[0]),
                                data_of=lambda a: a[:, ::-1]),
    "flowjax coupling flow (Affine)": _equal_flowjax("coupling"),
    "nf-ppl realnvp (our initialisation)": _equal_ours(
        lambda seed, dim: nf_ppl.realnvp(jax.random.PRNGKey(seed), dim, **EQUAL_ARCH)),
}


def equal_table(datasets, seeds, epochs):
    """maf and realnvp at flowjax's default architecture, trained as flowjax trains (Adam 5e-4,
    batch 100) for the same number of epochs with no early stop, best validation parameters."""
    rows = []
    for d in datasets:
        title, load = DATA[d]
        splits = [load(s) for s in seeds]
        for label, run in EQUAL_RUNS.items():
            if label == COPIED_WEIGHTS and splits[0][0].shape[1] != 2:
                continue
            runs = [run(s, *split, epochs) for s, split in zip(seeds, splits)]
            lp = np.array([r[0] for r in runs])
            rows.append([title, label, f"{lp.mean():.3f}", " ".join(f"{v:.3f}" for v in lp),
                         f"{np.mean([r[2] for r in runs]):.1f}"])
            print(f"  {title} {label}: {lp.mean():.3f}", file=sys.stderr, flush=True)
    print(f"### Identical architecture, equal epochs ({epochs} epochs, no early stop; seeds {list(seeds)})\n")
    print(table(["data", "run", "test LL (mean)", "per seed", "wall s"], rows))
    print()


# -- flowjax -----------------------------------------------------------------------------------------

def _flowjax_flow(kind, seed, dim, transformer=None):
    """flowjax's ``masked_autoregressive_flow`` (``kind="maf"``) or ``coupling_flow`` with ``transformer``
    (default ``Affine()``), and the key its fit uses, both from ``seed``."""
    from flowjax.bijections import Affine
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow, masked_autoregressive_flow
    make = masked_autoregressive_flow if kind == "maf" else coupling_flow
    key, fit_key = jax.random.split(jax.random.PRNGKey(seed))
    return make(key, base_dist=Normal(jnp.zeros(dim)), transformer=transformer or Affine()), fit_key


def _flowjax_fit(flow, fit_key, train, val, test, **fit_options):
    """``fit_to_data`` on the training + validation rows (it splits the same number off itself):
    the test log-likelihood, the epochs trained and the wall time."""
    from flowjax.train import fit_to_data
    both = np.concatenate([train, val])
    start = time.perf_counter()
    fitted, losses = fit_to_data(fit_key, flow, both, val_prop=len(val) / len(both), show_progress=False,
                                 **fit_options)
    lp = float(np.mean(np.asarray(fitted.log_prob(test))))
    return lp, len(losses["val"]), time.perf_counter() - start


def flowjax_defaults(kind, seed, train, val, test, max_epochs=100):
    from flowjax.bijections import Affine, RationalQuadraticSpline

    transformer = Affine() if kind == "affine" else RationalQuadraticSpline(knots=8, interval=4)
    flow, fit_key = _flowjax_flow("maf", seed, train.shape[1], transformer)
    return _flowjax_fit(flow, fit_key, train, val, test, max_epochs=max_epochs)


# -- tables --------------------------------------------------------------------------------------------

def _mean_rows(fn, seeds, load):
    runs = [fn(s, *load(s)) for s in seeds]
    lp, ep, t = (np.mean([r[i] for r in runs]) for i in range(3))
    spread = np.ptp([r[0] for r in runs]) if len(runs) > 1 else 0.0
    return lp, spread, ep, t


def flowjax_bnaf(seed, train, val, test, max_epochs=100):
    """flowjax's ``block_neural_autoregressive_flow`` with its defaults, fitted by ``fit_to_data``'s defaults."""
    from flowjax.distributions import Normal
    from flowjax.flows import block_neural_autoregressive_flow
    key, fit_key = jax.random.split(jax.random.PRNGKey(seed))
    flow = block_neural_autoregressive_flow(key, base_dist=Normal(jnp.zeros(train.shape[1])))
    return _flowjax_fit(flow, fit_key, train, val, test, max_epochs=max_epochs)


def gaussian_fit(seed, train, val, test):
    """The Gaussian fitted to ``train`` by maximum likelihood: its mean test log-likelihood (no epochs, no time)."""
    mu, cov = train.mean(0), np.atleast_2d(np.cov(train.T))
    r = test - mu
    quad = np.einsum("ni,ij,nj->n", r, np.linalg.inv(cov), r)
    return float(np.mean(-0.5 * (quad + np.linalg.slogdet(2 * np.pi * cov)[1]))), 0, 0.0


NEURAL_BUILDERS = ("bnaf", "naf", "maf", "nsf")


def neural_table(seeds, quick=False):
    """The builders outside the defaults table (``bnaf``, ``naf``) with ``maf`` and ``nsf``, defaults
    against defaults, on a 1-D two-component mixture (true log-likelihood known) and two moons, next
    to flowjax's BNAF and spline MAF and a Gaussian fitted by maximum likelihood, and ``maf`` on a
    learned mixture base (``quick``: 2 epochs)."""
    cap = 2 if quick else None
    rows = []
    for key in ("bimodal", "moons"):
        title, load = DATA[key]
        runs = {"Gaussian (maximum likelihood)": gaussian_fit,
                "flowjax BNAF (defaults)": lambda s, *a: flowjax_bnaf(s, *a, max_epochs=cap or 100),
                "flowjax MAF (RQ spline, 8 knots)": lambda s, *a: flowjax_defaults("spline", s, *a, max_epochs=cap or 100)}
        runs.update({f"nf-ppl {name}": (lambda s, *a, name=name: ours_defaults(name, s, *a, max_epochs=cap))
                     for name in NEURAL_BUILDERS})
        runs["nf-ppl maf, base='mixture'"] = lambda s, *a: ours_defaults("maf", s, *a, max_epochs=cap,
                                                                         options=dict(base="mixture"))
        if key == "bimodal":
            truth = np.mean([np.mean(bimodal_log_density(load(s)[2])) for s in seeds])
            rows.append([title, "true density", f"{truth:.3f}", "", "", ""])
        for label, fn in runs.items():
            lp, spread, ep, t = _mean_rows(fn, seeds, load)
            rows.append([title, label, f"{lp:.3f}", f"{spread:.3f}", f"{ep:.0f}", f"{t:.1f}"])
    print("### bnaf and naf with their defaults: a 1-D mixture and two moons\n")
    print(table(["data", "flow", "test LL", "spread over seeds", "epochs", "wall s"], rows))
    print()


DEFAULT_BUILDERS = (("maf", "affine"), ("realnvp", "affine"), ("iaf", "affine"), ("nsf", "spline"),
                    ("spline_coupling", "spline"))  # each against flowjax's default MAF of its kind


def defaults_table(datasets, seeds, quick, only=None):
    """Each builder's defaults against flowjax's of the same kind; ``only``: these builders (and their peers)."""
    rows = []
    cap = 2 if quick else None
    builders = [(n, k) for n, k in DEFAULT_BUILDERS if only is None or n in only][:1 if quick else None]
    for d in datasets:
        title, load = DATA[d]
        kinds = tuple(k for k in ("affine", "spline") if k in {kind for _, kind in builders})
        peers = {k: _mean_rows(lambda s, *a: flowjax_defaults(k, s, *a, max_epochs=cap or 100), seeds, load) for k in kinds}
        for kind, label in (("affine", "flowjax MAF (Affine)"), ("spline", "flowjax MAF (RQ spline, 8 knots)")):
            if kind not in peers:
                continue
            lp, spread, ep, t = peers[kind]
            rows.append([title, label, f"{lp:.3f}", f"{spread:.3f}", f"{ep:.0f}", f"{t:.1f}", ""])
            print(f"  {title} {label}: {lp:.3f} ({ep:.0f} epochs, {t:.1f} s)", file=sys.stderr, flush=True)
        for name, kind in builders:
            lp, spread, ep, t = _mean_rows(lambda s, *a: ours_defaults(name, s, *a, max_epochs=cap), seeds, load)
            gap = lp - peers[kind][0]
            rows.append([title, f"nf-ppl {name}", f"{lp:.3f}", f"{spread:.3f}", f"{ep:.0f}", f"{t:.1f}",
                         f"{gap:+.3f} vs flowjax {kind}"])
            print(f"  {title} {name}: {lp:.3f} ({ep:.0f} epochs, {t:.1f} s)", file=sys.stderr, flush=True)
    print("### Defaults vs defaults: test log-likelihood per example (standardised units), mean over seeds\n")
    print(table(["data", "flow", "test LL", "spread over seeds", "epochs", "wall s", "difference"], rows))
    print()


RAW_DATA = {  # the defaults table's splits, not standardised (each in its own units)
    "moons": ("two moons x 5 + 20 (d=2)", lambda seed: [5.0 * p + 20.0 for p in moons(seed)]),
    "breast_cancer": ("breast_cancer, raw (d=30)", lambda seed: breast_cancer(seed, standardise=False)),
    "digits": ("digits, dequantised, raw (d=64)", lambda seed: digits(seed, standardise=False)),
    "wine": ("wine, raw (d=13, 178 rows)", lambda seed: wine(seed, standardise=False)),
}


def units_table(quick, scales=(1e-6, 1e-3, 1.0, 1e3, 1e6)):
    """One correlated 2-d Gaussian (3200 training and 800 test rows) multiplied by each scale, fitted by
    maf and realnvp with ``fit``'s defaults (60 epochs at most); held-out nats a row in the units of
    scale 1 (``+ 2 log s``), next to the Gaussian fitted to the same training rows: a fit that does not
    depend on the data's units gives the same row at every scale."""
    from scipy import stats

    rows = np.random.default_rng(42).normal(size=(4000, 2)) @ np.array([[1.0, 0.6], [0.0, 0.8]])
    train, test = rows[:3200], rows[3200:]
    out = []
    for s in scales[:2] if quick else scales:
        gauss = stats.multivariate_normal(s * train.mean(0), np.cov((s * train).T)).logpdf(s * test).mean()
        row = [f"{s:g}", f"{gauss + 2 * np.log(s):.3f}"]
        for name in ("maf", "realnvp"):
            flow, _ = inference.fit(inference.build_flow(name, 0, 2), s * train, progress=False,
                                    max_epochs=2 if quick else 60)
            row.append(f"{float(np.mean(np.asarray(flow.log_prob(s * test)))) + 2 * np.log(s):.3f}")
        out.append(row)
        print(f"  scale {s:g}: {row[1:]}", file=sys.stderr, flush=True)
    print("### The data's units: one Gaussian at several scales (nats a row in the units of scale 1)\n")
    print(table(["scale", "Gaussian fitted to the training rows", "nf-ppl maf", "nf-ppl realnvp"], out))
    print()


def raw_table(datasets, seeds, quick, only=None):
    """Unstandardised rows: flowjax's defaults, each builder with ``fit(standardize=False)`` (fit before
    it standardised) and with ``fit``'s default; test log-likelihood in the data's units and, to
    compare with the defaults table, plus the training rows' ``sum(log sd)`` (standardised units)."""
    rows = []
    cap = 2 if quick else None
    builders = [(n, k) for n, k in DEFAULT_BUILDERS if only is None or n in only][:1 if quick else None]
    for d in datasets:
        title, load = RAW_DATA[d]
        shift = np.mean([np.sum(np.log(load(s)[0].astype(np.float64).std(0) + 1e-8)) for s in seeds])
        runs = {f"flowjax MAF ({k})": (lambda s, *a, k=k: flowjax_defaults(k, s, *a, max_epochs=cap or 100))
                for k in ("affine", "spline") if k in {kind for _, kind in builders}}
        for name, _ in builders:
            runs[f"nf-ppl {name}, standardize=False"] = (
                lambda s, *a, name=name: ours_defaults(name, s, *a, max_epochs=cap, fit_options=dict(standardize=False)))
            runs[f"nf-ppl {name} (default: standardised)"] = (
                lambda s, *a, name=name: ours_defaults(name, s, *a, max_epochs=cap))
        for label, fn in runs.items():
            lp, spread, ep, t = _mean_rows(fn, seeds, load)
            rows.append([title, label, f"{lp:.3f}", f"{lp + shift:.3f}", f"{spread:.3f}", f"{ep:.0f}", f"{t:.1f}"])
            print(f"  {title} {label}: {lp:.3f} ({ep:.0f} epochs, {t:.1f} s)", file=sys.stderr, flush=True)
    print("### Unstandardised data: test log-likelihood per example, mean over seeds\n")
    print(table(["data", "flow", "test LL (data units)", "test LL + sum log sd", "spread over seeds", "epochs",
                 "wall s"], rows))
    print()


def _per_seed_cells(runs, digits=3):
    """Table cells of ``(test LL, epochs, wall s)`` runs: mean, worst, each run, mean epochs, mean wall s."""
    lp = np.array([r[0] for r in runs])
    return [f"{lp.mean():.3f}", f"{lp.min():.3f}", " ".join(f"{v:.{digits}f}" for v in lp),
            f"{np.mean([r[1] for r in runs]):.0f}", f"{np.mean([r[2] for r in runs]):.1f}"]


def variant_table(datasets, seeds, name, options):
    """One builder with given options (``--flow``, ``--options`` JSON), the defaults protocol, per seed,
    with the median test row and the worst test row over all seeds (a single outlying row moves the mean)."""
    rows = []
    for d in datasets:
        title, load = DATA[d]
        runs = [ours_defaults(name, s, *load(s), options=options, row_stats=True) for s in seeds]
        rows.append([title, f"{name} {json.dumps(options)}"] + _per_seed_cells(runs)
                    + [f"{np.mean([r[3] for r in runs]):.3f}", f"{min(r[4] for r in runs):.1f}"])
        print(f"  {title} {name} {options}: {rows[-1][2]}", file=sys.stderr, flush=True)
    print(f"### Variant: {name} with {json.dumps(options)}, seeds {list(seeds)}\n")
    print(table(["data", "flow", "test LL (mean)", "worst seed", "per seed", "epochs", "wall s", "median row",
                 "worst row"], rows))
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


# -- learning curves ---------------------------------------------------------------------------------

def learning_curves(seed, quick, path):
    """Held-out log-likelihood per epoch of nf-ppl's ``maf`` (defaults) and flowjax's affine MAF
    (defaults) on two moons, as a PNG: each library's own validation rows (the same number)."""
    from flowjax.bijections import Affine
    from flowjax.distributions import Normal
    from flowjax.flows import masked_autoregressive_flow
    from flowjax.train import fit_to_data
    train, val, _ = moons(seed, 1500 if quick else 10000)
    cap = 2 if quick else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, hist = inference.fit(inference.build_flow("maf", seed, 2), train, val_data=val, progress=False,
                                seed=seed, max_epochs=cap)
    key, fit_key = jax.random.split(jax.random.PRNGKey(seed))
    flow = masked_autoregressive_flow(key, base_dist=Normal(jnp.zeros(2)), transformer=Affine())
    both = np.concatenate([train, val])
    _, losses = fit_to_data(fit_key, flow, both, val_prop=len(val) / len(both), max_epochs=cap or 100,
                            show_progress=False)
    ours = (np.asarray(hist.epochs), -np.asarray(hist.val_loss))
    peer = (np.arange(1, len(losses["val"]) + 1), -np.asarray(losses["val"]))
    rows = []
    for epoch in (5, 10, 20, 50, 100, 200):
        row = [str(epoch)]
        for e, v in (ours, peer):
            i = np.searchsorted(e, epoch, side="right") - 1  # the last evaluation at or before it
            row.append(f"{v[i]:.3f}" if i >= 0 and epoch <= e[-1] else "")
        rows.append(row)
    rows.append(["best", f"{ours[1].max():.3f} (epoch {ours[0][np.argmax(ours[1])]:.0f})",
                 f"{peer[1].max():.3f} (epoch {peer[0][np.argmax(peer[1])]:.0f})"])
    print("### Learning curves: held-out log-likelihood by epoch, maf on two moons (seed "
          f"{seed}; each library's validation rows)\n")
    print(table(["epoch", "nf-ppl maf (defaults)", "flowjax MAF (Affine, defaults)"], rows))
    print()
    if quick:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(*ours, label="nf-ppl maf, fit() defaults")
    ax.plot(*peer, label="flowjax MAF (Affine), fit_to_data defaults")
    ax.set_xlabel("epoch")
    ax.set_ylabel("held-out log-likelihood per example")
    ax.set_ylim(max(-3.0, min(ours[1].min(), peer[1].min())), None)
    ax.set_xscale("log")
    ax.legend()
    ax.set_title("two moons (d=2): held-out log-likelihood by epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"![learning curves]({os.path.basename(path)})\n")


# -- conditional density p(y | x) ----------------------------------------------------------------------

COND_PLOT_X = (-2.0, 0.0, 2.0)


def hetero_truth(x, y):
    """``log p(y | x)`` of the toy problem: ``y = sin(2x) + s(x) e``, ``e ~ SkewNormal(a(x))``, with
    ``s(x) = 0.15 + 0.25 (1 + tanh x)`` (scale grows with x) and ``a(x) = 4 tanh(x)`` (skewed left for
    x < 0, right for x > 0)."""
    from scipy.stats import skewnorm
    scale, skew = 0.15 + 0.25 * (1 + np.tanh(x)), 4 * np.tanh(x)
    return skewnorm.logpdf((y - np.sin(2 * x)) / scale, skew) - np.log(scale)


def heteroscedastic(seed, n=6000):
    """``(x, y)`` splits 70/10/20, standardised by the training rows, and the true test log-likelihood
    in the standardised units of ``y`` (the ceiling of every row)."""
    from scipy.stats import skewnorm
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, n)
    e = skewnorm.rvs(4 * np.tanh(x), random_state=rng)
    y = np.sin(2 * x) + (0.15 + 0.25 * (1 + np.tanh(x))) * e
    idx = rng.permutation(n)
    a, b = int(0.7 * n), int(0.8 * n)
    parts = [idx[:a], idx[a:b], idx[b:]]
    (mx, sx), (my, sy) = (x[parts[0]].mean(), x[parts[0]].std()), (y[parts[0]].mean(), y[parts[0]].std())
    std = [(((x[p] - mx) / sx)[:, None].astype(np.float32), ((y[p] - my) / sy)[:, None].astype(np.float32))
           for p in parts]
    truth = float(np.mean(hetero_truth(x[parts[2]], y[parts[2]]) + np.log(sy)))
    return std, truth, (mx, sx, my, sy)


def _cond_ours(name, seed, splits, max_epochs=None):
    (xt, yt), (xv, yv), (xs, ys) = splits
    flow = inference.build_flow(name, seed, 1, context_dim=1)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted, hist = inference.fit(flow, yt, context=xt, val_data=yv, val_context=xv, progress=False, seed=seed,
                                     max_epochs=max_epochs)
    lp = float(np.mean(np.asarray(fitted.log_prob(ys, context=xs))))
    return lp, hist.epochs[-1], time.perf_counter() - start, lambda y, x: np.asarray(fitted.log_prob(y, context=x))


def _cond_mvn(seed, splits, steps=6000, lr=1e-3, batch=256):
    """The conditional MVN baseline ``N(mu(x), sigma(x)^2)`` (``nf_ppl.models.mvn.conditional_mvn``): Adam on
    minibatches, the parameters with the best validation loss (checked every 100 steps) kept."""
    import optax
    from nf_ppl.models.mvn import conditional_mvn
    (xt, yt), (xv, yv), (xs, ys) = splits
    xt, yt = jnp.asarray(xt), jnp.asarray(yt)
    model = conditional_mvn(jax.random.PRNGKey(seed), 1, 1)
    opt = optax.adam(lr)

    @jax.jit
    def span(m, st, key):
        def body(carry, k):
            m, st = carry
            i = jax.random.randint(k, (batch,), 0, len(yt))
            g = jax.grad(lambda m: -m.log_prob(yt[i], context=xt[i]).mean())(m)
            u, st = opt.update(g, st, m)
            return (optax.apply_updates(m, u), st), None
        (m, st), _ = jax.lax.scan(body, (m, st), jax.random.split(key, 100))
        return m, st, m.log_prob(yv, context=xv).mean()

    start, st, best = time.perf_counter(), opt.init(model), (-np.inf, model)
    for k in jax.random.split(jax.random.PRNGKey(seed + 1), steps // 100):
        model, st, val = span(model, st, k)
        best = max(best, (float(val), model), key=lambda t: t[0])
    fitted = best[1]
    lp = float(np.mean(np.asarray(fitted.log_prob(ys, context=xs))))
    return lp, steps * batch / len(yt), time.perf_counter() - start, \
        lambda y, x: np.asarray(fitted.log_prob(y, context=x))


def _cond_flowjax(kind, seed, splits, max_epochs=100):
    from flowjax.bijections import Affine, RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import masked_autoregressive_flow
    from flowjax.train import fit_to_data
    (xt, yt), (xv, yv), (xs, ys) = splits
    transformer = Affine() if kind == "affine" else RationalQuadraticSpline(knots=8, interval=4)
    key, fit_key = jax.random.split(jax.random.PRNGKey(seed))
    flow = masked_autoregressive_flow(key, base_dist=Normal(jnp.zeros(1)), transformer=transformer, cond_dim=1)
    y_all, x_all = np.concatenate([yt, yv]), np.concatenate([xt, xv])
    start = time.perf_counter()
    fitted, losses = fit_to_data(fit_key, flow, (y_all, x_all), val_prop=len(yv) / len(y_all),
                                 max_epochs=max_epochs, show_progress=False)
    lp = float(np.mean(np.asarray(fitted.log_prob(ys, condition=xs))))
    return lp, len(losses["val"]), time.perf_counter() - start, \
        lambda y, x: np.asarray(fitted.log_prob(y, condition=x))


def conditional_table(seeds, quick, plot_path=None):
    cap = 2 if quick else None
    models = [("nf-ppl maf (conditional)", lambda s, sp: _cond_ours("maf", s, sp, cap)),
              ("nf-ppl nsf (conditional)", lambda s, sp: _cond_ours("nsf", s, sp, cap)),
              ("nf-ppl bnaf (conditional)", lambda s, sp: _cond_ours("bnaf", s, sp, cap)),
              ("nf-ppl naf (conditional)", lambda s, sp: _cond_ours("naf", s, sp, cap)),
              ("conditional MVN baseline", lambda s, sp: _cond_mvn(s, sp, steps=200 if quick else 6000)),
              ("flowjax MAF (Affine, conditional)", lambda s, sp: _cond_flowjax("affine", s, sp, 2 if quick else 100)),
              ("flowjax MAF (RQ spline, conditional)", lambda s, sp: _cond_flowjax("spline", s, sp, 2 if quick else 100))]
    if quick:
        models = models[:1] + models[4:6]
    results = {label: [] for label, _ in models}
    truths, curves = [], {}
    for seed in seeds:
        splits, truth, units = heteroscedastic(seed, 1500 if quick else 6000)
        truths.append(truth)
        for label, run in models:
            lp, ep, t, density = run(seed, splits)
            results[label].append((lp, ep, t))
            print(f"  conditional {label} seed {seed}: {lp:.3f} (truth {truth:.3f})", file=sys.stderr, flush=True)
            if seed == seeds[0]:
                curves[label] = (density, units)
    rows = [["true conditional density (the ceiling)", f"{np.mean(truths):.3f}", "", "", ""]]
    for label, runs in results.items():
        lp = np.array([r[0] for r in runs])
        rows.append([label, f"{lp.mean():.3f}", f"{np.ptp(lp):.3f}", f"{np.mean([r[1] for r in runs]):.0f}",
                     f"{np.mean([r[2] for r in runs]):.1f}"])
    print("### Conditional density p(y | x): heteroscedastic, skewed toy problem (d_y = 1, d_x = 1)\n")
    print(table(["model", "test LL", "spread over seeds", "epochs", "wall s"], rows))
    print()
    if plot_path and not quick:
        _plot_conditionals(curves, plot_path)
        print(f"![conditional densities]({os.path.basename(plot_path)})\n")


def _plot_conditionals(curves, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(COND_PLOT_X), figsize=(4.2 * len(COND_PLOT_X), 3.4))
    for ax, x0 in zip(axes, COND_PLOT_X):
        grid = np.linspace(np.sin(2 * x0) - 2.5, np.sin(2 * x0) + 3.0, 400)
        ax.plot(grid, np.exp(hetero_truth(np.full_like(grid, x0), grid)), "k", lw=2, label="truth")
        for label, (density, (mx, sx, my, sy)) in curves.items():
            xs = np.full((len(grid), 1), (x0 - mx) / sx, np.float32)
            ys = ((grid - my) / sy)[:, None].astype(np.float32)
            ax.plot(grid, np.exp(density(ys, xs)) / sy, lw=1, label=label)
        ax.set_title(f"p(y | x = {x0:g})")
        ax.set_xlabel("y")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


STOP_RULES = ((1, 5, 0), (1, 10, 0), (1, 20, 0), (1, 30, 0), (1, 50, 0), (2, 20, 0), (5, 20, 0), (10, 100, 0),
              (1, 30, 0.003), (1, 30, 0.01), (1, 50, 0.01))  # (eval every, patience) in epochs, min_delta in nats


def _full_history(name, seed, train, val, test, epochs, options=None, fit_options=None):
    """One fit evaluated every epoch, never stopped early: held-out and test log-likelihood per epoch."""
    flow = inference.build_flow(name, seed, train.shape[1], **(options or {}))
    test_ll = []

    def record(step, current, info):
        test_ll.append(float(np.mean(np.asarray(current.log_prob(test)))))

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, hist = inference.fit(flow, train, val_data=val, progress=False, max_epochs=epochs, seed=seed,
                                patience=None, callback=record, time_budget=None, **(fit_options or {}))
    assert hist.epochs == list(range(1, epochs + 1)), "fit's default is one evaluation an epoch"
    return np.asarray(hist.val_log_likelihood), np.asarray(test_ll), time.perf_counter() - start


def _replay(val_ll, test_ll, every, patience, min_delta=0.0):
    """What a fit evaluating every ``every`` epochs and stopping after ``patience`` would have returned
    (``fit``'s rule: a gain of at most ``min_delta`` on the last gain that counted does not restart
    the patience; the best evaluated epoch is returned either way)."""
    best, best_at, counted, last_gain = -np.inf, 0, -np.inf, 0
    for epoch in range(every, len(val_ll) + 1, every):
        if val_ll[epoch - 1] > best:
            best, best_at = val_ll[epoch - 1], epoch
        if val_ll[epoch - 1] > counted + min_delta:
            counted, last_gain = val_ll[epoch - 1], epoch
        if epoch - last_gain >= patience:
            return test_ll[best_at - 1], epoch
    return (test_ll[best_at - 1] if best_at else np.nan), len(val_ll)  # nan: the rule never evaluated


def stopping_table(datasets, seeds, builders, epochs, save=None, fit_options=None):
    """Early-stopping rules replayed on full per-epoch histories (same fits, no early stop)."""
    rows, kept = [], {}
    for d in datasets:
        title, load = DATA[d]
        for name in builders:
            runs = [_full_history(name, s, *load(s), epochs=epochs, fit_options=fit_options) for s in seeds]
            for s, (v, t, w) in zip(seeds, runs):
                kept.update({f"{d}/{name}/{s}/val": v, f"{d}/{name}/{s}/test": t, f"{d}/{name}/{s}/wall": w})
            per_epoch = np.mean([t / len(v) for v, _, t in runs])
            for every, patience, min_delta in STOP_RULES:
                got = [_replay(v, t, every, patience, min_delta) for v, t, _ in runs]
                lp, ep = np.mean([g[0] for g in got]), np.mean([g[1] for g in got])
                rule = f"every {every}, patience {patience}" + (f", min_delta {min_delta:g}" if min_delta else "")
                rows.append([title, name, rule, f"{lp:.3f}",
                             " ".join(f"{g[0]:.3f}" for g in got), f"{ep:.0f}"])
            rows.append([title, name, f"all {epochs} epochs (best test)", f"{np.mean([t.max() for _, t, _ in runs]):.3f}",
                         "", f"{per_epoch:.3f} s/epoch"])
            print(f"  {title} {name} done", file=sys.stderr, flush=True)
    if save:
        np.savez(save, **kept)
    print(f"### Early-stopping rules replayed on per-epoch histories (seeds {list(seeds)}, {epochs} epochs)\n")
    print(table(["data", "flow", "rule (epochs)", "test LL (mean)", "per seed", "epochs"], rows))
    print()


def draws_table(builders, seeds, rows, fit_options, options=None):
    """The default fit from ``seeds`` initial draws on the demo's two moons (``rows`` training rows);
    ``options``: builder options (``--options``)."""
    from nf_ppl.demo import two_moons
    data = two_moons(0, rows + 600)
    train, test = data[:rows], data[rows:]
    out = []
    for name in builders:
        got = []
        for s in seeds:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                flow, hist = inference.fit(inference.build_flow(name, s, 2, **(options or {})), train, seed=0,
                                           progress=False, **fit_options)
            got.append((float(np.mean(np.asarray(flow.log_prob(test)))), hist.epochs[-1], time.perf_counter() - start))
        label = name + (f" {json.dumps(options)}" if options else "")
        out.append([label, json.dumps(fit_options) if fit_options else "defaults"] + _per_seed_cells(got, digits=2))
        print(f"  {name}: {out[-1][2:]}", file=sys.stderr, flush=True)
    print(f"### The default fit from {len(seeds)} initial draws: the demo's two moons, {rows} training rows\n")
    print(table(["flow", "fit options", "test LL (mean)", "worst", "per draw", "epochs", "wall s"], out))
    print()


def _mean_sweeps(fn, *args, layers):
    """Sweeps per layer in the primal solves of ``fn(*args)`` (the first, on the start as given, and the
    last, which finds nothing moved, included), counted by wrapping
    :func:`nf_ppl.fixed_point.sweep_until_fixed`, which runs all but the first (``fn`` takes no gradients,
    so no linear solve runs)."""
    from nf_ppl import fixed_point

    calls, original = [], fixed_point.sweep_until_fixed

    def counting(step, v, max_sweeps, settled=None):
        def counted(u):
            jax.debug.callback(lambda: calls.append(1))
            return step(u)
        return original(counted, v, max_sweeps, settled=settled)

    fixed_point.sweep_until_fixed = counting
    jax.clear_caches()  # flows trace their passes once per structure (nf_ppl.flow): trace them again
    try:
        jax.block_until_ready(jax.jit(fn)(*args))
    finally:
        fixed_point.sweep_until_fixed = original
        jax.clear_caches()
    return len(calls) / layers + 1


@contextlib.contextmanager
def _fixed_point_setting(name, value):
    """``nf_ppl.fixed_point.<name> = value`` inside (read when a flow's passes are traced: caches cleared)."""
    from nf_ppl import fixed_point

    saved = getattr(fixed_point, name)
    setattr(fixed_point, name, value)
    jax.clear_caches()
    try:
        yield
    finally:
        setattr(fixed_point, name, saved)
        jax.clear_caches()


SWEEP_STOPS = (("d sweeps", "FIXED_SWEEPS_UP_TO", 10 ** 9),  # every call runs d sweeps: no fixed-point test
               ("bit-equal stop", "SWEEP_RTOL", 0.0),  # stop when a sweep changes nothing, bit for bit
               ("rounding stop", None, None))  # today's rule: no value moves by more than SWEEP_RTOL eps


def sweeps_table(datasets):
    """Trained maf (sampling) and iaf (log-density, value and gradient): the three ways to stop the sweeps."""
    from nf_ppl import fixed_point

    rows = []
    for d in datasets:
        title, load = DATA[d]
        train, val, test = load(0)
        dim = train.shape[1]
        x = jnp.asarray(train[:256])
        for name in ("maf", "iaf"):
            flow = inference.build_flow(name, 0, dim)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                flow, _ = inference.fit(flow, train, val_data=val, progress=False, seed=0)
            layers = len(flow.transform.unstack())
            if name == "maf":
                what, args = "sample, 1024 draws", (flow, jax.random.PRNGKey(1))
                fn = primal = lambda f, k: f.sample(k, (1024,))
            else:
                what, args = "log_prob value + gradient, 256 rows", (flow, x)
                fn = jax.value_and_grad(lambda f, x: -jnp.mean(f.log_prob(x)))
                primal = lambda f, x: f.log_prob(x)
            times, sweeps = {}, {}
            for label, setting, value in SWEEP_STOPS:
                with _fixed_point_setting(setting, value) if setting else contextlib.nullcontext():
                    times[label] = median_time(jax.jit(lambda *a: fn(*a)), *args, repeats=7)
                    if label != "d sweeps":  # that one is a plain loop: nothing to count
                        sweeps[label] = _mean_sweeps(primal, *args, layers=layers)
            plain = dim <= fixed_point.FIXED_SWEEPS_UP_TO
            count = (f"{dim} (a plain loop)" if plain else
                     f"{sweeps['bit-equal stop']:.1f} -> {sweeps['rounding stop']:.1f} of {dim}")
            ms = [f"{1e3 * times[label]:.1f}" for label, _, _ in SWEEP_STOPS]
            rows.append([title, name, what, count, *ms, f"{times['d sweeps'] / times['rounding stop']:.1f}",
                         f"{times['bit-equal stop'] / times['rounding stop']:.2f}"])
            print(f"  {title} {name}: {rows[-1][3:]}", file=sys.stderr, flush=True)
    print("### The sequential direction of trained flows (defaults fit, seed 0): sweeps per layer, ms per call\n")
    print(table(["data", "flow", "call", "sweeps per layer (bit-equal -> rounding stop)", "d sweeps ms",
                 "bit-equal stop ms", "rounding stop ms", "speed-up vs d sweeps", "vs bit-equal"], rows))
    print()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sections", default="defaults,ablation,equal,curves,conditional")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--data", default="moons,breast_cancer,digits")
    p.add_argument("--flow", default="maf", help="builder of the 'variant' section")
    p.add_argument("--builders", default=None, help="'defaults' section: only these builders (comma-separated)")
    p.add_argument("--options", default="{}", help="builder options (JSON) of the 'variant' and 'draws' sections")
    p.add_argument("--epochs", type=int, default=300, help="epochs of each fit in the 'stopping' section")
    p.add_argument("--equal-epochs", type=int, default=100, help="epochs of every fit in the 'equal' section")
    p.add_argument("--fit-options", default="{}", help="'stopping' and 'draws' sections: options of fit (JSON)")
    p.add_argument("--rows", type=int, default=2400, help="training rows of the 'draws' section")
    p.add_argument("--save-histories", default=None, help="'stopping' section: write the histories to this .npz")
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
        defaults_table(datasets, seeds, args.quick, args.builders and args.builders.split(","))
    if "units" in sections:
        units_table(args.quick)
    if "raw" in sections:
        raw_table(datasets, seeds, args.quick, args.builders and args.builders.split(","))
    if "stopping" in sections:
        stopping_table(datasets, seeds, args.flow.split(","), args.epochs, args.save_histories,
                       json.loads(args.fit_options))
    if "equal" in sections:
        equal_table(datasets, seeds, 2 if args.quick else args.equal_epochs)
    if "variant" in sections:
        variant_table(datasets, seeds, args.flow, json.loads(args.options))
    if "curves" in sections:
        learning_curves(0, args.quick, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    "density_learning_curves.png"))
    if "draws" in sections:
        draws_table(args.flow.split(","), seeds, args.rows, json.loads(args.fit_options), json.loads(args.options))
    if "sweeps" in sections:
        sweeps_table(datasets)
    if "neural" in sections:
        neural_table(list(seeds), args.quick)
    if "conditional" in sections:
        conditional_table(list(seeds), args.quick, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                "density_conditional.png"))


if __name__ == "__main__":
    main()

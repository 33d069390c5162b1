"""Shared helpers of the nf-ppl examples: command line, output folder, plotting, toy data sets and models.

Every example is a script ``examples/NAME.py`` with ``main(argv=None) -> int`` and the options

    --quick      a tiny version that runs in a few seconds (used by the test suite)
    --out DIR    where the PNG plots and ``metrics.json`` go (default ``examples-output/NAME``)
    --seed N     the random seed (default 0)

``metrics.json`` holds the headline numbers an example prints, so that tests (and people) can
read them back without parsing the console output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from contextlib import contextmanager

import matplotlib

matplotlib.use("Agg")  # never open windows; every plot goes to a PNG file

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# NumPyro is imported whole before any example imports ArviZ.  ArviZ 1.x loads NumPyro through
# lazy_loader; if ``from numpyro.infer import ...`` is then the first NumPyro import, the package
# ``numpyro.infer`` ends up without its submodule attributes and ``arviz.from_numpyro`` fails with
# "module 'numpyro.infer' has no attribute 'initialization'" (seen with arviz-base 1.3, numpyro 0.22).
import numpyro  # noqa: E402,F401

__all__ = [
    "parse_args", "prepare_output", "save_figure", "save_metrics", "timer", "note", "quick_compile",
    "float_dtype", "train_test_split",
    "two_moons", "ring", "gaussian_ring_mixture", "funnel_model", "funnel_log_density",
    "EIGHT_SCHOOLS_Y", "EIGHT_SCHOOLS_SIGMA", "eight_schools_centered", "eight_schools_noncentered",
    "grid_2d", "plot_density", "plot_samples",
]


# ------------------------------------------------------------------------------------------------
# command line and output
# ------------------------------------------------------------------------------------------------

def parse_args(name: str, description: str, argv=None, extra=None) -> argparse.Namespace:
    """Parse ``--quick``, ``--out`` and ``--seed`` (plus whatever ``extra(parser)`` adds)."""
    parser = argparse.ArgumentParser(prog=f"python examples/{name}.py", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny models and few steps: finishes in a few seconds (for tests and smoke runs)")
    parser.add_argument("--out", default=os.path.join("examples-output", name),
                        help="folder for the PNG plots and metrics.json (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    args.name = name
    return args


def prepare_output(args) -> str:
    """Create the output folder, print where it is and return its absolute path."""
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    mode = "quick" if args.quick else "full"
    print(f"[{args.name}] {mode} run, seed {args.seed}; plots go to {out}", flush=True)
    return out


def save_figure(fig, out: str, filename: str) -> str:
    """Save ``fig`` as ``out/filename`` (PNG), close it, print and return the path."""
    path = os.path.join(out, filename)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"  wrote {path}", flush=True)
    return path


def save_metrics(out: str, metrics: dict) -> str:
    """Write the example's headline numbers to ``out/metrics.json`` (floats, ints, strings, lists)."""
    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (float, np.floating)) or (hasattr(v, "shape") and np.ndim(v) == 0
                                                   and np.issubdtype(np.asarray(v).dtype, np.floating)):
            f = float(v)
            return f if math.isfinite(f) else str(f)
        return v

    path = os.path.join(out, "metrics.json")
    with open(path, "w") as fh:
        json.dump(clean(metrics), fh, indent=2, sort_keys=True)
    return path


@contextmanager
def timer():
    """``with timer() as t: ...`` then ``t()`` is the elapsed wall time in seconds."""
    start = time.perf_counter()
    end = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


@contextmanager
def quick_compile(quick: bool):
    """In ``--quick`` runs, ask XLA for fewer optimisations: compiling dominates a tiny run.

    ``jax_disable_most_optimizations`` roughly halves compile times and slows the (short) run
    itself; the previous setting is restored on exit.
    """
    import jax

    if not quick:
        yield
        return
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", old)


def note(text: str) -> None:
    """Print a note about a part of an example that was skipped or degraded (and why)."""
    print(f"  NOTE: {text}", file=sys.stdout, flush=True)


def float_dtype():
    """JAX's default float type (float32, or float64 under ``jax_enable_x64``); never hard-coded."""
    import jax.numpy as jnp

    return jnp.result_type(float)


def train_test_split(rng: np.random.Generator, *arrays, test_fraction: float = 0.25):
    """Shuffle rows once and split every array the same way: returns ``train_a, test_a, train_b, ...``."""
    n = len(arrays[0])
    perm = rng.permutation(n)
    n_test = int(round(n * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    out = []
    for a in arrays:
        out += [a[train], a[test]]
    return out


# ------------------------------------------------------------------------------------------------
# 2-D toy data sets
# ------------------------------------------------------------------------------------------------

def two_moons(rng: np.random.Generator, n: int, noise: float = 0.08) -> np.ndarray:
    """The two interleaved half circles (like sklearn's ``make_moons``), centred near the origin."""
    t = np.pi * rng.uniform(size=n)
    upper = rng.uniform(size=n) < 0.5
    x = np.where(upper, np.cos(t), 1.0 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    pts = np.stack([x, y], -1) + noise * rng.normal(size=(n, 2))
    return (pts - np.array([0.5, 0.25])) * 1.5


def ring(rng: np.random.Generator, n: int, radius: float = 2.0, width: float = 0.15) -> np.ndarray:
    """A thin annulus: angle uniform, radius ``N(radius, width^2)``."""
    angle = rng.uniform(0, 2 * np.pi, size=n)
    r = radius + width * rng.normal(size=n)
    return np.stack([r * np.cos(angle), r * np.sin(angle)], -1)


def gaussian_ring_mixture(rng: np.random.Generator, n: int, k: int = 8, radius: float = 2.0,
                          sd: float = 0.2) -> np.ndarray:
    """Equal-weight mixture of ``k`` isotropic Gaussians (sd ``sd``) evenly spaced on a circle."""
    comp = rng.integers(0, k, size=n)
    angle = 2 * np.pi * comp / k
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], -1)
    return centres + sd * rng.normal(size=(n, 2))


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------

def funnel_model(dim: int = 10):
    """Neal's funnel with ``dim`` coordinates: ``v ~ N(0, 3^2)``, ``x_i | v ~ N(0, exp(v/2)^2)``, i < dim."""
    import numpyro
    import numpyro.distributions as dist
    import jax.numpy as jnp

    def model():
        v = numpyro.sample("v", dist.Normal(0.0, 3.0))
        numpyro.sample("x", dist.Normal(jnp.zeros(dim - 1), jnp.exp(v / 2)).to_event(1))

    return model


def funnel_log_density(v, x1):
    """Exact log density of the funnel's ``(v, x_1)`` marginal (for contour plots)."""
    lv = -0.5 * (v / 3.0) ** 2 - math.log(3.0 * math.sqrt(2 * math.pi))
    sd = np.exp(v / 2)
    lx = -0.5 * (x1 / sd) ** 2 - np.log(sd * math.sqrt(2 * math.pi))
    return lv + lx


EIGHT_SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools_centered(sigma, y=None):
    """Centered eight schools: ``theta_j ~ N(mu, tau^2)``, ``y_j ~ N(theta_j, sigma_j^2)``."""
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("schools", len(sigma)):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def eight_schools_noncentered(sigma, y=None):
    """Non-centered eight schools: ``theta_j = mu + tau * eta_j`` with ``eta_j ~ N(0, 1)``."""
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("schools", len(sigma)):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * eta)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


# ------------------------------------------------------------------------------------------------
# plotting
# ------------------------------------------------------------------------------------------------

def grid_2d(xlim, ylim, n: int = 120):
    """``(X, Y, points)``: a meshgrid and its points as an ``(n*n, 2)`` array."""
    xs = np.linspace(*xlim, n)
    ys = np.linspace(*ylim, n)
    gx, gy = np.meshgrid(xs, ys)
    return gx, gy, np.stack([gx.ravel(), gy.ravel()], -1)


def plot_density(ax, log_density, xlim, ylim, title: str, n: int = 120, cmap: str = "viridis"):
    """Filled contours of ``exp(log_density(points))`` on a grid; ``log_density`` maps ``(m, 2) -> (m,)``."""
    gx, gy, pts = grid_2d(xlim, ylim, n)
    lp = np.asarray(log_density(pts), dtype=np.float64).reshape(gx.shape)
    dens = np.exp(np.where(np.isfinite(lp), lp, -np.inf))
    ax.contourf(gx, gy, dens, levels=20, cmap=cmap)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


def plot_samples(ax, pts, xlim, ylim, title: str, color: str = "C0", size: float = 1.5):
    """Scatter plot of ``(m, 2)`` points."""
    pts = np.asarray(pts)
    ax.scatter(pts[:, 0], pts[:, 1], s=size, alpha=0.5, color=color, linewidths=0)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)

r"""Pictures of a change of variables: base density, pushforward density, pushed samples.

:func:`plot` draws three panels side by side for a :class:`~symbolic.ChangeOfVariables` with one
or two outputs: the base density :math:`p_X` on its support, the pushforward density :math:`p_Y`
(the closed form, or the numerical one where only that is offered, titled so), and a histogram of
:math:`f(x)` for draws :math:`x \sim p_X` with :math:`p_Y` overlaid, which is the picture that
checks the derivation by Monte Carlo.  :func:`push_samples` gives the draws.

Base draws come from the base density itself (any expression, no sampler needed): it is evaluated
on a fine grid over the part of the support that holds its mass (infinite ends are cut where the
density falls below ``1e-9`` of its peak), a cell is drawn with probability proportional to its
mass and the point is spread uniformly inside it.  One or two inputs.  Needs matplotlib (the
``plot`` extra).
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ._common import numpy_function

__all__ = ["plot", "push_samples"]

_REACH = 60.0  # |x| up to which an unbounded side is scanned for the base's mass
_GRID = {1: 20001, 2: 401}


def _base_fn(cov):
    if cov.base_density is None:
        raise ValueError("plot needs a base density: pass base_density= to change_of_variables")
    if cov.base_density.has(sp.DiracDelta):
        raise ValueError("the base density is a point mass (DiracDelta): it has no density to draw; its pushforward "
                         "is the point mass at f(x0)")
    if cov.numeric_checks != "run":
        raise ValueError(f"plot needs numbers: {cov.numeric_checks}")
    if len(cov.inputs) > 2:
        raise ValueError(f"plot draws maps of one or two inputs; this one has {len(cov.inputs)}")
    fn = numpy_function(list(cov.inputs) + list(cov.parameters), [cov.base_density], functions=cov.functions)
    return lambda x: fn(*x.T, *cov._pvals)[0]


def _axes_grid(box, n):
    return [np.linspace(lo, hi, n) for lo, hi in box]


def _mass_box(cov, base):
    """The part of the support holding the base's mass: finite ends kept, infinite ends cut where the
    density has fallen below 1e-9 of its peak on a coarse scan."""
    support = [(float(iv.inf), float(iv.sup)) for iv in cov._numeric_support()]
    box = [(max(lo, -_REACH), min(hi, _REACH)) for lo, hi in support]
    axes = _axes_grid(box, 4001 if len(box) == 1 else 601)
    dens = np.nan_to_num(base(_mesh(axes)), nan=0.0, posinf=0.0).reshape([len(a) for a in axes])
    if not np.any(dens > 0):
        raise ValueError("the base density is zero on every grid point of its support: nothing to draw")
    keep = dens > 1e-9 * dens.max()
    out = []
    for k, a in enumerate(axes):
        hit = np.flatnonzero(keep.any(axis=tuple(j for j in range(len(box)) if j != k)))
        step = a[1] - a[0]
        lo = a[hit[0]] - step if np.isinf(support[k][0]) else box[k][0]
        hi = a[hit[-1]] + step if np.isinf(support[k][1]) else box[k][1]
        out.append((lo, hi))
    return out


def _check_draws(n):
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer number of draws; got {n!r}")


def push_samples(cov, n: int = 20_000, seed: int = 0):
    """``(x, y)``: ``n`` draws from the base density (shape ``(n, d_in)``) and their images ``f(x)``
    (shape ``(n, d_out)``), drawn by the gridded base density (see the module docstring)."""
    _check_draws(n)
    return _push(cov, _base_fn(cov), n, seed)


def _push(cov, base, n, seed):
    box = _mass_box(cov, base)
    d = len(box)
    edges = _axes_grid(box, _GRID[d] + 1)
    centers = [0.5 * (e[1:] + e[:-1]) for e in edges]
    grid = _mesh(centers)
    mass = np.clip(np.nan_to_num(base(grid), nan=0.0, posinf=0.0), 0.0, None)
    rng = np.random.default_rng(seed)
    cells = rng.choice(len(grid), size=n, p=mass / mass.sum())
    widths = np.array([e[1] - e[0] for e in edges])
    x = grid[cells] + (rng.uniform(size=(n, d)) - 0.5) * widths
    f = numpy_function(list(cov.inputs) + list(cov.parameters), cov.forward, functions=cov.functions)
    y = f(*x.T, *cov._pvals).T
    return x, y


def _pushforward_fn(cov):
    """``(callable on (m, d_out) -> (m,), label)`` for the pushforward density, or ``(None, why)``."""
    if cov.has_density:
        try:
            expr = cov.density
            support = cov.output_support
            cond = support.as_relational(cov.outputs[0]) if isinstance(support, sp.Set) else support
            fn = numpy_function(list(cov.outputs) + list(cov.parameters), [sp.Piecewise((expr, cond), (0, True))],
                                functions=cov.functions)
            fn(*np.zeros((len(cov.outputs), 1)), *cov._pvals)  # compiles and runs (an unevaluated Integral fails)
        except Exception as err:  # noqa: BLE001 - any failure to evaluate means: no curve, said in the title
            return None, f"p_Y not evaluable numerically ({type(err).__name__})"
        return (lambda y: np.nan_to_num(fn(*y.T, *cov._pvals)[0], nan=0.0)), "p_Y (closed form)"
    if cov.numerical is not None:
        return (lambda y: cov.numerical_density(y if y.shape[1] > 1 else y[:, 0])), "p_Y (NUMERICAL inverse)"
    return None, "no density"


def _window(values):
    lo, hi = np.quantile(values, [0.002, 0.998])
    pad = 0.05 * (hi - lo if hi > lo else 1.0)
    return lo - pad, hi + pad


def plot(cov, n: int = 20_000, seed: int = 0, bins: int = 60):
    """Base density, pushforward density and a histogram of pushed draws, side by side.

    ``cov``: a :class:`~symbolic.ChangeOfVariables` with a base density and one or two inputs and
    outputs.  Returns the matplotlib ``Figure`` (three axes: ``fig.axes[0..2]``).
    """
    import matplotlib.pyplot as plt

    _check_draws(n)
    base = _base_fn(cov)  # compiled once, for the draws and the panel
    x, y = _push(cov, base, n, seed)
    dens, label = _pushforward_fn(cov)
    if y.shape[1] > 2:
        raise ValueError(f"plot draws maps with one or two outputs; this one has {y.shape[1]}")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    _draw_base(axes[0], base, x)
    _draw_pushforward(axes[1], axes[2], y, dens, label, bins)
    axes[0].set_title(f"base density p_X({', '.join(str(s) for s in cov.inputs)})")
    fig.suptitle(f"y = {', '.join(str(e) for e in cov.forward)}")
    fig.tight_layout()
    return fig


def _mesh(axes_1d):
    return np.stack(np.meshgrid(*axes_1d, indexing="ij"), axis=-1).reshape(-1, len(axes_1d))


def _draw_base(ax, base, x):
    grids = [np.linspace(*_window(x[:, k]), 400 if x.shape[1] == 1 else 160) for k in range(x.shape[1])]
    values = base(_mesh(grids))
    if x.shape[1] == 1:
        ax.plot(grids[0], values)
    else:
        ax.pcolormesh(*grids, values.reshape(160, 160).T, shading="auto")


def _draw_pushforward(ax_density, ax_hist, y, dens, label, bins):
    one = y.shape[1] == 1
    grids = [np.linspace(*_window(y[:, k]), 400 if one else 160) for k in range(y.shape[1])]
    values = dens(_mesh(grids)) if dens is not None else None
    if one:
        ax_hist.hist(y[:, 0], bins=bins, range=(grids[0][0], grids[0][-1]), density=True, alpha=0.5,
                     label=f"f(x), {len(y)} draws")
        if values is not None:
            ax_density.plot(grids[0], values)
            ax_hist.plot(grids[0], values, "k--", lw=1, label=label)
        ax_hist.legend(fontsize=8)
        ax_hist.set_title("histogram of pushed draws")
    else:
        if values is not None:
            ax_density.pcolormesh(*grids, values.reshape(160, 160).T, shading="auto")
        ax_hist.hist2d(y[:, 0], y[:, 1], bins=bins, range=[(g[0], g[-1]) for g in grids], density=True)
        ax_hist.set_title(f"2-D histogram of {len(y)} pushed draws")
    ax_density.set_title(label)

r"""Numerical inverse and density for monotone triangular maps without a closed-form inverse.

A map :math:`f` on a box :math:`S` is *monotone triangular* when its inputs and outputs can be
ordered so that output :math:`k` depends on inputs :math:`1..k` only (after reordering) and
:math:`\partial f_k / \partial x_k` keeps one sign on :math:`S` (``x + tanh x``, ``x^5 + x``, an
autoregressive step ``(x_1, x_2 + tanh x_2 + x_1^2)``).  Then

* inverse, sequential: for ``k = 1..d`` solve :math:`f_k(x_{<k}, x_k) = y_k` for :math:`x_k` by
  bracketing and bisection (one monotone scalar equation each; the bracket grows geometrically
  on an unbounded side and stops at the support's ends on a bounded one);
* :math:`\log|\det J_f(x)| = \sum_k \log|\partial f_k/\partial x_k|` (triangular Jacobian);
* density: :math:`p_Y(y) = p_X(g(y)) / |\det J_f(g(y))|`, and 0 where :math:`y` is outside the
  image (no root in the support).

Both are numbers, not formulas: :class:`~symbolic.ChangeOfVariables` offers them as
``numerical_inverse`` and ``numerical_density`` with ``has_density=False`` and a ``reason`` that
says so.  Monotonicity is checked on the derivative's sign: symbolically where SymPy can decide it,
otherwise at sampled points of the support (bulk and tails), which ``how`` reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp

from ._common import numpy_function

__all__ = ["NumericalInverse", "triangular_order", "monotone_sign"]

_BISECTIONS = 200
_MAX_DOUBLINGS = 200


def triangular_order(forward, xs):
    """Pairs ``[(output index, input index)]`` in solving order, or ``None`` if the map is not triangular.

    Greedy: repeatedly take an unused output whose inputs, apart from those already solved, are
    exactly one input.
    """
    deps = [set(f.free_symbols) & set(xs) for f in forward]
    solved, order, left = set(), [], list(range(len(forward)))
    while left:
        for k in left:
            new = deps[k] - solved
            if len(new) == 1:
                (x,) = new
                order.append((k, xs.index(x)))
                solved.add(x)
                left.remove(k)
                break
        else:
            return None
    return order


def _inward(end, direction):
    """A finite support end nudged into the support (maps such as ``log x`` are infinite at the end)."""
    return end + direction * 1e-12 * (1.0 + abs(end)) if np.isfinite(end) else end


def _tail_points(iv, n):
    lo, hi = float(iv.inf), float(iv.sup)
    if np.isfinite(lo) and np.isfinite(hi):
        return lo + (hi - lo) * np.linspace(1e-6, 1 - 1e-6, n)
    mag = np.logspace(-3, 3, n // 2)
    if np.isfinite(lo):
        return np.concatenate([lo + mag, lo + np.linspace(0, 10, n - n // 2)[1:]])
    if np.isfinite(hi):
        return np.concatenate([hi - mag, hi - np.linspace(0, 10, n - n // 2)[1:]])
    return np.concatenate([-mag, mag, np.linspace(-10, 10, n - 2 * (n // 2))])


def monotone_sign(derivative, x, xs, intervals, samples, args_extra=(), values_extra=(), functions=None):
    """``(+1 or -1, how)`` when ``derivative`` (of input ``x``) has one sign on the box, else ``(0, why)``.

    SymPy's assumptions decide first (the input symbols carry their supports' signs); otherwise the
    sign is evaluated at ``samples`` with input ``x`` swept over a grid of its interval, bulk and tails.
    """
    if derivative.is_positive:
        return 1, "derivative positive (SymPy)"
    if derivative.is_negative:
        return -1, "derivative negative (SymPy)"
    i = xs.index(x)
    grid = _tail_points(intervals[i], 64)
    pts = np.repeat(samples[: 64], len(grid), axis=0)
    pts[:, i] = np.tile(grid, min(64, len(samples)))
    try:
        fn = numpy_function(list(xs) + list(args_extra), [derivative], functions=functions)
        vals = fn(*pts.T, *values_extra)[0]
    except (NameError, TypeError, ValueError) as err:
        return 0, f"the derivative d f / d {x} could not be evaluated numerically ({type(err).__name__}: {err})"
    vals = vals[np.isfinite(vals)]
    if vals.size and np.all(vals > 0):
        return 1, f"derivative positive at {vals.size} sampled points (numerical check)"
    if vals.size and np.all(vals < 0):
        return -1, f"derivative negative at {vals.size} sampled points (numerical check)"
    return 0, f"the derivative d f / d {x} changes sign or vanishes on the support"


@dataclass
class NumericalInverse:
    """Sequential bracketed bisection for a monotone triangular map (see the module docstring).

    ``order``: ``[(output k, input i)]``; ``signs``: the sign of ``d f_k / d x_i``; ``how``: how
    monotonicity was established.  Call with ``y`` of shape ``(n, d)`` (or ``(n,)`` for one output).
    """

    f: object  # numpy function of (xs..., params...) -> (d, n)
    log_abs_det: object  # numpy function -> (1, n)
    log_base: object | None  # numpy function -> (1, n), or None
    order: list
    signs: list
    lows: np.ndarray
    highs: np.ndarray
    params: tuple
    how: str

    def _column(self, y, x, k, i, sign):
        """Solve ``f_k(x with x_i = t) = y_k`` for ``t`` in ``[low_i, high_i]``; NaN where no root."""
        n = len(y)

        def g(t):
            trial = x.copy()
            trial[:, i] = t
            return sign * (self.f(*trial.T, *self.params)[k] - y[:, k])

        lo_lim, hi_lim = _inward(self.lows[i], +1), _inward(self.highs[i], -1)
        start = lo_lim if np.isfinite(lo_lim) else (hi_lim - 2.0 if np.isfinite(hi_lim) else -1.0)
        lo = np.full(n, start)  # a finite end, or a width-2 bracket next to it (around 0 if none)
        hi = np.full(n, hi_lim if np.isfinite(hi_lim) else start + 2.0)
        for _ in range(_MAX_DOUBLINGS):  # grow the unbounded sides until the root is bracketed
            grow_lo = ~np.isfinite(lo_lim) & (g(lo) > 0)
            grow_hi = ~np.isfinite(hi_lim) & (g(hi) < 0)
            if not (grow_lo.any() or grow_hi.any()):
                break
            width = hi - lo
            lo = np.where(grow_lo, lo - width, lo)
            hi = np.where(grow_hi, hi + width, hi)
        g_lo, g_hi = g(lo), g(hi)
        inside = (g_lo <= 0) & (g_hi >= 0)
        for _ in range(_BISECTIONS):
            mid = 0.5 * (lo + hi)
            if np.all((mid == lo) | (mid == hi) | ~inside):
                break
            below = g(mid) < 0
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        return np.where(inside, 0.5 * (lo + hi), np.nan)

    def __call__(self, y):
        """The inputs ``x = f^{-1}(y)``; rows outside the image of the support are NaN."""
        y = np.asarray(y, dtype=np.float64)
        one = y.ndim <= 1 and len(self.order) == 1
        y2 = y.reshape(-1, 1) if one else np.atleast_2d(y)
        if y2.ndim != 2 or y2.shape[-1] != len(self.order):
            raise ValueError(f"y must have {len(self.order)} columns (one per output); got shape {y.shape}")
        x = np.zeros_like(y2)
        for (k, i), sign in zip(self.order, self.signs):
            x[:, i] = self._column(y2, x, k, i, sign)
        return x[:, 0].reshape(y.shape) if one else (x[0] if y.ndim == 1 else x)

    def density(self, y):
        """``p_Y(y) = p_X(g(y)) / |det J_f(g(y))|``; 0 outside the image of the support."""
        if self.log_base is None:
            raise ValueError("no base density was given to change_of_variables")
        y = np.asarray(y, dtype=np.float64)
        x = self(y)
        x2 = x.reshape(-1, len(self.order))
        ok = np.all(np.isfinite(x2), axis=1)
        safe = np.where(ok[:, None], x2, np.where(np.isfinite(self.lows), self.lows, 0.0) + 0.5)
        log_base = self.log_base(*safe.T, *self.params)[0]
        log_p = log_base - self.log_abs_det(*safe.T, *self.params)[0]
        underflow = log_base < -745.0  # far in the base's tail, where overflowing terms can make log|det| NaN
        out = np.where(ok & ~underflow, np.exp(log_p), 0.0)
        return out.reshape(y.shape if len(self.order) == 1 else y.shape[:-1])


def build_numerical_inverse(owner):
    """A :class:`NumericalInverse` for a :class:`~symbolic.ChangeOfVariables`, or ``(None, why)``."""
    xs, f = list(owner._xs), list(owner._f)
    order = triangular_order(f, xs)
    if order is None:
        return None, "the map is not triangular in any order of its inputs"
    intervals = owner._numeric_support()
    extra, values = tuple(owner.parameters), tuple(owner._pvals)
    signs, hows = [], []
    for k, i in order:
        sign, how = monotone_sign(owner.jacobian_internal[k, i], xs[i], xs, intervals, owner._xsamples, extra,
                                  values, owner.functions)
        if sign == 0:
            return None, how
        signs.append(sign)
        hows.append(how)
    log_det = sp.Add(*[sp.log(sp.Abs(owner.jacobian_internal[k, i])) for k, i in order])
    fns = dict(functions=owner.functions)
    log_base = None if owner._p is None else numpy_function(xs + list(extra), [sp.log(owner._p)], **fns)
    solver = NumericalInverse(
        f=numpy_function(xs + list(extra), f, **fns),
        log_abs_det=numpy_function(xs + list(extra), [log_det], **fns),
        log_base=log_base, order=order, signs=signs,
        lows=np.array([float(iv.inf) for iv in intervals]), highs=np.array([float(iv.sup) for iv in intervals]),
        params=values, how="; ".join(hows))
    return solver, ""

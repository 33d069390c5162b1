"""Vectorised root finding for increasing scalar maps (numerical inverses of monotone layers).

:func:`solve_increasing` solves ``f(x) = target`` elementwise for an increasing ``f`` given as
``fn(x, args) -> (f(x), f'(x))``, every array entry at once, under ``jit``/``vmap``:

1. **Bracketing.**  From ``x0`` each entry moves towards the target by a Newton step capped
   at ``max(width, 10 (1 + |x|))`` (or by ``width`` when Newton is unusable), ``width``
   doubling at each such step (at most ``max_expand`` of them): the reach grows
   geometrically, and in linear tails Newton lands on the root directly, so inputs far in the
   tails (``|y| = 1e3`` and beyond) take a handful of evaluations.
2. **Safeguarded Newton** (``rtsafe``): once bracketed, a Newton step is taken when it stays
   strictly inside the bracket and at least halves the previous step, otherwise the bracket is
   bisected.  The bracket shrinks every iteration, so the iteration always converges; Newton
   makes it fast.  ``newton=False`` gives plain bracketing and bisection.

Both phases run in one ``lax.while_loop`` with one evaluation of ``fn`` per iteration (one copy
of ``fn`` in the compiled program).

An entry has converged once its last step, or its bracket, is at most
``atol + rtol * |x|`` (or its residual is exactly 0); converged entries are frozen, so every
entry's result is independent of the rest of the batch (``vmap`` and ``jit`` agree with eager).

Gradients: the solver runs on ``stop_gradient`` inputs (``lax.while_loop`` cannot be reverse
differentiated).  Callers attach exact derivatives with :func:`newton_correction`, one Newton step
``x = x* - (f(x*) - y) / stop_gradient(f'(x*))`` whose value is ``x*`` (refined) and whose
derivative is the implicit-function derivative ``dx = (dy - df/dtheta) / f'(x)``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import is_concrete


class NumericalInverseError(RuntimeError):
    """A numerical inverse did not reach its tolerance within ``max_iter`` iterations."""


class RootResult(NamedTuple):
    """Per-entry result of :func:`solve_increasing` (all arrays have the target's shape)."""

    x: jnp.ndarray           # the root estimate
    converged: jnp.ndarray   # bool: bracketed and within tolerance
    iterations: jnp.ndarray  # int32: bracketing + Newton/bisection iterations used


class SolveInfo(NamedTuple):
    """Diagnostics of a numerical inverse, one entry per vector (batch shape).

    ``converged``: every coordinate met the tolerance; ``iterations``: the most iterations any
    coordinate needed (bracketing included); ``residual``: ``max_i |f(x)_i - y_i|`` at the answer.
    """

    converged: jnp.ndarray
    iterations: jnp.ndarray
    residual: jnp.ndarray


def default_tolerances(dtype) -> tuple[float, float]:
    """``(atol, rtol)`` for a dtype: ``(1e-10, 4 eps)`` in float64, ``(1e-5, 4 eps)`` in float32."""
    dtype = jnp.dtype(dtype)
    eps = float(jnp.finfo(dtype).eps)
    atol = 1e-10 if dtype.itemsize >= 8 else 1e-5
    return atol, 4.0 * eps


def check_solver_options(atol, rtol, max_iter, max_expand) -> None:
    """Validate solver settings (``None`` tolerances mean the dtype default)."""
    for name, value in (("atol", atol), ("rtol", rtol)):
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0 or None (dtype default); got {value!r}")
    for name, value in (("max_iter", max_iter), ("max_expand", max_expand)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")


def solve_increasing(fn: Callable, target, args=(), *, x0=None, atol=None, rtol=None,
                     max_iter: int = 100, max_expand: int = 64, newton: bool = True) -> RootResult:
    """Solve ``fn(x, args)[0] == target`` elementwise for an increasing function.

    One ``lax.while_loop`` evaluates ``fn`` once per entry and iteration.  While an entry has
    only a lower (upper) end of its bracket it moves upwards (downwards) by a Newton step capped
    at ``max(width, 10 (1 + |x|))``, or by ``width`` when Newton is unusable, and ``width``
    doubles every such step; once bracketed it takes safeguarded Newton steps (bisection when
    Newton leaves the bracket or does not halve the step).

    Args:
        fn: ``fn(x, args) -> (value, derivative)``, elementwise, arrays shaped like ``target``;
            must be pure in ``(x, args)`` (no captured traced values).
        target: the right-hand side ``y``.
        args: pytree of arrays passed to ``fn`` (gradients are stopped).
        x0: initial guess (default ``target``: good for near-identity maps).
        atol, rtol: tolerance ``atol + rtol * |x|`` on the last Newton step or the bracket
            width (dtype defaults from :func:`default_tolerances`).
        max_iter: evaluations of ``fn`` per entry (bracketing included).
        max_expand: most doublings of the probing width (brackets reach ``~2**max_expand``).
        newton: use Newton steps (else plain bracketing and bisection).
    """
    target = jax.lax.stop_gradient(jnp.asarray(target))
    args = jax.lax.stop_gradient(args)
    dtype = target.dtype
    d_atol, d_rtol = default_tolerances(dtype)
    atol = d_atol if atol is None else atol
    rtol = d_rtol if rtol is None else rtol
    x0 = target if x0 is None else jnp.broadcast_to(jax.lax.stop_gradient(jnp.asarray(x0, dtype)), target.shape)
    false = jnp.zeros(target.shape, bool)
    zero_i = jnp.zeros(target.shape, jnp.int32)

    def cond(c):
        return (c["k"] < max_iter) & jnp.any(~c["done"])

    def body(c):
        x, lo, hi, has_lo, has_hi = c["x"], c["lo"], c["hi"], c["has_lo"], c["has_hi"]
        f, df = fn(x, args)
        r = f - target
        below, above = r < 0, r > 0
        lo, has_lo = jnp.where(below, x, lo), has_lo | below
        hi, has_hi = jnp.where(above, x, hi), has_hi | above
        bracketed = has_lo & has_hi
        good_df = (df > 0) & jnp.isfinite(df)
        safe_df = jnp.where(good_df, df, jnp.ones_like(df))
        x_newton = x - r / safe_df
        newton_ok = (newton & good_df & jnp.isfinite(x_newton)
                     & ((x_newton > lo) | ~has_lo) & ((x_newton < hi) | ~has_hi))
        width = c["width"]
        # bracketed: rtsafe (Newton if inside and at least halving the step, else bisect)
        fast = jnp.abs(2 * r) <= jnp.abs(c["step"] * safe_df)
        x_bracketed = jnp.where(newton_ok & fast, x_newton, 0.5 * (lo + hi))
        # one-sided: a Newton step capped at max(width, 10 (1 + |x|)), else a probe of ``width``;
        # either way the reach grows geometrically, so far tails are found in a few steps
        cap = jnp.maximum(width, 10.0 * (1.0 + jnp.abs(x)))
        newton_step = x_newton - x
        direction = jnp.where(has_lo, 1.0, -1.0).astype(dtype)
        x_one_sided = jnp.where(newton_ok, x + jnp.clip(newton_step, -cap, cap), x + direction * width)
        use_newton = jnp.where(bracketed, newton_ok & fast, newton_ok & (jnp.abs(newton_step) <= cap))
        x_next = jnp.where(bracketed, x_bracketed, x_one_sided)
        expanding = ~bracketed & ~use_newton  # capped or probing steps grow the reach
        step = x_next - x
        tol = atol + rtol * jnp.abs(x_next)
        # a Newton correction below tolerance means converged (even when rounding puts the
        # Newton point on the bracket's end, which the strict inside test above rejects)
        tiny_newton = newton & good_df & (jnp.abs(newton_step) <= atol + rtol * jnp.abs(x))
        conv = ((r == 0) | (bracketed & (hi - lo <= tol)) | (use_newton & (jnp.abs(step) <= tol)) | tiny_newton)
        x_next = jnp.where(tiny_newton, x_newton, x_next)
        x_next = jnp.where(r == 0, x, x_next)
        doublings = c["doublings"] + expanding.astype(jnp.int32)
        failed = ~jnp.isfinite(r) | (doublings > max_expand)
        keep = c["done"]
        sel = lambda new, old: jnp.where(keep, old, new)
        return dict(k=c["k"] + 1, x=sel(x_next, x), lo=sel(lo, c["lo"]), hi=sel(hi, c["hi"]),
                    has_lo=sel(has_lo, c["has_lo"]), has_hi=sel(has_hi, c["has_hi"]),
                    width=sel(jnp.where(expanding, 2 * width, width), width),
                    step=sel(jnp.where(bracketed, jnp.where(use_newton, step, hi - lo), step), c["step"]),
                    doublings=sel(doublings, c["doublings"]),
                    done=keep | conv | failed, ok=sel(conv & ~failed, c["ok"]),
                    iters=c["iters"] + (~keep).astype(jnp.int32))

    init = dict(k=jnp.int32(0), x=x0, lo=x0, hi=x0, has_lo=false, has_hi=false, width=jnp.ones_like(x0),
                step=jnp.full(target.shape, jnp.inf, dtype), doublings=zero_i, done=false, ok=false,
                iters=zero_i)
    out = jax.lax.while_loop(cond, body, init)
    return RootResult(x=out["x"], converged=out["ok"], iterations=out["iters"])


def newton_correction(fn_with_grad: Callable, x_star, target):
    """One differentiable Newton step from a stopped-gradient root ``x_star``.

    ``fn_with_grad(x) -> (f(x), f'(x))`` may depend on traced parameters.  Returns
    ``(x, f(x_star), f'(x_star))`` with ``x = x_star - (f(x_star) - target) / stop_gradient(f'(x_star))``.
    """
    x_star = jax.lax.stop_gradient(x_star)
    f, df = fn_with_grad(x_star)
    safe = jax.lax.stop_gradient(jnp.where((df > 0) & jnp.isfinite(df), df, jnp.ones_like(df)))
    return x_star - (f - target) / safe, f, df


def raise_if_not_converged(info: SolveInfo, owner: str, max_iter: int) -> None:
    """Raise :class:`NumericalInverseError` for concrete (non-traced) diagnostics that failed."""
    if not is_concrete(info.converged):
        return
    conv = np.asarray(info.converged)
    if conv.all():
        return
    bad = np.flatnonzero(~conv.reshape(-1))
    shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
    res = np.asarray(info.residual).reshape(-1)[bad]
    raise NumericalInverseError(
        f"{owner}: numerical inverse did not converge for {len(bad)} of {conv.size} inputs "
        f"(flattened indices: {shown}; max residual {np.nanmax(res) if res.size else float('nan'):.3g}) "
        f"within max_iter={max_iter} iterations; raise max_iter or loosen atol/rtol"
    )

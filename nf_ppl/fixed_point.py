"""Triangular fixed points: the sequential direction of an autoregressive map, stopped when it is exact.

Inverting an autoregressive map (sampling a MAF, the density of an IAF, ancestral sampling of an
autoregressive model) means finding the ``v`` with

    ``v = step(v)``,   where ``step(v)_i`` depends only on the coordinates before ``i`` (in some order).

From any start, ``v <- step(v)`` makes one more coordinate exact per sweep, so ``d`` sweeps are exact
(the Jacobian of ``step`` is strictly triangular, hence nilpotent).  Most coordinates settle long
before that: trained flows on 13- to 64-dimensional data reach their fixed point in 6-8 sweeps
(bench/RESULTS.md).  :func:`triangular_fixed_point` sweeps until a sweep moves no value by more
than a few units of rounding (``SWEEP_RTOL`` eps relative to its row's largest entry, the
rounding of the step itself) and never more than ``max_sweeps`` (= ``d`` for the exact answer).
The residual ``v - step(v)`` is then at the level of one sweep's rounding, so the answer agrees
with that of ``d`` sweeps to rounding (amplified by the map's own sensitivity, as the ``d``-sweep
answer's rounding is).  Stopping only when a sweep changes no value bit for bit gives the same
answer after 2-4 more sweeps spent chasing the last bits (8-11 sweeps a layer at d = 13 to 64;
bench/RESULTS.md).  Integer ``v`` (e.g. categorical levels) stops when a sweep changes
nothing; a NaN in any row never settles and runs the batch to ``max_sweeps``.

Gradients (both modes, any order) come from the implicit-function theorem through
``jax.lax.custom_root``: at the solution, ``dv = (I - J)^{-1} (d step / d theta) dtheta`` with ``J``
the strictly triangular Jacobian of ``step``.  The linear solves ``(I - J) t = b`` and ``(I - J)^T u =
b`` are the same iteration, ``t <- b + J t`` (``jax.lax.custom_linear_solve``, so reverse mode
transposes it), exact after ``d`` steps and stopped earlier once an iterate moves by less than a
few units of rounding (``LINEAR_RTOL``, the same rule).  So the backward pass
costs about as many network passes as the forward one, not ``d``.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

FIXED_SWEEPS_UP_TO = 4  # up to this many sweeps, a plain loop (no convergence test, no implicit gradients)
SWEEP_RTOL = 8.0  # units of eps, relative to a row's largest |entry|: when the sweeps have settled (0: bit for bit)
LINEAR_RTOL = 8.0  # the same, for the linear solves of the implicit gradients


def sweep_until_fixed(step: Callable, v, max_sweeps: int, *, settled=None):
    """``step`` applied to ``v`` until ``settled(new, old)`` (default: bitwise equal) or ``max_sweeps``
    sweeps in all; ``lax.while_loop``, so not reverse differentiable (see :func:`triangular_fixed_point`)."""
    settled = settled or (lambda new, old: jnp.all(new == old))
    if max_sweeps <= 1:
        return step(v) if max_sweeps == 1 else v

    def cond(carry):
        k, _, done = carry
        return (k < max_sweeps) & ~done

    def body(carry):
        k, new, _ = carry
        newer = step(new)
        return k + 1, newer, settled(newer, new)

    _, out, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), v, jnp.bool_(False)))
    return out


def triangular_fixed_point(sweep: Callable, v0, max_sweeps: int):
    """``sweep(v)`` at the ``v`` with ``v = sweep(v)[0]``, for a ``sweep`` returning ``(v_new, *aux)`` whose
    coordinate ``i`` of ``v_new`` reads only coordinates of ``v`` before ``i`` (module docstring).

    At most ``max_sweeps`` sweeps from ``v0`` (``d`` sweeps from any start give the exact answer), fewer
    when one moves no value by more than rounding (module docstring); the returned tuple is one
    differentiable sweep at the solution, so the aux outputs (e.g. a log-determinant) get exact
    gradients through ``sweep``'s closed-over parameters by the implicit-function theorem.  ``v0``
    may lack the batch dimensions of ``sweep``'s output (one zero vector for every row, say): the
    first sweep then runs once for all rows, and the others on the batch.  Up to
    ``FIXED_SWEEPS_UP_TO`` sweeps are run as a plain loop, differentiated directly: there testing for
    a fixed point costs more than it can save (two moons, d = 2: 50% slower training steps;
    bench/RESULTS.md).  Integer ``v`` (e.g. categorical levels) has no gradients: its sweeps just
    stop at the fixed point.
    """
    max_sweeps = int(max_sweeps)
    if max_sweeps <= FIXED_SWEEPS_UP_TO:
        first = sweep(v0)
        return jax.lax.fori_loop(1, max_sweeps, lambda _, out: sweep(out[0]), first)

    def step(v):
        return sweep(v)[0]

    # the first sweep, on v0 as given; no gradients through it: those come from the solution's equation
    start = jax.lax.stop_gradient(step(v0))
    if not jnp.issubdtype(jnp.result_type(start), jnp.inexact):
        return sweep(sweep_until_fixed(step, start, max_sweeps - 1))

    def solve(_, guess):
        return sweep_until_fixed(step, guess, max_sweeps - 1, settled=partial(_settled, rtol=SWEEP_RTOL))

    def tangent_solve(g, b):
        return jax.lax.custom_linear_solve(g, b, solve=linear_solve, transpose_solve=linear_solve)

    def linear_solve(matvec, b):
        # (I - J) t = b  as  t <- b + (t - matvec(t)) = b + J t, from t = b (exact after max_sweeps steps)
        return sweep_until_fixed(lambda t: b + t - matvec(t), b, max_sweeps - 1,
                                 settled=partial(_settled, rtol=LINEAR_RTOL))

    return sweep(jax.lax.custom_root(lambda v: v - step(v), start, solve, tangent_solve))


def _settled(new, old, rtol):
    scale = jnp.max(jnp.abs(new), axis=-1, keepdims=True)
    tol = rtol * jnp.finfo(new.dtype).eps * scale
    return jnp.all(jnp.abs(new - old) <= tol)

"""Compile SymPy expressions to JAX functions.

``sympy.lambdify(..., modules="jax")`` writes a Python function whose body
calls ``jax.numpy``; common subexpressions are shared (``cse=True``), so the
jitted result is the same XLA graph a hand-written function would give.
Constants stay Python numbers (weakly typed), so the dtype follows the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import sympy as sp

__all__ = ["jax_function", "vector_function", "replace_applied_functions"]


def jax_function(args: Sequence[sp.Symbol], exprs: Sequence[sp.Expr]):
    """``fn(*arrays) -> list`` evaluating ``exprs`` with ``jax.numpy``."""
    undefined = [f for e in exprs for f in sp.sympify(e).atoms(sp.core.function.AppliedUndef)]
    if undefined:
        raise ValueError(
            f"cannot compile expressions with undefined functions {sorted(map(str, set(undefined)))}; "
            "substitute numeric values for them first"
        )
    if any(sp.sympify(e).has(sp.Derivative) for e in exprs):
        raise ValueError("cannot compile expressions that contain unevaluated derivatives")
    return sp.lambdify(list(args), list(exprs), modules="jax", cse=True)


def vector_function(inputs: Sequence[sp.Symbol], params: Sequence[sp.Symbol], exprs: Sequence[sp.Expr],
                    *, vector_input: bool, vector_output: bool):
    """Array-level function ``fn(x, params) -> y`` for a map of ``len(inputs)`` variables.

    With ``vector_input`` the last axis of ``x`` holds the inputs; otherwise ``x``
    is the (elementwise) single input. With ``vector_output`` the outputs are
    stacked on a new last axis; otherwise the single output is returned.
    """
    fn = jax_function(list(inputs) + list(params), exprs)

    def evaluate(x, param_values=()):
        args = [x[..., i] for i in range(len(inputs))] if vector_input else [x]
        shape = jnp.shape(args[0])
        outs = fn(*args, *param_values)
        outs = [o if jnp.shape(o) == shape else jnp.broadcast_to(o, shape) for o in outs]
        if vector_output:
            return jnp.stack(outs, axis=-1)
        return outs[0]

    return evaluate


def replace_applied_functions(exprs, replacements):
    """Replace applied undefined functions (e.g. ``s(x1)``) by plain symbols.

    ``replacements`` maps an applied function to the symbol taking its place.
    """
    return [sp.sympify(e).xreplace(dict(replacements)) for e in exprs]

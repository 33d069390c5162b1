"""Programs compiled on a background thread while the calling thread goes on.

On a small model most of a fresh fit's time is XLA compiling a few large programs one after the
other (bench/RESULTS.md, "AutoFlow's fixed costs").  A program whose argument shapes are known
before its inputs are can be traced and lowered where it is built and handed to XLA on another
thread; on a machine with more than one core its compilation then overlaps whatever the calling
thread does next (another program's compilation, training).  Tracing stays on the calling thread:
NumPyro's effect handlers live on one global stack.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import jax
from numpyro import handlers

from nf_ppl._checks import is_concrete

_COMPILER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nf_ppl-compile")  # two programs at once


class BackgroundCompiled:
    """``jax.jit(fn)``, its program for ``example_args`` (arrays or ``jax.ShapeDtypeStruct``) lowered
    now and compiled on a background thread.

    Calling it waits for that compilation and runs the program: the same program, so the same
    numbers, as ``jax.jit(fn)``.  Arguments of another structure, shape or type than
    ``example_args`` take the jitted path (traced and compiled anew), and so does everything when it
    is built inside another transformation (``example_args`` holding tracers: there is nothing to
    compile ahead).  NumPyro's effect handlers active where it is built or called do not see ``fn``
    (``handlers.block``).
    """

    def __init__(self, fn, *example_args):
        self._jitted, self._compiled = jax.jit(fn), None
        if not all(map(is_concrete, jax.tree_util.tree_leaves(example_args))):
            return
        with handlers.block():
            lowered = self._jitted.lower(*example_args)
        self._compiled = _COMPILER.submit(lowered.compile)

    def __call__(self, *args):
        if self._compiled is not None:
            try:
                return self._compiled.result()(*args)
            except TypeError:  # arguments unlike the example's, or tracers: the jitted path traces anew
                pass
        with handlers.block():
            return self._jitted(*args)

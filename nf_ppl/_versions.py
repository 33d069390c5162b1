"""Warnings about installed versions that are known to break what nf-ppl runs."""

from __future__ import annotations

import warnings

HANGING_JAXLIB = ("0.10.0", "0.10.1", "0.10.2", "0.11.0")  # also excluded in pyproject.toml


def warn_if_jaxlib_can_hang(version: str) -> None:
    """Warn when ``version`` (jaxlib's) is one whose CPU LAPACK kernels can deadlock.

    jaxlib 0.10.0-0.11.0 split a batched linear-algebra call (Cholesky, eigh, triangular solves, as
    ``vmap`` makes them) into chunks on XLA's CPU thread pool and wait for them from a thread of that
    same pool; when the program runs as many such calls at once as the pool has threads, every
    thread waits and the process hangs for good with no CPU use.  ``AutoFlow``'s warm start and
    ``diagnose`` vmap the model's log-density, so a model with a Cholesky factor (a Gaussian process)
    hung in about one run in six on a 2-core machine (bench/RESULTS.md).  jaxlib 0.9.2 and 0.11.1+
    run those chunks in the calling thread.
    """
    if version in HANGING_JAXLIB:
        warnings.warn(f"jaxlib {version} can hang for good on CPU in programs with batched linear algebra "
                      "(jaxlib 0.10.0-0.11.0 wait on XLA's CPU thread pool from inside it); nf-ppl's flow guides "
                      "and diagnostics run such programs. Install jaxlib 0.11.1 or newer (Python 3.12+), or "
                      "0.9.2 on Python 3.11: pip install 'jax>=0.11.1' or pip install 'jax==0.9.2'",
                      RuntimeWarning, stacklevel=2)

"""Initial parameters drawn on the host.

Drawn with ``jax.random`` outside ``jit``, every new weight shape compiles its own random-number
program: 0.1-0.6 s each on a CPU, about a second of a small model's first fit (bench/RESULTS.md).
NumPy draws them without compiling anything.  A concrete JAX key seeds a NumPy generator with its
bits, so the same key always gives the same parameters.  A traced key (a flow built inside
``jit`` or ``vmap``) has no bits to read: there the draws fall back to ``jax.random``, with the
same distributions but other values.
"""

from __future__ import annotations

import jax
import numpy as np

from ._checks import is_concrete


def host_rng(key) -> np.random.Generator | None:
    """A NumPy generator seeded by the bits of a concrete JAX key (``None`` for a traced key)."""
    if not is_concrete(key):
        return None
    bits = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.random.default_rng(np.asarray(bits).ravel().tolist())


def on_device(array, dtype):
    """A host array as a JAX array of ``dtype`` (moved, not computed: nothing is compiled)."""
    return jax.device_put(np.asarray(array).astype(dtype))

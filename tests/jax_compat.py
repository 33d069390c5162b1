"""What the tests need from JAX across the supported versions (jax 0.4.30 up to the newest)."""

import jax


def enable_x64(on: bool = True):
    """Context manager switching float64 on or off: ``jax.enable_x64`` where it exists (jax >= 0.7),
    else ``jax.experimental.enable_x64`` / ``disable_x64``."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(on)
    from jax.experimental import disable_x64, enable_x64 as _enable

    return _enable() if on else disable_x64()


def trapezoid(y, x=None, axis=-1):
    """``numpy.trapezoid`` (NumPy >= 2), or ``numpy.trapz`` under NumPy 1.x."""
    import numpy as np

    return (getattr(np, "trapezoid", None) or np.trapz)(y, x, axis=axis)

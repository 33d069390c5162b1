"""Test-suite settings.

The tests run tiny computations whose cost is almost all XLA compilation, so most XLA
optimisation passes are switched off here (about a third less CPU time; results are the same
computations, unfused).  Library code and benchmarks never change this setting.
"""

import jax
import pytest

jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture
def x64():
    """Enable float64 for one test (tight tolerances), restoring the previous setting after."""
    with jax.enable_x64(True):
        yield

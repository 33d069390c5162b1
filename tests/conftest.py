"""Test-suite settings.

The tests run tiny computations whose cost is almost all XLA compilation, so compilation is made
cheaper here: most XLA optimisation passes are switched off (about a third less CPU time) and the
CPU backend uses its classic loop emitters instead of the newer fusion emitters
(``--xla_cpu_use_fusion_emitters=false``: about 40% less backend compile time on the layer
harness).  Results are the same computations, less optimised.  Subprocesses started by tests
inherit ``XLA_FLAGS``.  Library code and benchmarks never change these settings.
"""

import os

TEST_XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false"
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):  # before JAX creates its CPU backend
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

import jax  # noqa: E402
import pytest

jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture
def x64():
    """Enable float64 for one test (tight tolerances), restoring the previous setting after."""
    with jax.enable_x64(True):
        yield

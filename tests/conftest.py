"""Test-suite settings.

The tests run tiny computations whose cost is almost all XLA compilation, so most XLA
optimisation passes are switched off here (about a third less CPU time; results are the same
computations, unfused).  Library code and benchmarks never change this setting.
"""

import jax

jax.config.update("jax_disable_most_optimizations", True)

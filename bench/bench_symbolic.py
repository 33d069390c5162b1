"""Benchmark of the symbolic package.

1. Wall time of ``nf-ppl verify`` over the whole catalogue (goal: < 30 s on a 2-core machine).
2. Speed of a jitted ``SymbolicTransform`` against a hand-written JAX transform of the same
   map (forward + log|det J|, goal: within 1.2x): polar coordinates and a 1-D sinh-arcsinh map.
   Both are jitted and warmed up; we report the median of 7 interleaved repeats with
   block_until_ready.

Run: ``python bench/bench_symbolic.py``.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import sympy as sp  # noqa: E402

from symbolic import SymbolicTransform, cli  # noqa: E402

REPEATS = 7
N = 1_000_000


def bench_verify() -> tuple[float, int]:
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = cli.main([])
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(out.getvalue().strip().splitlines()[-1])
    print(f"(CPU time of this process: {cpu:.1f} s; wall time above depends on the machine's load)")
    return elapsed, code


def median_times(fns, x) -> list[float]:
    """Median wall time of each jitted function; runs are interleaved so machine load hits both alike."""
    for fn in fns:  # compile + warm up
        jax.block_until_ready(fn(x))
        jax.block_until_ready(fn(x))
    times = [[] for _ in fns]
    for _ in range(REPEATS):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            jax.block_until_ready(fn(x))
            bucket.append(time.perf_counter() - start)
    return [statistics.median(b) for b in times]


def polar_pair():
    r, t = sp.symbols("r t")
    u, v = sp.symbols("u v")
    sym = SymbolicTransform([r * sp.cos(t), r * sp.sin(t)], [r, t], support={r: (0, 1), t: (0, 2 * sp.pi)},
                            outputs=[u, v], inverse=[sp.sqrt(u**2 + v**2), sp.Mod(sp.atan2(v, u), 2 * sp.pi)])

    @jax.jit
    def symbolic(x):
        return sym(x), sym.log_abs_det_jacobian(x, None)

    @jax.jit
    def hand(x):
        rr, tt = x[..., 0], x[..., 1]
        return jnp.stack([rr * jnp.cos(tt), rr * jnp.sin(tt)], -1), jnp.log(rr)

    x = jax.random.uniform(jax.random.PRNGKey(0), (N, 2), minval=0.05, maxval=1.0) * jnp.asarray([1.0, 6.28])
    return symbolic, hand, x


def sinh_arcsinh_pair():
    x = sp.Symbol("x", real=True)
    e, d = 0.3, 1.4
    sym = SymbolicTransform(sp.sinh(d * sp.asinh(x) - e), x)

    @jax.jit
    def symbolic(z):
        return sym(z), sym.log_abs_det_jacobian(z, None)

    @jax.jit
    def hand(z):
        u = d * jnp.arcsinh(z) - e
        return jnp.sinh(u), jnp.log(d) + jnp.log(jnp.cosh(u)) - 0.5 * jnp.log1p(z * z)

    z = jax.random.normal(jax.random.PRNGKey(1), (N,))
    return symbolic, hand, z


def main() -> int:
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.device_count()}")
    elapsed, code = bench_verify()
    print(f"nf-ppl verify (whole catalogue): {elapsed:.1f} s, exit code {code} (goal < 30 s)")
    worst = 0.0
    for name, make in (("polar (2-D)", polar_pair), ("sinh-arcsinh (1-D)", sinh_arcsinh_pair)):
        symbolic, hand, x = make()
        t_sym, t_hand = median_times([symbolic, hand], x)
        ratio = t_sym / t_hand
        worst = max(worst, ratio)
        print(f"{name}: SymbolicTransform {t_sym * 1e3:.2f} ms, hand-written {t_hand * 1e3:.2f} ms, "
              f"ratio {ratio:.2f} (n={N}, median of {REPEATS}, goal <= 1.2)")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the symbolic package.

1. Wall time of ``nf-ppl verify`` over the whole catalogue (goal: < 30 s on a 2-core machine).
2. Speed of a jitted ``SymbolicTransform`` against a hand-written JAX transform of the same
   map (forward + log|det J|, goal: within 1.2x): polar coordinates and a 1-D sinh-arcsinh map.
   Both are jitted and warmed up; we report the median of 7 interleaved repeats with
   block_until_ready.

Run: ``python bench/bench_symbolic.py [--quick]``.  Prints a Markdown table.  ``--quick`` is a smoke
run: ``verify`` of one catalogue entry of each kind, and the timings at n = 4096, one repeat.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import sympy as sp  # noqa: E402

from common import table  # noqa: E402
from symbolic import SymbolicTransform, cli  # noqa: E402

# the full run verifies the whole catalogue; --quick one entry of each kind
FULL = dict(only=(), n=1_000_000, repeats=7)
QUICK = dict(only=("uniform_affine", "affine_coupling_2d", "nf_ppl:Tanh"), n=4096, repeats=1)


def bench_verify(only) -> tuple[str, float, float, int]:
    """``nf-ppl verify`` (restricted to ``only`` when given): its summary line, wall and CPU seconds, exit code."""
    argv = [a for name in only for a in ("--only", name)]
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = cli.main(argv)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return out.getvalue().strip().splitlines()[-1], elapsed, cpu, code


def median_times(fns, x, repeats) -> list[float]:
    """Median wall time of each jitted function; runs are interleaved so machine load hits both alike."""
    for fn in fns:  # compile + warm up
        jax.block_until_ready(fn(x))
        jax.block_until_ready(fn(x))
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            jax.block_until_ready(fn(x))
            bucket.append(time.perf_counter() - start)
    return [statistics.median(b) for b in times]


def polar_pair(n):
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

    x = jax.random.uniform(jax.random.PRNGKey(0), (n, 2), minval=0.05, maxval=1.0) * jnp.asarray([1.0, 6.28])
    return symbolic, hand, x


def sinh_arcsinh_pair(n):
    x, y = sp.Symbol("x", real=True), sp.Symbol("y", real=True)
    e, d = 0.3, 1.4
    # the inverse is given (as for polar): SymPy's own solve takes about a minute here, and only
    # forward + log|det J| are timed
    sym = SymbolicTransform(sp.sinh(d * sp.asinh(x) - e), x, outputs=[y], inverse=sp.sinh((sp.asinh(y) + e) / d))

    @jax.jit
    def symbolic(z):
        return sym(z), sym.log_abs_det_jacobian(z, None)

    @jax.jit
    def hand(z):
        u = d * jnp.arcsinh(z) - e
        return jnp.sinh(u), jnp.log(d) + jnp.log(jnp.cosh(u)) - 0.5 * jnp.log1p(z * z)

    z = jax.random.normal(jax.random.PRNGKey(1), (n,))
    return symbolic, hand, z


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: a few catalogue entries, small n")
    cfg = QUICK if parser.parse_args(argv).quick else FULL
    n, repeats = cfg["n"], cfg["repeats"]
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.device_count()}\n")
    summary, elapsed, cpu, code = bench_verify(cfg["only"])
    what = f"only {', '.join(cfg['only'])}" if cfg["only"] else "whole catalogue"
    rows = [(f"`nf-ppl verify` ({what}): {summary}", f"{elapsed:.1f} s wall ({cpu:.1f} s CPU), exit code {code}",
             "< 30 s (whole catalogue)")]
    for name, make in (("polar (2-D)", polar_pair), ("sinh-arcsinh (1-D)", sinh_arcsinh_pair)):
        symbolic, hand, x = make(n)
        t_sym, t_hand = median_times([symbolic, hand], x, repeats)
        rows.append((f"SymbolicTransform vs hand-written, {name}, jitted (n={n}, median of {repeats})",
                     f"{t_sym / t_hand:.2f}x the time ({t_sym * 1e3:.2f} ms vs {t_hand * 1e3:.2f} ms)", "<= 1.2x"))
    print(table(["figure", "value", "goal"], rows))
    print("\n(wall times depend on the machine's load; the CPU time is this process's)")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

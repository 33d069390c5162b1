"""Shared timing helpers for the benchmarks: jitted callables, warm-up, median of repeats."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time

import jax


def block(tree):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, tree)


def median_time(fn, *args, repeats: int = 7, warmup: int = 2) -> float:
    """Median wall time in seconds of ``fn(*args)`` after warm-up, blocking on the result."""
    for _ in range(warmup):
        block(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        block(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compile_time(jitted, *args) -> float:
    start = time.perf_counter()
    jitted.lower(*args).compile()
    return time.perf_counter() - start


def machine() -> str:
    dev = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    where = dev.device_kind if dev.platform != "cpu" else f"CPU {cpu}, {os.cpu_count()} cores"
    return f"{where}; JAX {jax.__version__}; {datetime.date.today().isoformat()}"


def table(headers, rows) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)

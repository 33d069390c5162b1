"""Where a pytest run's time goes in JAX: compilation, lowering and tracing per test.

As a pytest plugin, it adds up JAX's own duration events (``jax.monitoring``) during each test and
writes one TSV per process (pytest-xdist workers included) into ``$NF_PPL_COMPILE_PROFILE``::

    NF_PPL_COMPILE_PROFILE=/tmp/prof PYTHONPATH=bench python -m pytest -q -n 2 -p no:cacheprovider \\
        -p compile_profile tests
    python bench/compile_profile.py /tmp/prof          # totals per test file, then the top tests

Not used by the suite itself; results are in bench/RESULTS.md.
"""

from __future__ import annotations

import collections
import os
import pathlib
import sys

import pytest

EVENTS = {"compile": "/jax/core/compile/backend_compile_duration",
          "lower": "/jax/core/compile/jaxpr_to_mlir_module_duration",
          "trace": "/jax/core/compile/jaxpr_trace_duration"}
_TOTALS: collections.Counter = collections.Counter()
_ROWS: list[tuple[str, list[float]]] = []


def pytest_configure(config):
    from jax import monitoring

    monitoring.register_event_duration_secs_listener(lambda event, secs, **kw: _TOTALS.update({event: secs}))


def _snapshot():
    return [_TOTALS[e] for e in EVENTS.values()]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    before = _snapshot()
    yield
    _ROWS.append((item.nodeid, [a - b for a, b in zip(_snapshot(), before)]))


def pytest_unconfigure(config):
    out = pathlib.Path(os.environ.get("NF_PPL_COMPILE_PROFILE", "."))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"compile_profile_{os.getpid()}.tsv", "w") as f:
        for nodeid, secs in _ROWS:
            f.write("\t".join([nodeid] + [f"{s:.3f}" for s in secs]) + "\n")


def summarize(folder: str, top: int = 30) -> None:
    per_file: dict[str, list[float]] = collections.defaultdict(lambda: [0.0] * len(EVENTS))
    rows = []
    for path in pathlib.Path(folder).glob("compile_profile_*.tsv"):
        for line in path.read_text().splitlines():
            nodeid, *secs = line.split("\t")
            secs = [float(s) for s in secs]
            rows.append((secs, nodeid))
            per_file[nodeid.split("::")[0]] = [a + b for a, b in zip(per_file[nodeid.split("::")[0]], secs)]
    header = "  ".join(f"{k:>8}" for k in EVENTS)
    total = [sum(v[i] for v in per_file.values()) for i in range(len(EVENTS))]
    print(f"{header}  file\n" + "  ".join(f"{t:8.1f}" for t in total) + "  TOTAL")
    for name, secs in sorted(per_file.items(), key=lambda kv: -kv[1][0]):
        print("  ".join(f"{s:8.1f}" for s in secs) + f"  {name}")
    print(f"\n{header}  test (top {top})")
    for secs, nodeid in sorted(rows, reverse=True)[:top]:
        print("  ".join(f"{s:8.1f}" for s in secs) + f"  {nodeid}")


if __name__ == "__main__":
    summarize(sys.argv[1] if len(sys.argv) > 1 else ".")

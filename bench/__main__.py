"""``python -m bench``: run every benchmark and write ``bench/RESULTS.md``.

Each benchmark is a script ``bench/bench_NAME.py`` that prints Markdown (tables with our figure,
each peer's figure measured in the same run, and the ratio).  This runner executes them one after
another in fresh processes (so XLA flags and x64 settings cannot leak between them), collects
their output, and writes one report headed by the machine, the JAX version, the date and the
command.  ``--quick`` passes ``--quick`` to every script: a smoke run of about a minute in all
(every table, every peer, at tiny sizes; the figures are real but say nothing about speed), with
a per-script timeout of 300 s instead of 1800 s.  ``--only NAME`` (repeatable) runs a subset;
``--out`` changes the report path (``--quick`` runs write ``bench/RESULTS-quick.md`` unless told
otherwise, so they never replace the committed full results).  The exit code is 1 when any script
failed or timed out.  A rewritten report keeps the old one's hand-written notes: everything from the
line ``<!-- notes: kept by python -m bench -->`` to the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import machine  # noqa: E402

# name -> (script, title, accepts --quick)
BENCHMARKS = {
    "core": ("bench_core.py", "Core flows vs NumPyro and flowjax (issue 2)", True),
    "scaling": ("bench_scaling.py", "Cost growth, closeness to the matmul limit, sharding (issue 8)", True),
    "expressive": ("bench_expressive.py", "Spline and neural flows (issue 3)", True),
    "autoregressive": ("bench_autoregressive.py", "Autoregressive models and the CRF (issue 4)", True),
    "symbolic": ("bench_symbolic.py", "Symbolic package (issue 5)", True),
    "density": ("bench_density.py", "Flows as density models: defaults and ablation vs flowjax (issue 16)", True),
    "svi_dimension": ("bench_svi_dimension.py", "SVI keeps a warm start as the latent dimension grows (issue 21)", True),
    "inference": ("bench_inference.py", "Inference: flow guides, posteriordb accuracy, fitting (issue 6)", True),
}


def _text(out) -> str:
    """A subprocess stream as text (``TimeoutExpired`` carries bytes or None)."""
    return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")


def run_one(name: str, quick: bool, timeout: float) -> tuple[str, float, int]:
    script, _, accepts_quick = BENCHMARKS[name]
    path = os.path.join(HERE, script)
    if not os.path.exists(path):
        return f"(benchmark script {script} is missing)\n", 0.0, 1
    cmd = [sys.executable, path] + (["--quick"] if quick and accepts_quick else [])
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=os.path.dirname(HERE))
    except subprocess.TimeoutExpired as exc:  # keep what it printed: finished tables, progress lines
        partial, err = (_text(exc.stdout), _text(exc.stderr))
        tail = "\n".join(err.strip().splitlines()[-15:])
        return (f"{partial}\n(timed out after {timeout:.0f} s)\n\n```\n{tail}\n```\n",
                time.perf_counter() - start, 1)
    text = proc.stdout
    if proc.returncode:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        text += f"\n(failed with exit code {proc.returncode})\n\n```\n{tail}\n```\n"
    return text, time.perf_counter() - start, proc.returncode


NOTES_MARKER = "<!-- notes: kept by python -m bench -->"


def _kept_notes(path: str) -> str:
    """The hand-written part of an existing report: from ``NOTES_MARKER`` to the end (or empty)."""
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError:
        return ""
    at = text.find(NOTES_MARKER)
    return text[at:] if at >= 0 else ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, few repeats")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only these (repeatable)")
    parser.add_argument("--out", default=None, help="report path (default bench/RESULTS.md, or RESULTS-quick.md)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds allowed per script (default 1800, or 300 with --quick)")
    args = parser.parse_args(argv)
    timeout = args.timeout or (300 if args.quick else 1800)
    names = args.only or list(BENCHMARKS)
    out = args.out or os.path.join(HERE, "RESULTS-quick.md" if args.quick else "RESULTS.md")
    command = "python -m bench" + (" --quick" if args.quick else "") + "".join(f" --only {n}" for n in args.only or [])
    parts = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}.  Command: `{command}`.",
        "",
        "Every peer figure below was measured in the same run, on the same machine, as ours. Timings are "
        "jitted, after warm-up, median of repeated runs with `block_until_ready`.",
        "",
    ]
    failures = 0
    for name in names:
        title = BENCHMARKS[name][1]
        print(f"== {name}: {title}", flush=True)
        text, seconds, code = run_one(name, args.quick, timeout)
        failures += code != 0
        print(text, flush=True)
        parts += [f"## {title}", "", f"`python bench/{BENCHMARKS[name][0]}{' --quick' if args.quick and BENCHMARKS[name][2] else ''}` "
                  f"({seconds:.0f} s)", "", text.strip(), ""]
    notes = _kept_notes(out)
    tmp = out + ".tmp"
    with open(tmp, "w") as fh:
        fh.write("\n".join(parts) + "\n" + (f"\n{notes}" if notes else ""))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

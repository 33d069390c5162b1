"""Smoke test of the benchmark suite: every script runs end to end with ``--quick`` (marked ``bench``:
benchmarks are not run by CI, so ``pytest -m bench`` runs these on demand, about two minutes of CPU),
and the runner (``python -m bench``) writes its report (in every run, on the cheapest script).

No timing is asserted: only that every script ran and printed its tables into the report.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS

ROOT = Path(__file__).resolve().parents[1]


def _env():
    # conftest switches most XLA optimisations off in-process only; pass the same to the scripts
    # (they then compile about a third faster; the figures stay real, just unoptimised)
    return dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1",
                PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


RUNNER_CASE = "symbolic"  # the cheapest script also goes through the runner, which writes the report


@pytest.mark.bench
@pytest.mark.parametrize("name", sorted(set(BENCHMARKS) - {RUNNER_CASE}))
def test_bench_quick_prints_its_tables(name):
    """One benchmark script per test (pytest-xdist spreads them over its workers), started directly:
    one interpreter per script instead of the runner's two."""
    script = ROOT / "bench" / BENCHMARKS[name][0]
    proc = subprocess.run([sys.executable, str(script), "--quick"], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert re.search(r"^\|.*\|\n\|(-+:?\|)+$", proc.stdout, re.M), proc.stdout[:400]
    for bad in ("(failed", "(timed out", "| failed |"):
        assert bad not in proc.stdout


def test_bench_runner_writes_the_report_section():
    import tempfile

    name = RUNNER_CASE
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.md"
        proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", name, "--out", str(report)],
                              cwd=ROOT, env=_env(), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        text = report.read_text()
    assert re.search(rf"^Machine: .+\.  Command: `python -m bench --quick --only {name}`\.$", text, re.M)
    title = BENCHMARKS[name][1]
    assert f"\n## {title}\n" in text, f"no section for {title!r}"
    section = text[text.index(f"\n## {title}\n"):]
    assert re.search(r"^\|.*\|\n\|(-+:?\|)+$", section, re.M), section[:200]
    for bad in ("(failed", "(timed out", "| failed |", "is missing)"):
        assert bad not in text


def test_rewritten_report_keeps_the_hand_written_notes(tmp_path):
    from bench.__main__ import NOTES_MARKER, _kept_notes

    report = tmp_path / "RESULTS.md"
    assert _kept_notes(str(report)) == ""  # no report yet
    report.write_text(f"# old tables\n\n| a |\n|---|\n\n{NOTES_MARKER}\n## Notes\nwhere we are behind\n")
    assert _kept_notes(str(report)) == f"{NOTES_MARKER}\n## Notes\nwhere we are behind\n"
    report.write_text("# tables only\n")
    assert _kept_notes(str(report)) == ""


def test_a_timed_out_benchmark_keeps_what_it_printed(tmp_path, monkeypatch):
    import bench.__main__ as runner

    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "slow.py").write_text(
        "import sys, time\nprint('| finished table |', flush=True)\n"
        "print('done: first posterior', file=sys.stderr, flush=True)\ntime.sleep(30)\n")
    monkeypatch.setattr(runner, "HERE", str(tmp_path / "bench"))
    monkeypatch.setitem(runner.BENCHMARKS, "slow", ("slow.py", "Slow", False))
    text, seconds, code = runner.run_one("slow", quick=False, timeout=3)
    assert code == 1 and seconds < 20
    assert "| finished table |" in text and "timed out after 3 s" in text and "done: first posterior" in text


def test_sweep_count_of_the_sweeps_section_sees_the_early_stop():
    """bench_density's ``sweeps`` section counts the sweeps of every layer's sequential solve: an iaf
    whose networks output zeros is its own answer after one sweep from zero, and a second one sees
    nothing change (2, not d = 6); with out_scale 0.5 every layer needs more, at most d."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from bench_density import _mean_sweeps
    finally:
        sys.path.remove(str(ROOT / "bench"))
    import jax
    import nf_ppl

    x = jax.random.normal(jax.random.PRNGKey(0), (8, 6))
    flat = nf_ppl.iaf(jax.random.PRNGKey(0), 6, num_layers=2, hidden_dims=(8,), out_scale=0.0)
    assert _mean_sweeps(lambda f, x: f.log_prob(x), flat, x, layers=2) == 2.0
    busy = nf_ppl.iaf(jax.random.PRNGKey(0), 6, num_layers=2, hidden_dims=(8,), out_scale=0.5)
    assert 2.0 < _mean_sweeps(lambda f, x: f.log_prob(x), busy, x, layers=2) <= 6.0


def test_stopping_replay_returns_what_an_early_stopping_fit_would_have():
    """bench_density's ``stopping`` section: the replay of (evaluate every N epochs, patience P) on a
    per-epoch history returns the test figure of the best evaluated epoch and the epoch it stops at."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from bench_density import _replay
    finally:
        sys.path.remove(str(ROOT / "bench"))
    import numpy as np
    val = np.array([1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0])  # held-out LL after epochs 1..8
    test = np.arange(10.0, 18.0)  # a distinct test figure per epoch
    assert _replay(val, test, 1, 2) == (11.0, 4)  # best at epoch 2, epochs 3-4 no better: stop at 4
    assert _replay(val, test, 1, 3) == (14.0, 8)  # epoch 5 improves, 6-8 do not: stop at 8
    assert _replay(val, test, 2, 2) == (11.0, 4)  # evaluations at 2, 4: no gain at 4
    assert _replay(val, test, 1, 9) == (14.0, 8)  # never stops: the best of the whole history
    assert np.isnan(_replay(val, test, 10, 2)[0])  # no evaluation within the history
    creeping = np.array([1.0, 1.005, 1.008, 1.009, 2.0, 2.004, 2.006, 2.007])  # gains below 0.01 after 1 and 5
    assert _replay(creeping, test, 1, 3, 0.01) == (13.0, 4)  # epochs 2-4 gain < 0.01 on epoch 1: stop at 4, best 4
    assert _replay(creeping, test, 1, 3, 0.0) == (17.0, 8)  # every gain counts: runs to the end


def test_maf_holding_flowjax_weights_computes_flowjaxs_density():
    """bench_density's ``equal`` section: our ``maf`` holding a flowjax MAF's initial weights
    (``maf_from_flowjax``) gives flowjax's log-density on the column-swapped data, so a training
    difference between the two cannot come from the model."""
    pytest.importorskip("flowjax")
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from bench_density import _flowjax_flow, maf_from_flowjax
    finally:
        sys.path.remove(str(ROOT / "bench"))
    import numpy as np
    fj, _ = _flowjax_flow("maf", 3, 2)
    ours = maf_from_flowjax(fj)
    x = 2.0 * np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    expected = np.asarray(fj.log_prob(x))
    np.testing.assert_allclose(np.asarray(ours.log_prob(x[:, ::-1])), expected, rtol=1e-4, atol=1e-4)
    assert np.ptp(expected) > 1.0  # a real density, not a constant

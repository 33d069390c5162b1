"""``nf-ppl demo --quick`` runs end to end and writes its report and plots."""

from __future__ import annotations

import os

from nf_ppl.cli import main


def test_quick_demo_writes_report_and_plots(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert text.count("[pass]") >= 3 and "[FAIL]" not in text
    assert "ArviZ summary" in text and "sd of v" in text
    for png in ("two_moons.png", "funnel.png"):
        assert os.path.getsize(out / png) > 10_000
    assert f"report written to {out}" in capsys.readouterr().out

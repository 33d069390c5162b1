"""nf-ppl verify (symbolic.cli.main) and the catalogue."""

import subprocess
import sys

import pytest

from symbolic import catalogue, cli, get_example
from symbolic.catalogue import Example


def test_catalogue_names_and_kinds():
    names = [e.name for e in catalogue(numeric=False)]
    for required in ("uniform_scale", "uniform_affine", "normal_affine", "halfnormal_square", "normal_square",
                     "polar", "circle", "affine_coupling_2d", "maf", "iaf", "permutation", "composition"):
        assert required in names
    assert any(e.kind == "numeric" for e in catalogue())
    with pytest.raises(KeyError, match="available"):
        get_example("nope")


def test_verify_symbolic_part_passes(capsys):
    assert cli.main(["--no-numeric"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert "=== polar:" in out and "[PASS] det J = r" in out
    assert "all checks pass" in out.splitlines()[-1]


@pytest.mark.parametrize("flag, marker", [("--latex", "\\["), ("--markdown", "### "), (None, "===")])
def test_output_formats(capsys, flag, marker):
    argv = ["--only", "uniform_affine", "--only", "circle"] + ([flag] if flag else [])
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert marker in out and "circle" in out and "uniform_affine" in out and "polar" not in out


def test_failing_check_gives_nonzero_exit(monkeypatch, capsys):
    broken = Example("broken", "a wrong claim", lambda: get_example("uniform_scale").build(),
                     lambda c: [("density is 1", c.density == 1)])
    crashing = Example("crashing", "raises", lambda: 1 / 0, lambda c: [])
    monkeypatch.setattr(cli, "catalogue", lambda numeric=True: [broken, crashing])
    assert cli.main([]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] density is 1" in out and "ZeroDivisionError" in out and "2 check(s) FAILED" in out


def test_list_and_bad_arguments(capsys):
    assert cli.main(["--list", "--no-numeric"]) == 0
    assert "halfnormal_square" in capsys.readouterr().out
    assert cli.main(["--only", "no_such_example"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["--latex", "--markdown"])


def test_python_dash_m_symbolic():
    proc = subprocess.run([sys.executable, "-m", "symbolic", "--only", "uniform_scale"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "[PASS] density is 1/2" in proc.stdout

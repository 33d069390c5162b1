"""nf-ppl verify (symbolic.cli.main) and the catalogue."""

import re
import shutil
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
    out = capsys.readouterr().out.replace("\\_", "_")  # LaTeX escapes the underscore
    assert marker in out and "circle" in out and "uniform_affine" in out and "polar" not in out


def _environments_balance(tex):
    stack = []
    for kind, name in re.findall(r"\\(begin|end)\{(\w+\*?)\}", tex):
        if kind == "begin":
            stack.append(name)
        elif not stack or stack.pop() != name:
            return False
    return not stack


def test_latex_is_a_standalone_document_with_the_derivation_steps(tmp_path, capsys):
    path = tmp_path / "verify.tex"
    argv = ["--latex", "--output", str(path), "--only", "delta_affine", "--only", "normal_square",
            "--only", "affine_coupling_2d", "--only", "circle"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == ""  # everything went to the file
    tex = path.read_text()
    assert tex.startswith("\\documentclass") and tex.rstrip().endswith("\\end{document}")
    assert _environments_balance(tex)
    assert tex.count("\\section*") == 6  # five examples (normal_square matches halfnormal_square too), the summary
    for step in ("substitute the inverse into the base density", "take \\textbar{}det J\\_f\\textbar{} at the inverse",
                 "divide and simplify"):
        assert step in tex
    assert "\\delta\\left(y - 35\\right)" in tex  # the notes' f_# delta_17 = delta_35
    assert "(branch 2)" in tex  # x -> x^2 has two inverse branches, each derived
    text_lines = [ln for ln in tex.splitlines() if ln.startswith("\\noindent") or ln.startswith("\\item")]
    assert text_lines and not any(re.search(r"(?<!\\)[_#&%]", ln.split(":", 1)[0]) for ln in text_lines)
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed: the document's structure was checked, not its compilation")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", path.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "verify.pdf").stat().st_size > 10_000


def test_output_to_an_unwritable_path_is_refused(tmp_path, capsys):
    assert cli.main(["--only", "uniform_scale", "--output", str(tmp_path / "no" / "such" / "f.tex")]) == 2
    assert "cannot write --output" in capsys.readouterr().err


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

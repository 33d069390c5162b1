"""The suite's own XLA settings (tests/conftest.py) never crash a JAX version silently."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import conftest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.smoke
def test_unknown_xla_flag_stops_the_run_with_jaxs_message(tmp_path):
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != conftest._CHECKED}
    env["XLA_FLAGS"] = "--xla_no_such_flag_anywhere=1"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                          "--confcutdir", TESTS_DIR, "-c", os.devnull, "-p", "conftest", str(tmp_path)],
                         env=dict(env, PYTHONPATH=os.pathsep.join([TESTS_DIR, env.get("PYTHONPATH", "")])),
                         capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 4, out
    assert "JAX cannot start with XLA_FLAGS='--xla_no_such_flag_anywhere=1'" in out
    assert "xla_no_such_flag_anywhere" in out.split("JAX said:")[1]


def test_speed_only_flags_are_kept_only_where_jax_starts_with_them():
    flags = os.environ.get("XLA_FLAGS", "").split()
    for flag in conftest.SPEED_ONLY_XLA_FLAGS:
        assert (flag in flags) == conftest._jax_starts_with(flag)[0]


@pytest.mark.xdist_group("suite-settings")
def test_a_grouped_test_carries_its_group_in_its_id_under_xdist(request):
    """pytest-xdist's ``loadgroup`` scheduler groups tests by an ``@group`` suffix of their ids (conftest.py)."""
    if not request.config.getoption("loadgroup", False):
        pytest.skip("not a worker of a grouped pytest-xdist run (pytest -n N)")
    assert request.node.nodeid == ("tests/test_suite_settings.py::"
                                   "test_a_grouped_test_carries_its_group_in_its_id_under_xdist@suite-settings")

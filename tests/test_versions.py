"""Installed versions known to break what nf-ppl runs: warned about at import, excluded in pyproject.toml."""

from __future__ import annotations

import re
import warnings

import pytest

from nf_ppl._versions import HANGING_JAXLIB, warn_if_jaxlib_can_hang

MESSAGE = ("jaxlib 0.10.2 can hang for good on CPU in programs with batched linear algebra (jaxlib 0.10.0-0.11.0 "
           "wait on XLA's CPU thread pool from inside it); nf-ppl's flow guides and diagnostics run such programs. "
           "Install jaxlib 0.11.1 or newer (Python 3.12+), or 0.9.2 on Python 3.11: pip install 'jax>=0.11.1' or "
           "pip install 'jax==0.9.2'")


def test_a_jaxlib_whose_lapack_kernels_can_deadlock_is_warned_about_and_others_are_not():
    with pytest.warns(RuntimeWarning, match=re.escape(MESSAGE) + "$"):
        warn_if_jaxlib_can_hang("0.10.2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for version in ("0.5.3", "0.9.2", "0.11.1", "0.12.0.1"):
            warn_if_jaxlib_can_hang(version)


def test_pyproject_excludes_exactly_the_versions_that_are_warned_about():
    import pathlib
    text = (pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    for package in ("jax", "jaxlib"):
        spec = re.search(rf'"{package}(>=[^"]*)"', text).group(1)
        excluded = re.findall(r"!=([0-9.]+)", spec)
        assert tuple(excluded) == HANGING_JAXLIB, (package, spec)

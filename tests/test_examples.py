"""Smoke tests of the examples: each ``examples/NAME.py`` runs in-process with ``--quick``.

For every example: ``main(["--quick", "--out", tmp])`` returns 0, the PNG files it promises exist
and are non-empty, and one headline number (read back from ``metrics.json``) passes a loose
sanity bound.  The bounds are deliberately generous: a --quick run trains for a few hundred steps.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys

import pytest

EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _check_symbolic(m):
    assert m["max_tv_distance"] < 0.1  # derived densities match histograms of pushed samples
    assert all(abs(v - 1) < 1e-6 for v in m["normalization"].values())
    assert all(m["layers_match"].values())


def _check_density(m):
    for target, gain in m["best_minus_baseline"].items():
        assert gain > 0.2, f"{target}: best flow only {gain:.3f} nats above a Gaussian"


def _check_funnel(m):
    assert m["v_sd"]["IAF (AutoFlow)"] > m["v_sd"]["AutoNormal"]  # the flow reaches into the funnel
    assert m["ess_v"]["NeuTra"] > 5 and math.isfinite(m["ess_v_per_second"]["NUTS"])


def _check_schools(m):
    mu = m["posterior_mean"]["non-centered/NUTS"]["mu"]
    assert -2 < mu < 10
    assert abs(m["posterior_mean"]["non-centered/IAF guide"]["mu"] - mu) < 3


def _check_logistic(m):
    assert m["accuracy"]["IAF guide"] > 0.9 and m["accuracy"]["NUTS"] > 0.9


def _check_flow_prior(m):
    assert m["mu_mean_diff_in_sd"] < 0.5 and 0.6 < m["mu_sd_ratio"] < 1.6


def _check_digits(m):
    bpd = m["bpd"]
    assert bpd["categorical MADE"] < bpd["uniform"]
    assert bpd["Glow"] < bpd["uniform"] + 1.0


def _check_vae(m):
    assert m["iw_bound"]["IAF posterior"] >= m["elbo"]["IAF posterior"] - 1.0
    assert m["iw_bound"]["IAF posterior"] > -64 * math.log(17)  # better than a uniform pixel model


def _check_tagging(m):
    acc = m["accuracy"]
    assert acc["CRF Viterbi"] > 0.6 and acc["Seq beam (4)"] > 0.4


CASES = {
    "symbolic_jacobians": (["pushforward_1d.png", "pushforward_polar.png"], _check_symbolic),
    "density_2d": (["density_moons.png", "density_gaussian_ring.png"], _check_density),
    "neals_funnel": (["funnel_marginals.png", "funnel_v_traces.png"], _check_funnel),
    "eight_schools": (["eight_schools_forest.png"], _check_schools),
    "logistic_regression": (["calibration.png"], _check_logistic),
    "flow_prior": (["flow_prior.png"], _check_flow_prior),
    "digits_autoregressive": (["made_samples.png", "glow_samples.png"], _check_digits),
    "vae_digits": (["vae_reconstructions.png", "vae_samples.png"], _check_vae),
    "sequence_tagging": (["tagging_accuracy.png", "crf_confusion.png"], _check_tagging),
}


def _load(name):
    if EXAMPLES_DIR not in sys.path:
        sys.path.insert(0, EXAMPLES_DIR)
    return importlib.import_module(name)


def test_every_example_is_covered():
    scripts = {f[:-3] for f in os.listdir(EXAMPLES_DIR) if f.endswith(".py") and not f.startswith("_")}
    assert scripts == set(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_example_quick(name, tmp_path, capsys):
    module = _load(name)
    assert module.__doc__ and len(module.__doc__.strip()) > 50, "each example needs a module docstring"
    assert module.main(["--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert str(tmp_path) in printed  # the output folder is printed
    pngs, check = CASES[name]
    for png in pngs:
        path = tmp_path / png
        assert path.is_file() and path.stat().st_size > 1000, f"{png} missing or empty"
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "metrics.json") as fh:
        check(json.load(fh))


# The examples import ArviZ before ``from numpyro.infer import MCMC, NUTS``.  Under ArviZ 1.x that
# order left the package ``numpyro.infer`` without its submodules as attributes (ArviZ loads NumPyro
# through lazy_loader), so ``arviz.from_numpyro``, which reads ``numpyro.infer.initialization``,
# failed when an example ran as a script; in-process tests never saw it (pytest had imported NumPyro).
_ARVIZ_FIRST = """
import sys
sys.path.insert(0, sys.argv[1])
import _common
import arviz
from numpyro.infer import MCMC, NUTS
missing = sorted(name for name, module in sys.modules.items() if name.startswith("numpyro.") and module is not None
                 and getattr(sys.modules[name.rpartition(".")[0]], name.rpartition(".")[2], None) is not module)
print("missing", missing, "initialization" in dir(sys.modules["numpyro.infer"]))
"""


def test_an_example_run_as_a_script_has_numpyro_whole_for_arviz():
    import subprocess

    run = subprocess.run([sys.executable, "-c", _ARVIZ_FIRST, EXAMPLES_DIR], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-3:] == ["missing", "[]", "True"], run.stdout

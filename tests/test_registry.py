"""One registry of flow builders: what is registered is usable by name in every place that takes a name."""

import subprocess
import sys

import jax
import numpy as np
import pytest

import inference
import nf_ppl
from nf_ppl.registry import BUILDERS


@pytest.fixture
def registered():
    """Register a small builder for one test and remove it after."""
    added = []

    def add(name, fn=None):
        added.append(name)
        return nf_ppl.register_builder(name, fn)

    yield add
    for name in added:
        BUILDERS.pop(name, None)


def test_one_table_behind_every_view():
    assert nf_ppl.BUILDERS is BUILDERS
    assert inference.builders() == nf_ppl.builders() == BUILDERS
    assert inference.register_builder is nf_ppl.register_builder
    assert {"maf", "iaf", "realnvp", "nsf", "spline_coupling", "bnaf", "naf"} <= set(BUILDERS)
    assert nf_ppl.get_builder("bnaf") is nf_ppl.bnaf


def test_a_registered_builder_is_usable_by_name_and_round_trips_a_file(registered, tmp_path):
    @registered("tiny_maf")
    def tiny_maf(key, dim, **options):
        return nf_ppl.maf(key, dim, num_layers=2, hidden_dims=(8,), **options)

    assert tiny_maf.__name__ == "tiny_maf"  # the decorator returns the builder itself
    flow = inference.build_flow("tiny_maf", 3, 2)
    assert len(jax.tree_util.tree_leaves(flow)) == len(jax.tree_util.tree_leaves(
        nf_ppl.maf(jax.random.PRNGKey(3), 2, num_layers=2, hidden_dims=(8,))))
    x = np.random.default_rng(0).normal(size=(5, 2))
    path = inference.save(flow, tmp_path / "tiny.nfppl")
    back = inference.load(path)
    np.testing.assert_allclose(np.asarray(back.log_prob(x)), np.asarray(flow.log_prob(x)), rtol=1e-6)
    from inference.autoguide import _resolve_builder  # AutoFlow(model, flow="tiny_maf") resolves names here

    assert _resolve_builder("tiny_maf") == ("tiny_maf", tiny_maf)


def test_registration_errors_name_the_argument(registered):
    with pytest.raises(ValueError, match="builder name must be a non-empty string"):
        nf_ppl.register_builder("", nf_ppl.maf)
    with pytest.raises(TypeError, match="builder 'x' must be callable; got int"):
        nf_ppl.register_builder("x", 3)
    with pytest.raises(ValueError, match=r"unknown flow 'nope'; valid names are \[.*'maf'.*\]"):
        inference.build_flow("nope", 0, 2)


def test_cli_lists_every_registered_builder():
    out = subprocess.run([sys.executable, "-m", "nf_ppl.cli", "fit", "--help"], capture_output=True, text=True)
    text = " ".join(out.stdout.split())
    for name in ("bnaf", "naf", "nsf", "spline_coupling", "maf", "iaf", "realnvp"):
        assert name in text, (name, text)


MOVED = [("autoregressive", "models.autoregressive_density"), ("crf", "models.crf"), ("sequence", "models.sequence"),
         ("encoders", "models.encoders"), ("mvn", "models.mvn"), ("expressive", "flows")]


def test_moved_model_modules_keep_their_old_path_for_one_release_with_a_warning():
    # one fresh interpreter (the warning fires on first import only) checks every moved module
    code = "import importlib, warnings; warnings.simplefilter('always')\n"
    for old, new in MOVED:
        code += (f"with warnings.catch_warnings(record=True) as w:\n"
                 f"    old = importlib.import_module('nf_ppl.{old}')\n"
                 f"new = importlib.import_module('nf_ppl.{new}')\n"
                 f"assert all(getattr(old, n) is getattr(new, n) for n in old.__all__ if hasattr(new, n)), "
                 f"'names differ in {old}'\n"
                 f"msgs = [str(x.message) for x in w if issubclass(x.category, DeprecationWarning)]\n"
                 f"assert any('nf_ppl.{old} moved to nf_ppl.{new}' in m for m in msgs), msgs\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]

"""inference.save / load / build_flow: safe, atomic storage of flows; clear errors for bad files."""

from __future__ import annotations

import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_compat import enable_x64

import inference
import nf_ppl

X = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)


def _perturbed(flow, seed=1):
    leaves, treedef = jax.tree_util.tree_flatten(flow)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [l + 0.1 * jax.random.normal(k, l.shape, l.dtype)
                                                  for k, l in zip(keys, leaves)])


@pytest.mark.parametrize("name,options", [("maf", {"num_layers": 2, "hidden_dims": [6]}),
                                          ("realnvp", {"num_layers": 2, "hidden_dims": (5,), "permutation": "random"})])
def test_build_save_load_round_trip(tmp_path, name, options):
    flow = _perturbed(inference.build_flow(name, 3, 3, **options))  # e.g. a trained flow: same structure
    path = inference.save(flow, tmp_path / "f.npz", metadata={"note": "unit test"})
    loaded = inference.load(path)
    np.testing.assert_array_equal(np.asarray(flow.log_prob(X)), np.asarray(loaded.log_prob(X)))
    again, metadata = inference.load(path, return_metadata=True)
    assert metadata == {"note": "unit test"}
    np.testing.assert_array_equal(np.asarray(again.log_prob(X)), np.asarray(loaded.log_prob(X)))
    with np.load(path, allow_pickle=False) as npz:  # a plain .npz, readable without pickle
        header = json.loads(bytes(npz["__header__"]))
    assert header["spec"]["builder"] == name and header["spec"]["seed"] == 3 and header["metadata"] == {"note": "unit test"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npz"]


@pytest.mark.parametrize("name,old_default,options", [
    ("realnvp", {"conditioner_bound": None, "affine_from": "base", "log_scale_bound": 5.0, "permutation": "reverse"}, {"num_layers": 2}),
    ("realnvp", {"conditioner_bound": None, "affine_from": "base", "log_scale_bound": 3.0, "num_layers": 6, "permutation": "reverse"}, {}),
    ("realnvp", {"conditioner_bound": None, "affine_from": "base", "log_scale_bound": 3.0}, {"num_layers": 2}),
    ("spline_coupling", {"conditioner_bound": None, "permutation": "reverse"}, {"num_layers": 2}),
    ("maf", {"num_layers": 5, "permutation": "reverse"}, {}),
    ("maf", {"permutation": "reverse"}, {"num_layers": 2}),
    ("nsf", {"conditioner_bound": None, "permutation": "reverse"}, {"num_layers": 2}),
    ("maf", {"permutation": "random"}, {"num_layers": 2}),
    ("nsf", {"conditioner_bound": None, "permutation": "random"}, {"num_layers": 2}),
    ("spline_coupling", {"conditioner_bound": None, "permutation": "random"}, {"num_layers": 2}),
    ("realnvp", {"conditioner_bound": None, "permutation": "random"}, {"num_layers": 2}),
    ("realnvp", {"conditioner_bound": None, "affine_from": "base", "log_scale_bound": 3.0, "permutation": "random"}, {"num_layers": 2}),
    ("nsf", {"conditioner_bound": None}, {"num_layers": 2}),
    ("realnvp", {"conditioner_bound": None}, {"num_layers": 2}),
    ("spline_coupling", {"conditioner_bound": None}, {"num_layers": 2}),
    ("iaf", {"affine_from": "base", "permutation": "reverse"}, {"num_layers": 2}),
    ("iaf", {"affine_from": "base", "permutation": "reverse"}, {"num_layers": 2, "scale": "exp"}),
    ("bnaf", {"num_layers": 1, "slope": 0.5, "skip": 0.0}, {}),
    ("bnaf", {"slope": 0.5, "skip": 0.0}, {"num_layers": 3})])
def test_file_written_before_a_builder_default_changed_still_loads(tmp_path, name, old_default, options):
    """realnvp's log_scale_bound default went 5.0 -> 3.0, then its num_layers 6 -> 10 and permutation
    "reverse" -> "auto" (spline_coupling's permutation too), then its layers were written from the data
    side (``affine_from`` "base" -> "data", bound 3.0 -> 5.0), and maf's num_layers 5 -> 8, then its
    permutation "reverse" -> "auto" (nsf's too), then "auto" drew its permutations from a fixed
    stream instead of the key ("random" before), and iaf's layers were written from the data side
    and permuted at random (``affine_from`` "base" -> "data", permutation "reverse" -> "auto"), and bnaf's
    layers gained a linear skip term (slope 0.5 -> 0.001, num_layers 1 -> 2), and the networks of realnvp, nsf
    and spline_coupling read inputs bounded at 3 (``conditioner_bound`` None -> 3.0, with every earlier
    set of defaults of theirs): a file whose spec does not name the option was
    written with the old default, and loads with it (seed 3: seed 0's stream is the fixed one)."""
    options = {**options, "hidden_dims": (5,)}
    old = _perturbed(inference.builders()[name](jax.random.PRNGKey(3), 3, **options, **old_default))
    spec = {"builder": name, "seed": 3, "dim": 3, "options": options}
    path = inference.save(old, tmp_path / "old.npz", spec=spec)
    loaded = inference.load(path)
    np.testing.assert_array_equal(np.asarray(old.log_prob(X)), np.asarray(loaded.log_prob(X)))
    for key, value in old_default.items():  # a re-save names the old default
        assert inference.spec_of(loaded)["options"][key] == value
    today = inference.build_flow(name, 3, 3, **options)
    assert jax.tree_util.tree_structure(today) != jax.tree_util.tree_structure(loaded)


def test_explicit_spec_and_template_loading(tmp_path):
    flow = _perturbed(nf_ppl.iaf(jax.random.PRNGKey(0), 3, num_layers=2, hidden_dims=(4,), log_scale_bound=3.0))
    spec = {"builder": "iaf", "seed": 0, "dim": 3, "options": {"num_layers": 2, "hidden_dims": (4,), "log_scale_bound": 3.0}}
    inference.save(flow, tmp_path / "a.npz", spec=spec)
    a = inference.load(tmp_path / "a.npz")
    np.testing.assert_array_equal(np.asarray(a.log_prob(X)), np.asarray(flow.log_prob(X)))
    assert inference.build(spec).flow_event_shape == (3,)
    # no spec known: loading needs a template of the same structure
    odd = _perturbed(nf_ppl.iaf(jax.random.PRNGKey(0), 3, num_layers=3, hidden_dims=(7,)))
    inference.save(odd, tmp_path / "b.npz")
    with pytest.raises(inference.FlowFileError, match="no builder spec; pass like="):
        inference.load(tmp_path / "b.npz")
    b = inference.load(tmp_path / "b.npz", like=nf_ppl.iaf(jax.random.PRNGKey(5), 3, num_layers=3, hidden_dims=(7,)))
    np.testing.assert_array_equal(np.asarray(b.log_prob(X)), np.asarray(odd.log_prob(X)))
    with pytest.raises(inference.FlowFileError, match="different structure"):
        inference.load(tmp_path / "b.npz", like=nf_ppl.iaf(jax.random.PRNGKey(5), 3, num_layers=2, hidden_dims=(7,)))


def test_truncated_tampered_and_foreign_files_are_refused(tmp_path):
    flow = inference.build_flow("maf", 0, 3, num_layers=2, hidden_dims=(4,))
    good = tmp_path / "good.npz"
    inference.save(flow, good)
    raw = good.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(inference.FlowFileError, match="truncated, corrupted or not an nf-ppl"):
        inference.load(tmp_path / "trunc.npz")
    # tamper: change one weight, keep the header (and its digest)
    with np.load(good, allow_pickle=False) as npz:
        arrays = {k: np.array(npz[k]) for k in npz.files}
    arrays["leaf_00000"].flat[0] += 1.0
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (tmp_path / "tampered.npz").write_bytes(buf.getvalue())
    with pytest.raises(inference.FlowFileError, match="SHA-256 .* does not match"):
        inference.load(tmp_path / "tampered.npz")
    np.savez(tmp_path / "foreign.npz", w=np.zeros(3))
    with pytest.raises(inference.FlowFileError, match="not an nf-ppl file"):
        inference.load(tmp_path / "foreign.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(inference.FlowFileError, match="not an nf-ppl"):
        inference.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError):
        inference.load(tmp_path / "missing.npz")


def test_unknown_builder_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown flow 'glowy'; valid names are \[.*'iaf'.*'maf'.*'realnvp'"):
        inference.build_flow("glowy", 0, 2)


@pytest.mark.smoke
def test_float32_file_loads_in_float64_program_and_back(tmp_path):
    """A flow saved at one precision loads at the running one, cast, with a PrecisionCastWarning."""
    flow32 = _perturbed(inference.build_flow("maf", 0, 3, num_layers=2, hidden_dims=(6,)))
    assert {l.dtype for l in jax.tree_util.tree_leaves(flow32)} == {jnp.dtype(jnp.float32)}
    path32 = inference.save(flow32, tmp_path / "f32.npz")
    with enable_x64(True):
        with pytest.warns(inference.PrecisionCastWarning, match="saved at float32.*cast to float64"):
            flow64 = inference.load(path32)
        assert {l.dtype for l in jax.tree_util.tree_leaves(flow64)} == {jnp.dtype(jnp.float64)}
        x64 = X.astype(np.float64)
        lp64 = np.asarray(flow64.log_prob(x64))
        assert lp64.dtype == np.float64
        np.testing.assert_allclose(lp64, np.asarray(flow32.log_prob(X)), rtol=1e-5, atol=1e-5)
        # a float32 flow under x64 computes in the promoted dtype: float64 results, float32-rounded parameters
        lp_mixed = np.asarray(flow32.log_prob(x64))
        assert lp_mixed.dtype == np.float64
        np.testing.assert_allclose(lp_mixed, lp64, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(flow32.astype(jnp.float64).log_prob(x64)), lp64, rtol=1e-12)
        path64 = inference.save(flow64, tmp_path / "f64.npz")
    with pytest.warns(inference.PrecisionCastWarning, match="saved at float64.*cast to float32"):
        back = inference.load(path64)
    assert {l.dtype for l in jax.tree_util.tree_leaves(back)} == {jnp.dtype(jnp.float32)}
    np.testing.assert_allclose(np.asarray(back.log_prob(X)), np.asarray(flow32.log_prob(X)), rtol=1e-6, atol=1e-6)


def test_astype_refuses_integer_dtypes():
    flow = inference.build_flow("maf", 0, 2, num_layers=1, hidden_dims=(4,))
    with pytest.raises(TypeError, match="dtype must be a floating-point dtype; got int32"):
        flow.astype(jnp.int32)

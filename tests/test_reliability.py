"""Faults on purpose: nothing a user trains, saves or resumes is silently NaN, unchecked or lost.

Each test here is named by the guarantee it holds (README, "Reliability").
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import inference
import nf_ppl
from nf_ppl import cli

KEY = jax.random.PRNGKey(0)
SMALL = dict(num_layers=2, hidden_dims=(8,))
FIT = dict(max_steps=200, batch_size=64, learning_rate=1e-2, eval_every=50, progress=False)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(n=512, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    return np.stack([z[:, 0], 0.8 * z[:, 0] + 0.6 * z[:, 1] ** 2], -1).astype(np.float32)


def _with_nan(flow):
    """The flow with one NaN in the second weight matrix of its (stacked) MADE."""
    made = flow.transform.layer.made
    weights = list(made.weights)
    weights[1] = weights[1].at[1, 0, 0].set(jnp.nan)
    made = type(made).tree_unflatten(made.tree_flatten()[1], (tuple(weights),) + made.tree_flatten()[0][1:])
    return flow.replace(transform=flow.transform.replace(layer=flow.transform.layer.replace(made=made)))


def _leaves(flow):
    return [np.asarray(l) for l in jax.tree_util.tree_leaves(flow)]


# -- non-finite parameters are refused where they enter ----------------------------------------------

NAN_MESSAGE = (r"parameters contain NaN or inf: transform<Stack>\.layer<MaskedAffineAutoregressive>\.made\."
               r"weights\[1\] \(shape \(2, 4, 8\): 1 of 64 entries, first at index \(1, 0, 0\)\)")


def test_nonfinite_parameters_are_refused_by_fit_save_and_load(tmp_path):
    flow = nf_ppl.maf(KEY, 2, **SMALL)
    bad = _with_nan(flow)
    assert np.isnan(np.asarray(bad.log_prob(_data(4)))).all()  # what a user would otherwise get, silently
    with pytest.raises(ValueError, match="flow passed to fit's " + NAN_MESSAGE):
        inference.fit(bad, _data(), **FIT)
    with pytest.raises(ValueError, match="flow to save's " + NAN_MESSAGE):
        inference.save(bad, tmp_path / "bad.npz")
    assert not os.listdir(tmp_path)
    # a file holding NaN parameters (written by other means) is refused on load, naming the parameter
    leaves, treedef = jax.tree_util.tree_flatten(bad)
    header = {"kind": "flow", "spec": None, "treedef": str(treedef), "leaves": [], "metadata": {}}
    inference._io.write_container(tmp_path / "nan.npz", inference._io.leaves_to_arrays(leaves), header)
    with pytest.raises(ValueError, match=r"in '.*nan\.npz''s " + NAN_MESSAGE):
        inference.load(tmp_path / "nan.npz", like=flow)


def _normal_model():
    numpyro.sample("a", dist.Normal(0.0, 1.0))
    numpyro.sample("b", dist.Normal(0.0, 1.0).expand([2]).to_event(1))


def test_autoflow_refuses_nonfinite_initial_values_and_flows():
    values = {"a": 0.0, "b": jnp.array([0.0, jnp.nan])}
    guide = inference.AutoFlow(_normal_model, init_loc_fn=numpyro.infer.init_to_value(values=values))
    with pytest.raises(ValueError, match=r"AutoFlow: no initial point where the model's log-density and its "
                                         r"gradient are finite .*init_to_value"):
        inference.run_svi(_normal_model, guide, num_steps=5)
    guide = inference.AutoFlow(_normal_model, flow=_with_nan(nf_ppl.maf(KEY, 3, **SMALL)))
    with pytest.raises(ValueError, match="AutoFlow's flow's " + NAN_MESSAGE.replace(r"\(2, 4, 8\)", r"\(2, 6, 8\)")
                       .replace("64 entries", "96 entries")):
        inference.run_svi(_normal_model, guide, num_steps=5)


# -- fit never returns parameters worse than those it started from ---------------------------------

def test_fit_stops_with_a_clear_error_when_every_step_is_nonfinite():
    data = np.full((256, 2), 1e30, np.float32)  # every log-density overflows in float32 (unscaled: standardize=False)
    flow = nf_ppl.maf(KEY, 2, **SMALL)
    calls = []
    for mode in ("skip", "stop"):
        with pytest.raises(ValueError, match=r"NaN or inf at every one of the first \d+ steps, so nothing was trained\. "
                                             r"Check the data scale .*learning rate .*initial parameters"):
            inference.fit(flow, data, on_nonfinite=mode, callback=lambda *a: calls.append(a), standardize=False, **FIT)
    assert calls == []  # stopped at the first chunk, before any callback


def test_fit_counts_skipped_nonfinite_steps_in_history_and_summary():
    data = _data(64)
    data[7] = 1e20  # unscaled (standardize=False), its log-density overflows in float32
    with pytest.warns(RuntimeWarning, match="not finite"):
        _, hist = inference.fit(nf_ppl.maf(KEY, 2, **SMALL), data, val_fraction=0.0, standardize=False,
                                **dict(FIT, batch_size=16, max_steps=100))
    assert hist.num_nonfinite == len(hist.nonfinite_steps) > 0
    assert f"{hist.num_nonfinite} step(s) had a non-finite loss or gradient (first at step " \
           f"{hist.nonfinite_steps[0]}) and were skipped" in hist.summary()
    assert hist.summary().startswith("stopped after step 100 (epoch 25): the step budget (max_steps) was used up")


def test_fit_never_returns_parameters_worse_than_its_start():
    data, val = _data(), _data(256, seed=1)
    flow, _ = inference.fit(nf_ppl.maf(KEY, 2, **SMALL), data, val_data=val, **FIT)  # a trained flow
    start_nll = -float(flow.log_prob(val).mean())
    with pytest.warns(RuntimeWarning, match="no evaluation improved on the starting parameters"):
        again, hist = inference.fit(flow, data, val_data=val, **dict(FIT, learning_rate=3.0))
    assert hist.initial_val_loss == pytest.approx(start_nll, abs=1e-5)
    assert min(hist.val_loss) > start_nll and hist.best_step == 0
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(flow), _leaves(again)))
    assert "best held-out NLL" in hist.summary() and "at step 0" in hist.summary()


# -- SVI reports non-finite ELBO steps ----------------------------------------------------------------

def _cliff_model():
    """Standard normal with the region x > 1.5 cut away: guide draws there have an ELBO of -inf."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.factor("cliff", jnp.where(x > 1.5, -jnp.inf, 0.0))


OPT = inference.suggest_optimizer(200)


def test_run_svi_counts_nonfinite_elbo_steps_and_can_stop():
    guide = numpyro.infer.autoguide.AutoNormal(_cliff_model, init_scale=1.0)
    with pytest.warns(RuntimeWarning, match=r"ELBO was NaN or inf at (\d+) of 200 steps \(first at step (\d+)\); "
                                            "those updates were skipped") as rec:
        params, elbo, _ = inference.run_svi(_cliff_model, guide, num_steps=200, optimizer=OPT)
    bad = np.flatnonzero(~np.isfinite(elbo))
    assert bad.size > 0 and f"at {bad.size} of 200 steps (first at step {bad[0]})" in str(rec[0].message)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in params.values())
    with pytest.warns(RuntimeWarning, match=r"ELBO was NaN or inf at step (\d+) of 200; stopped there"):
        stopped, elbo_stop, _ = inference.run_svi(_cliff_model, guide, num_steps=200, optimizer=OPT,
                                                  on_nonfinite="stop")
    first = int(np.flatnonzero(~np.isfinite(elbo_stop))[0])
    assert first == bad[0] and np.all(np.isnan(elbo_stop[first:])) and np.all(np.isfinite(elbo_stop[:first]))
    # the parameters are those from before the first non-finite step: a run of exactly `first` steps
    before, _, _ = inference.run_svi(_cliff_model, guide, num_steps=first, optimizer=OPT)
    for name in before:
        np.testing.assert_allclose(np.asarray(stopped[name]), np.asarray(before[name]), rtol=1e-6)
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        inference.run_svi(_cliff_model, guide, num_steps=5, on_nonfinite="ignore")


# -- files: one chain of digests over everything read back --------------------------------------------

def _rewrite(path, out, edit):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: np.array(npz[k]) for k in npz.files}
    edit(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    out.write_bytes(buf.getvalue())


def _edit_header(change):
    def edit(arrays):
        header = json.loads(bytes(arrays["__header__"]))
        change(header)
        arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    return edit


def test_any_edit_of_a_saved_file_is_detected_and_named(tmp_path):
    good = tmp_path / "good.npz"
    inference.save(inference.build_flow("maf", 0, 2, **SMALL), good, metadata={"standardize_sd": [1.0, 2.0]})
    _rewrite(good, tmp_path / "meta.npz", _edit_header(lambda h: h["metadata"].update(standardize_sd=[1.0, 3.0])))
    with pytest.raises(inference.FlowFileError, match="SHA-256 of the header .* does not match"):
        inference.load(tmp_path / "meta.npz")
    _rewrite(good, tmp_path / "weights.npz", lambda a: a["leaf_00000"].flat.__setitem__(0, 5.0))
    with pytest.raises(inference.FlowFileError, match="SHA-256 of the stored arrays does not match"):
        inference.load(tmp_path / "weights.npz")
    _rewrite(good, tmp_path / "resealed.npz", lambda a: None)  # same content, new zip container: not ours
    with pytest.raises(inference.FlowFileError, match="SHA-256 of the whole file does not match"):
        inference.load(tmp_path / "resealed.npz")


def test_every_single_byte_corruption_is_detected(tmp_path):
    good = tmp_path / "good.npz"
    inference.save(inference.build_flow("maf", 0, 2, **SMALL), good)
    raw = good.read_bytes()
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad.npz"
    for position in rng.integers(0, len(raw), 200):
        corrupted = bytearray(raw)
        corrupted[position] ^= int(rng.integers(1, 256))
        bad.write_bytes(bytes(corrupted))
        with pytest.raises(inference.FlowFileError):
            inference._io.read_container(bad)


def test_files_of_the_previous_format_still_load_with_a_note(tmp_path):
    good = tmp_path / "good.npz"
    flow = inference.build_flow("maf", 0, 2, **SMALL)
    inference.save(flow, good)

    def to_v2(header):
        header.pop("header_sha256")
        header["version"] = 2
    _rewrite(good, tmp_path / "v2.npz", _edit_header(to_v2))
    with pytest.warns(inference.LegacyFileWarning, match="format version 2 .* header .* is not"):
        old = inference.load(tmp_path / "v2.npz")
    x = _data(8)
    np.testing.assert_array_equal(np.asarray(old.log_prob(x)), np.asarray(flow.log_prob(x)))


def test_save_creates_missing_folders_only_when_asked(tmp_path):
    flow = inference.build_flow("maf", 0, 2, **SMALL)
    target = tmp_path / "typo" / "deeper" / "f.npz"
    with pytest.raises(FileNotFoundError, match=r"the folder .*deeper' does not exist \(pass mkdir=True"):
        inference.save(flow, target)
    assert not (tmp_path / "typo").exists()
    inference.load(inference.save(flow, target, mkdir=True))


# -- checkpoints: fail before work, never lose the fit -----------------------------------------------

def test_unwritable_checkpoint_path_is_refused_before_the_first_step(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    calls = []
    for path, match in ((tmp_path / "a-file" / "ckpt.npz", "is not a folder"),
                        (tmp_path / "missing" / "ckpt.npz", "does not exist")):
        with pytest.raises(OSError, match=f"checkpoint_path .*{match}"):
            inference.fit(nf_ppl.maf(KEY, 2, **SMALL), _data(), checkpoint_path=path, checkpoint_every=50,
                          callback=lambda *a: calls.append(a), **FIT)
    assert calls == []


def test_failed_checkpoint_write_keeps_training_and_returns_the_best(tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    data, val = _data(), _data(256, seed=1)

    def remove_folder(step, flow, info):
        if step == 100:
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()

    with pytest.warns(RuntimeWarning, match=r"could not write the checkpoint .* at step (100|150|200) .* training goes on"):
        fitted, hist = inference.fit(nf_ppl.maf(KEY, 2, **SMALL), data, val_data=val, checkpoint_path=folder / "c.npz",
                                     checkpoint_every=50, callback=remove_folder, patience=None, **FIT)
    assert hist.steps == [50, 100, 150, 200] and hist.stop_reason == "max_steps"
    assert len(hist.checkpoint_failures) == 3 and hist.checkpoint_failures[0].startswith("step 100")
    assert -float(fitted.log_prob(val).mean()) == pytest.approx(hist.best_val_loss, abs=1e-5)
    assert "3 checkpoint write(s) failed" in hist.summary()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interrupt_at_a_random_chunk_boundary_returns_the_best_so_far(seed):
    data, val = _data(), _data(256, seed=1)
    stop_at = int(np.random.default_rng(seed).integers(1, 6)) * 50

    def interrupt(step, flow, info):
        if step == stop_at:
            raise KeyboardInterrupt

    with pytest.warns(RuntimeWarning, match=f"interrupted at step {stop_at}"):
        fitted, hist = inference.fit(nf_ppl.maf(KEY, 2, **SMALL), data, val_data=val, callback=interrupt,
                                     patience=None, **dict(FIT, max_steps=300))
    assert hist.stop_reason == "interrupted" and hist.steps[-1] == stop_at
    best = min([hist.initial_val_loss] + hist.val_loss)
    assert hist.best_val_loss == pytest.approx(best)
    assert -float(fitted.log_prob(val).mean()) == pytest.approx(best, abs=1e-5)


KILL_SCRIPT = textwrap.dedent("""
    import os, sys, numpy as np
    import inference, nf_ppl, jax
    from inference import _io
    jax.config.update("jax_disable_most_optimizations", True)  # compiled as in the test process (conftest.py)
    writes = []
    real_replace = os.replace
    def replace(src, dst):
        writes.append(dst)
        if len(writes) == 2:  # the second checkpoint: its temporary file is written, the rename never happens
            os._exit(17)
        real_replace(src, dst)
    _io.os.replace = replace
    data = np.load(sys.argv[2])
    flow = nf_ppl.maf(jax.random.PRNGKey(0), 2, num_layers=2, hidden_dims=(8,))
    inference.fit(flow, data["train"], val_data=data["val"], checkpoint_path=sys.argv[1], checkpoint_every=50,
                  patience=None, max_steps=200, batch_size=64, learning_rate=1e-2, eval_every=50, progress=False)
""")


def test_kill_between_temporary_file_and_rename_keeps_the_previous_checkpoint(tmp_path):
    data, val = _data(), _data(256, seed=1)
    np.savez(tmp_path / "data.npz", train=data, val=val)
    ckpt = tmp_path / "run.ckpt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(ckpt), str(tmp_path / "data.npz")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 17, run.stderr
    assert any(p.name.startswith(".tmp-run.ckpt") for p in tmp_path.iterdir())  # the write that never finished
    header, _ = inference._io.read_container(ckpt, kind="checkpoint")
    assert header["step"] == 50
    resumed, hist = inference.fit(nf_ppl.maf(KEY, 2, **SMALL), data, val_data=val, checkpoint_path=ckpt,
                                  checkpoint_every=50, resume=True, patience=None, **FIT)
    full, hist_full = inference.fit(nf_ppl.maf(KEY, 2, **SMALL), data, val_data=val, patience=None, **FIT)
    assert hist.resumed_from == 50 and hist.val_loss == hist_full.val_loss
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(full), _leaves(resumed)))


# -- the command line ---------------------------------------------------------------------------------

def _cli(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _csv(path, data):
    np.savetxt(path, data, delimiter=",", header="a,b", comments="")
    return path


@pytest.mark.parametrize("option,value,words", [
    ("--steps", "0", "--steps must be a positive int"), ("--layers", "0", "--layers must be a positive int"),
    ("--val-fraction", "1.5", "--val-fraction must be a fraction in (0, 1)"),
    ("--lr", "-0.01", "--lr must be a learning rate in (0, 1]"), ("--batch-size", "0", "--batch-size must be"),
    ("--patience", "0", "--patience must be a positive int"), ("--flow", "glowy", "--flow 'glowy' is not a flow"),
    ("--epochs", "0", "--epochs must be a positive int"), ("--time-budget", "-1", "--time-budget must be a positive"),
])
def test_cli_refuses_bad_options_in_one_line_before_work(tmp_path, capsys, option, value, words):
    data = _csv(tmp_path / "d.csv", _data(100))
    code, out, err = _cli(["fit", data, "--out", tmp_path / "m.npz", option, value], capsys)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m.npz").exists()


def test_cli_checks_output_paths_before_fitting(tmp_path, capsys):
    data = _csv(tmp_path / "d.csv", _data(100))
    (tmp_path / "a-file").write_text("x")
    code, out, err = _cli(["fit", data, "--out", tmp_path / "a-file" / "m.npz", "--steps", "1"], capsys)
    assert code == 2 and "is not a folder" in err and "Traceback" not in err
    model = tmp_path / "new" / "m.npz"
    code, out, err = _cli(["fit", data, "--out", model, "--steps", "200", "--layers", "2", "--hidden", "8",
                           "--quiet"], capsys)
    assert code == 0 and f"created the output folder {model.parent}" in out and model.exists()
    for command in (["sample", model, "-n", "5"], ["logprob", model, data]):
        code, out, err = _cli([*command, "--out", tmp_path / "a-file" / "o.csv"], capsys)
        assert code == 2 and "is not a folder" in err and "Traceback" not in err


def test_cli_refuses_to_save_a_fit_far_below_a_gaussian(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    data = _csv(tmp_path / "d.csv", np.stack([x, x + 0.01 * rng.normal(size=400)], -1))  # correlation 0.99995
    code, out, err = _cli(["fit", data, "--out", tmp_path / "m.npz", "--steps", "1", "--lr", "1e-9", "--layers", "1",
                           "--hidden", "4", "--quiet"], capsys)
    assert code == 1 and "far below a single Gaussian's" in err and "not saved" in err
    assert len(err.strip().splitlines()) == 1 and sorted(os.listdir(tmp_path)) == ["d.csv"]


def test_cli_refuses_a_model_whose_header_was_edited(tmp_path, capsys):
    data = _csv(tmp_path / "d.csv", _data(100))
    model = tmp_path / "m.npz"
    assert _cli(["fit", data, "--out", model, "--steps", "100", "--layers", "1", "--hidden", "4", "--quiet"],
                capsys)[0] == 0
    _rewrite(model, model, _edit_header(lambda h: h["metadata"].update(columns=["x", "y"])))
    code, out, err = _cli(["logprob", model, data, "--out", tmp_path / "lp.csv"], capsys)
    assert code == 2 and "SHA-256 of the header" in err and not (tmp_path / "lp.csv").exists()


def _default_sigint():
    """In the child before exec: SIGINT back to its default.  A test runner's worker may ignore SIGINT, and an
    ignored signal stays ignored across exec, so Python would not install its KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_to_cli_fit_saves_the_best_so_far(tmp_path):
    data = _csv(tmp_path / "d.csv", _data(2000))
    model = tmp_path / "m.npz"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               JAX_DISABLE_MOST_OPTIMIZATIONS="1")  # the suite's compile setting (tests/conftest.py)
    proc = subprocess.Popen([sys.executable, "-m", "nf_ppl.cli", "fit", str(data), "--out", str(model), "--steps",
                             "1000000", "--epochs", "1000000", "--patience", "1000000", "--layers", "2",
                             "--hidden", "8"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    err_chunks = []
    reader = threading.Thread(target=lambda: err_chunks.extend(iter(lambda: proc.stderr.read(64), "")), daemon=True)
    reader.start()
    deadline = time.time() + 240
    while time.time() < deadline and "train=" not in "".join(err_chunks):  # a training chunk has finished
        time.sleep(0.2)
    assert "train=" in "".join(err_chunks), "".join(err_chunks)[-2000:]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=240)
    reader.join(timeout=10)
    assert proc.returncode == 0, "".join(err_chunks)[-2000:]
    assert "interrupted: the best parameters so far" in out
    header, _ = inference._io.read_container(model, kind="flow")
    assert header["metadata"]["stop_reason"] == "interrupted"
    assert np.all(np.isfinite(np.asarray(inference.load(model).log_prob(np.zeros((3, 2))))))

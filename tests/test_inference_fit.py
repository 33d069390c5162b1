"""inference.fit: maximum likelihood, validation/early stopping, non-finite steps, interrupts, resume, sharding."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import inference
import nf_ppl

KEY = jax.random.PRNGKey(0)
SMALL = dict(num_layers=2, hidden_dims=(8,))


def _data(n=512, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    return np.stack([z[:, 0], 0.8 * z[:, 0] + 0.6 * z[:, 1] ** 2], -1).astype(np.float32)


def _leaves(flow):
    return [np.asarray(l) for l in jax.tree_util.tree_leaves(flow)]


FIT = dict(max_steps=200, batch_size=64, learning_rate=1e-2, eval_every=50, progress=False)


def test_fit_improves_likelihood_keeps_best_and_is_reproducible():
    data, val = _data(), _data(256, seed=1)
    flow = nf_ppl.maf(KEY, 2, **SMALL)
    before = -float(flow.log_prob(val).mean())
    fitted, hist = inference.fit(flow, data, val_data=val, **FIT)
    after = -float(fitted.log_prob(val).mean())
    assert after < before - 0.3
    assert hist.steps == [50, 100, 150, 200] and len(hist.train_loss) == len(hist.val_loss) == 4
    assert hist.stop_reason == "max_steps" and hist.nonfinite_steps == []
    # the returned parameters are the best ones seen on the validation set
    assert after == pytest.approx(hist.best_val_loss, rel=1e-5, abs=1e-5)
    assert hist.best_val_loss == pytest.approx(min(hist.val_loss))
    again, _ = inference.fit(flow, data, val_data=val, **FIT)
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(fitted), _leaves(again)))
    other, _ = inference.fit(flow, data, val_data=val, **dict(FIT, seed=1))
    assert not all(np.array_equal(a, b) for a, b in zip(_leaves(fitted), _leaves(other)))


def test_early_stopping_and_validation_split():
    flow = nf_ppl.maf(KEY, 2, **SMALL)
    # 512 rows, 20% held out: 410 training rows, 7 steps an epoch; min_delta=1e9 means no evaluation
    # counts as an improvement, so the fit stops at the first evaluation at least `patience` epochs in
    _, hist = inference.fit(flow, _data(), val_fraction=0.2, patience=8, min_delta=1e9, **dict(FIT, max_steps=400))
    assert hist.steps_per_epoch == 7 and hist.converged
    assert hist.stop_reason == "converged" and hist.steps == [50, 100]  # 50 < 8 * 7 <= 100
    # min_delta only decides when to stop; the parameters returned are the best seen
    assert hist.best_step == hist.steps[int(np.argmin(hist.val_loss))] and hist.best_val_loss == min(hist.val_loss)
    assert "converged" in hist.summary() and f"at step {hist.best_step}" in hist.summary()


def test_epochs_are_the_unit_of_budget_evaluation_and_patience():
    data, val = _data(1000), _data(256, seed=1)
    flow = nf_ppl.maf(KEY, 2, **SMALL)
    kw = dict(batch_size=100, learning_rate=1e-2, progress=False, val_data=val)
    _, hist = inference.fit(flow, data, max_epochs=12, **kw)  # 10 steps an epoch; an evaluation every epoch
    assert hist.steps_per_epoch == 10 and hist.steps == list(range(10, 121, 10)) and hist.epochs == list(range(1, 13))
    assert hist.stop_reason == "max_epochs" and "epoch budget" in hist.summary()
    _, hist = inference.fit(flow, data, max_epochs=12, max_steps=30, **kw)  # whichever budget comes first
    assert hist.steps == [10, 20, 30] and hist.stop_reason == "max_steps"
    _, hist = inference.fit(flow, data, max_epochs=12, eval_every=50, **kw)  # evaluations every 5 epochs
    assert hist.steps == [50, 100, 120]
    # patience counts epochs: 12 epochs without an improvement of min_delta, evaluations every 5 epochs
    _, hist = inference.fit(flow, data, patience=12, min_delta=1e9, **dict(kw, eval_every=50))
    assert hist.stop_reason == "converged" and hist.steps == [50, 100, 150]
    # with many steps per epoch, evaluations come once an epoch
    _, hist = inference.fit(flow, data, batch_size=8, max_epochs=2, learning_rate=1e-3, progress=False, val_data=val)
    assert hist.steps_per_epoch == 125 and hist.steps == [125, 250]


def test_a_plateau_halves_the_learning_rate_before_the_fit_stops():
    # no evaluation improves by min_delta: patience 4 epochs (40 steps), so the cut comes after 2
    # epochs (step 20) and the fit stops at step 40.  With SGD at a tiny rate the gradient hardly
    # changes, so an epoch (every training row once) moves the parameters by the same vector: after
    # the cut, by half of it.
    import optax
    data, val = _data(1000), _data(256, seed=1)
    flow = nf_ppl.maf(KEY, 2, **SMALL)
    seen = []
    kw = dict(batch_size=100, optimizer=optax.sgd(1e-5), val_data=val, patience=4, min_delta=1e9, lr_cut=0.5,
              ema=None, progress=False)  # the callback sees the parameters themselves, not their average
    _, hist = inference.fit(flow, data, callback=lambda step, f, info: seen.append(
        np.concatenate([np.ravel(l) for l in jax.tree_util.tree_leaves(f)])), **kw)
    assert hist.lr_cuts == [20] and hist.steps[-1] == 40 and hist.stop_reason == "converged"
    assert "cut 1 time(s)" in hist.summary()
    moves = [np.linalg.norm(b - a) for a, b in zip(seen, seen[1:])]  # epochs 2, 3, 4
    assert moves[0] > 0 and moves[1] / moves[0] == pytest.approx(0.5, rel=0.02)
    assert moves[2] / moves[0] == pytest.approx(0.5, rel=0.02)
    _, hist = inference.fit(flow, data, **dict(kw, optimizer=None, lr_cut=None))
    assert hist.lr_cuts == [] and hist.steps[-1] == 40
    with pytest.raises(ValueError, match="lr_cut must be a number in"):
        inference.fit(flow, data, lr_cut=1.5)


def test_default_budget_is_bounded_in_epochs_and_wall_time():
    data = _data(300)
    flow = nf_ppl.maf(KEY, 2, **SMALL)
    with pytest.warns(RuntimeWarning, match=r"stopped by time_budget=1e-06 s at step 3 \(epoch 1\)"):
        _, hist = inference.fit(flow, data, batch_size=128, time_budget=1e-6, progress=False)
    assert hist.stop_reason == "time_budget" and hist.steps == [3] and "wall-time budget" in hist.summary()
    import inspect
    defaults = {k: p.default for k, p in inspect.signature(inference.fit).parameters.items()}
    assert defaults["max_epochs"] is None and defaults["max_steps"] is None  # -> DEFAULT_MAX_EPOCHS
    assert defaults["time_budget"] == inference._fit.DEFAULT_TIME_BUDGET > 0
    assert defaults["patience"] == "auto"
    # "auto" patience: 30 epochs, raised to 100 steps (270 rows are 3 steps an epoch: 90 -> 100 steps);
    # with min_delta=1e9 no evaluation improves, so the fit stops at the first evaluation (one an
    # epoch) at or past 100 steps
    _, hist = inference.fit(flow, data, batch_size=128, min_delta=1e9, time_budget=None, progress=False)
    assert hist.stop_reason == "converged" and hist.steps[-1] == 102 and hist.steps[:2] == [3, 6]
    from inference._fit import _Plan
    patience = {rows: _Plan(rows, 256, None, None, None, "auto", None).patience_steps
                for rows in (398, 2400, 7000, 100_000)}  # breast_cancer, the demo, two moons, large
    assert patience == {398: 100, 2400: 300, 7000: 840, 100_000: 30 * 391}
    plan = _Plan(270, 128, None, None, None, "auto", None)  # the default budget: 500 epochs or 10,000 steps
    assert plan.total_steps == 10_002 and plan.budget_reason == "max_epochs"
    assert _Plan(100_000, 100, None, None, None, "auto", None).total_steps == 500 * 1000
    for name, value in (("max_epochs", 0), ("patience", 1.5), ("time_budget", 0), ("sampling", "bootstrap")):
        with pytest.raises(ValueError, match=name):
            inference.fit(flow, data, **{name: value})


def test_shuffled_epochs_visit_every_training_row_once():
    """sampling='shuffle': the minibatches of one epoch are a permutation of the training rows."""
    from inference._fit_kernels import epoch_order, shuffled_indices

    key, n, batch = jax.random.PRNGKey(3), 23, 5  # 5 steps an epoch; the last minibatch wraps around
    spe = -(-n // batch)
    for epoch in (0, 1):
        order = epoch_order(key, epoch * spe, spe, n)
        rows = np.concatenate([np.asarray(shuffled_indices(order, epoch * spe + s, batch, spe, n)) for s in range(spe)])
        assert sorted(rows[:n].tolist()) == list(range(n))  # every row once ...
        assert rows[n:].tolist() == np.asarray(order)[:spe * batch - n].tolist()  # ... topped up from the start
    assert not np.array_equal(epoch_order(key, 0, spe, n), epoch_order(key, spe, spe, n))
    # with replacement the rows of an epoch repeat and miss some (the other sampling, same API)
    data, val = _data(1000), _data(256, seed=1)
    flow = nf_ppl.maf(KEY, 2, **SMALL)
    a, _ = inference.fit(flow, data, val_data=val, sampling="replacement", **FIT)
    b, _ = inference.fit(flow, data, val_data=val, sampling="shuffle", **FIT)
    assert not all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b)))


def test_conditional_fit_p_y_given_x():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 1)).astype(np.float32)
    y = np.concatenate([2 * x, np.sin(2 * x)], -1) + 0.1 * rng.normal(size=(512, 2)).astype(np.float32)
    flow = nf_ppl.maf(KEY, 2, context_dim=1, **SMALL)
    fitted, hist = inference.fit(flow, y, context=x, **dict(FIT, max_steps=300))
    marginal_nll = float(np.sum(0.5 * np.log(2 * np.pi * np.e * y.var(0))))
    assert hist.best_val_loss < marginal_nll - 1.0
    lp = fitted.log_prob(y[:4], context=x[:4])
    assert lp.shape == (4,) and np.all(np.isfinite(lp))


def test_nonfinite_steps_are_reported_and_skipped_or_stop():
    data = _data(64)
    data[7] = 1e20  # finite, but its log-density overflows to -inf in float32 (unscaled: standardize=False)
    flow = nf_ppl.maf(KEY, 2, **SMALL)
    FIT_RAW = dict(FIT, standardize=False)
    with pytest.warns(RuntimeWarning, match=r"not finite at step\(s\) \[\d+"):
        fitted, hist = inference.fit(flow, data, val_fraction=0.0, **dict(FIT_RAW, batch_size=16, max_steps=100))
    assert hist.nonfinite_steps and hist.stop_reason == "max_steps"
    assert len(hist.nonfinite_steps) == 25  # shuffled epochs: the bad row is in one of the 4 minibatches of each epoch
    assert all(np.all(np.isfinite(l)) for l in _leaves(fitted))
    with pytest.warns(RuntimeWarning, match=r"not finite at step \d+; stopping"):
        fitted, hist = inference.fit(flow, data, val_fraction=0.0, on_nonfinite="stop", sampling="replacement",
                                     **dict(FIT_RAW, batch_size=16, max_steps=100))
    assert hist.stop_reason == "nonfinite" and hist.steps[-1] == hist.nonfinite_steps[0]
    assert all(np.all(np.isfinite(l)) for l in _leaves(fitted))


def test_fit_evaluates_keeps_and_returns_the_moving_average_of_the_parameters():
    """``ema=d``: the flow returned is ``a_t = d a_(t-1) + (1 - d) p_t`` (``a_0 = p_0``) over the
    iterates ``p_t`` of the same fit without averaging, read step by step through its callback."""
    data, val = _data(), _data(128, seed=1)
    flow = nf_ppl.maf(KEY, 2, **SMALL)
    kw = dict(FIT, max_steps=30, eval_every=1, val_data=val, patience=None, standardize=False)

    def averages(**options):  # the moving averages a_0, ..., a_30 of the fit's iterates without averaging
        iterates = [_leaves(flow)]
        plain, _ = inference.fit(flow, data, ema=None, callback=lambda step, f, info: iterates.append(_leaves(f)),
                                 **dict(kw, **options))
        out = [iterates[0]]
        for p in iterates[1:]:
            out.append([0.8 * a + 0.2 * b for a, b in zip(out[-1], p)])
        return plain, out

    plain, want = averages()
    seen = []
    averaged, hist = inference.fit(flow, data, ema=0.8, callback=lambda step, f, info: seen.append(
        -float(np.mean(np.asarray(f.log_prob(val))))), **kw)
    np.testing.assert_allclose(hist.val_loss, seen, rtol=1e-5)  # the history's held-out loss is the average's
    assert hist.best_step > 0
    for got, ref in zip(_leaves(averaged), want[hist.best_step]):  # the best average is returned
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
    assert not all(np.allclose(a, b) for a, b in zip(_leaves(averaged), _leaves(plain)))
    _, want = averages(val_data=None, val_fraction=0.0)
    no_val, _ = inference.fit(flow, data, ema=0.8, **dict(kw, val_data=None, val_fraction=0.0))
    for got, ref in zip(_leaves(no_val), want[-1]):  # without held-out rows: the last average
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
    for bad in (1.0, -0.1, True, "0.9"):
        with pytest.raises(ValueError, match=re.escape(f"ema must be a number in [0, 1) or None; got {bad!r}")):
            inference.fit(flow, data, ema=bad, **FIT)


def test_keyboard_interrupt_returns_best_so_far_and_resume_is_bitwise(tmp_path):
    data, val = _data(), _data(128, seed=1)
    flow = nf_ppl.maf(KEY, 2, **SMALL)
    full, hist_full = inference.fit(flow, data, val_data=val, patience=None, **dict(FIT, max_steps=300))

    def interrupt(step, current, info):
        if step == 200:
            raise KeyboardInterrupt

    ckpt = tmp_path / "run.ckpt"
    with pytest.warns(RuntimeWarning, match="interrupted at step 200"):
        part, hist = inference.fit(flow, data, val_data=val, callback=interrupt, checkpoint_path=ckpt,
                                   checkpoint_every=100, patience=None, **dict(FIT, max_steps=300))
    assert hist.stop_reason == "interrupted" and hist.steps == [50, 100, 150, 200]
    assert -float(part.log_prob(val).mean()) == pytest.approx(hist.best_val_loss, abs=1e-5)
    resumed, hist2 = inference.fit(flow, data, val_data=val, checkpoint_path=ckpt, checkpoint_every=100,
                                   resume=True, patience=None, **dict(FIT, max_steps=300))
    assert hist2.resumed_from == 200 and hist2.steps == hist_full.steps
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(full), _leaves(resumed)))
    assert hist2.val_loss == hist_full.val_loss
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]  # atomic writes leave no temp files
    # a checkpoint from another configuration is refused
    with pytest.raises(ValueError, match="different fit.*seed"):
        inference.fit(flow, data, val_data=val, checkpoint_path=ckpt, checkpoint_every=100, resume=True,
                      **dict(FIT, seed=5))
    refused = r"^checkpoint '.*run\.ckpt' was written by a different fit \(differs in ema\); delete it or use resume=False$"
    with pytest.raises(ValueError, match=refused):
        inference.fit(flow, data, val_data=val, checkpoint_path=ckpt, checkpoint_every=100, resume=True,
                      ema=None, **FIT)


def test_batch_larger_than_the_data_trains_full_batch():
    """178 rows, the default batch of 256: full-batch training with a note, equal to batch_size = n_train."""
    data = _data(178)
    flow = nf_ppl.maf(KEY, 2, **SMALL)
    with pytest.warns(UserWarning, match=r"batch_size=256 is larger than the 160 training rows \(178 rows minus 18 "
                                         r"held out for validation\); training full-batch"):
        big, hist = inference.fit(flow, data, **dict(FIT, batch_size=256))
    exact, _ = inference.fit(flow, data, **dict(FIT, batch_size=160))
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(big), _leaves(exact)))
    # full batch: the first step's training loss is the NLL of all training rows under the start
    perm = np.random.default_rng(0).permutation(178)
    one, hist1 = inference.fit(flow, data, standardize=False, **dict(FIT, batch_size=160, max_steps=1, eval_every=1))
    assert hist1.train_loss[0] == pytest.approx(-float(flow.log_prob(data[perm[18:]]).mean()), rel=1e-5)


def test_history_reports_held_out_log_likelihood_in_nats_and_bits_per_dim():
    data, val = _data(), _data(256, seed=1)
    fitted, hist = inference.fit(nf_ppl.maf(KEY, 2, **SMALL), data, val_data=val, **FIT)
    assert hist.val_log_likelihood == [-v for v in hist.val_loss]
    np.testing.assert_allclose(hist.val_bits_per_dim, np.asarray(hist.val_loss) / (2 * np.log(2)))
    assert hist.best_step > 0 and max(hist.val_log_likelihood) == pytest.approx(-hist.best_val_loss)
    assert float(np.mean(np.asarray(fitted.log_prob(val)))) == pytest.approx(max(hist.val_log_likelihood), abs=1e-4)


def test_bad_input_messages():
    flow = nf_ppl.maf(KEY, 2, **SMALL)
    data = _data(100)
    bad = data.copy()
    bad[[3, 17]] = [np.nan, np.inf]
    with pytest.raises(ValueError, match=r"data contains NaN or inf in 2 of 100 rows.*3, 17"):
        inference.fit(flow, bad, **FIT)
    with pytest.raises(ValueError, match=r"last dimension 3 but the flow's event size is 2"):
        inference.fit(flow, np.zeros((10, 3)), **FIT)
    with pytest.raises(ValueError, match=r"context was given but the flow is not conditional"):
        inference.fit(flow, data, context=np.zeros((100, 1)), **FIT)
    cflow = nf_ppl.maf(KEY, 2, context_dim=1, **SMALL)
    with pytest.raises(ValueError, match=r"conditional \(context_dim=1\): pass context="):
        inference.fit(cflow, data, **FIT)
    with pytest.raises(ValueError, match=r"context has 99 rows but the data has 100"):
        inference.fit(cflow, data, context=np.zeros((99, 1)), **FIT)
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        inference.fit(flow, data, on_nonfinite="ignore", **FIT)
    for lr in (-1.0, 0, float("inf"), float("nan"), "1e-3", True):  # -1 ran to 'no evaluation improved on the start'
        with pytest.raises(ValueError, match=rf"^learning_rate must be a positive finite number; got {re.escape(repr(lr))}$"):
            inference.fit(flow, data, **dict(FIT, learning_rate=lr))
    with pytest.raises(ValueError, match=r"^weight_decay must be a finite number >= 0; got -0\.1$"):
        inference.fit(flow, data, weight_decay=-0.1, **FIT)


SHARD_SCRIPT = textwrap.dedent("""
    import os, numpy as np, jax
    import inference, nf_ppl
    assert jax.local_device_count() == 2, jax.devices()
    rng = np.random.default_rng(0)
    data = rng.normal(size=(256, 2)).astype(np.float32)
    flow = nf_ppl.maf(jax.random.PRNGKey(0), 2, num_layers=2, hidden_dims=(8,))
    kw = dict(max_steps=60, batch_size=64, eval_every=30, progress=False, learning_rate=1e-2)
    a, ha = inference.fit(flow, data, shard=True, **kw)
    b, hb = inference.fit(flow, data, shard=False, **kw)
    assert ha.num_devices == 2 and hb.num_devices == 1
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ha.val_loss, hb.val_loss, rtol=1e-5)
    print("SHARD-OK")
""")


def test_sharded_fit_on_two_cpu_devices_matches_one_device():
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               JAX_DISABLE_MOST_OPTIMIZATIONS="1")  # the suite's compile setting (tests/conftest.py)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", SHARD_SCRIPT], env=env, cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert "SHARD-OK" in out.stdout, out.stderr[-3000:]

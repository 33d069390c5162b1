"""The ``nf-ppl`` command line: fit / sample / logprob and its bad-input messages (exit code 2, one line)."""

from __future__ import annotations

import numpy as np
import pytest

from nf_ppl.cli import main

FIT = ["--layers", "2", "--hidden", "16,16", "--steps", "400", "--quiet", "--lr", "3e-3"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    data = rng.normal(size=(1500, 2)) * [2.0, 0.5] + [10.0, -1.0]
    csv = folder / "data.csv"
    np.savetxt(csv, data, delimiter=",", header="a,b", comments="")
    model = folder / "model.npz"
    assert main(["fit", str(csv), "--flow", "maf", "--out", str(model), *FIT]) == 0
    return folder, csv, model, data


def test_fit_sample_logprob_round_trip(fitted, capsys):
    folder, csv, model, data = fitted
    draws_path = folder / "draws.csv"
    assert main(["sample", str(model), "-n", "4000", "--out", str(draws_path)]) == 0
    draws = np.loadtxt(draws_path, delimiter=",", skiprows=1)
    assert draws.shape == (4000, 2)
    np.testing.assert_allclose(draws.mean(0), [10.0, -1.0], atol=0.15)
    np.testing.assert_allclose(draws.std(0), [2.0, 0.5], rtol=0.1)
    lp_path = folder / "lp.npy"
    assert main(["logprob", str(model), str(csv), "--out", str(lp_path)]) == 0
    log_p = np.load(lp_path)[:, 0]
    # closed form: the data are N((10, -1), diag(4, 0.25)); expected log-density = minus the entropy
    entropy = 0.5 * np.log(2 * np.pi * np.e * 4.0) + 0.5 * np.log(2 * np.pi * np.e * 0.25)
    assert abs(log_p.mean() + entropy) < 0.1
    import inference  # the model file is a density in the data's units from Python too

    np.testing.assert_allclose(np.asarray(inference.load(str(model)).log_prob(data[:20])), log_p[:20], rtol=1e-5)


def test_a_model_file_written_before_fit_standardised_still_samples_and_scores(tmp_path):
    """Earlier ``nf-ppl fit`` files held a flow over standardised columns and the standardisation in
    their metadata; ``sample`` and ``logprob`` still undo it."""
    import jax
    import inference

    flow = inference.build_flow("maf", 0, 2, num_layers=1, hidden_dims=(4,))
    mean, sd = np.array([10.0, -1.0]), np.array([2.0, 0.5])
    model = tmp_path / "old.npz"
    inference.save(flow, model, metadata={"standardize_mean": mean.tolist(), "standardize_sd": sd.tolist(),
                                          "columns": ["a", "b"]})
    rows = np.array([[10.0, -1.0], [12.0, -0.5]])
    np.save(tmp_path / "rows.npy", rows)
    assert main(["logprob", str(model), str(tmp_path / "rows.npy"), "--out", str(tmp_path / "lp.npy")]) == 0
    expected = np.asarray(flow.log_prob((rows - mean) / sd)) - np.log(sd).sum()
    np.testing.assert_allclose(np.load(tmp_path / "lp.npy")[:, 0], expected, rtol=1e-5)
    assert main(["sample", str(model), "-n", "5", "--seed", "3", "--out", str(tmp_path / "d.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"), np.asarray(flow.sample(jax.random.PRNGKey(3), (5,))) * sd + mean,
                               rtol=1e-5)


def _run(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def test_missing_file(tmp_path, capsys):
    code, err = _run(["fit", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "m.npz")], capsys)
    assert code == 2 and "data file not found" in err and len(err.splitlines()) == 1


def test_non_numeric_cell_reports_line_and_column(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("x,y\n1,2\n3,abc\n")
    code, err = _run(["fit", str(path), "--out", str(tmp_path / "m.npz")], capsys)
    assert code == 2 and "non-numeric cell 'abc' at line 3, column y" in err


def test_nonfinite_rows_refused_unless_dropped(tmp_path, capsys):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(60, 2))
    data[[3, 10], 1] = np.nan
    path = tmp_path / "nan.npy"
    np.save(path, data)
    code, err = _run(["fit", str(path), "--out", str(tmp_path / "m.npz"), *FIT], capsys)
    assert code == 2 and "2 of 60 rows contain NaN or inf (data rows 4, 11)" in err and "--drop-nonfinite" in err
    code, _ = _run(["fit", str(path), "--out", str(tmp_path / "m.npz"), "--drop-nonfinite", *FIT], capsys)
    assert code == 0


def test_foreign_or_truncated_model(fitted, tmp_path, capsys):
    _, csv, model, _ = fitted
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.zeros(3))
    code, err = _run(["sample", str(foreign), "-n", "3", "--out", str(tmp_path / "s.csv")], capsys)
    assert code == 2 and "not a readable nf-ppl model" in err
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(model.read_bytes()[:200])
    code, err = _run(["logprob", str(truncated), str(csv), "--out", str(tmp_path / "lp.csv")], capsys)
    assert code == 2 and "not a readable nf-ppl model" in err


def test_column_count_mismatch(fitted, tmp_path, capsys):
    _, _, model, _ = fitted
    path = tmp_path / "three.csv"
    np.savetxt(path, np.zeros((5, 3)), delimiter=",")
    code, err = _run(["logprob", str(model), str(path), "--out", str(tmp_path / "lp.csv")], capsys)
    assert code == 2 and "has 3 columns but the model was fitted to 2" in err


def test_never_overwrites_without_force(fitted, tmp_path, capsys):
    _, _, model, _ = fitted
    out = tmp_path / "draws.csv"
    out.write_text("keep me")
    code, err = _run(["sample", str(model), "-n", "3", "--out", str(out)], capsys)
    assert code == 2 and "exists; pass --force" in err and out.read_text() == "keep me"
    assert main(["sample", str(model), "-n", "3", "--out", str(out), "--force"]) == 0
    assert out.read_text() != "keep me"


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for command in ("demo", "verify", "fit", "sample", "logprob"):
        assert command in text


def test_fit_with_a_student_t_base_saves_and_loads_it(tmp_path):
    import inference

    rng = np.random.default_rng(1)
    csv = tmp_path / "heavy.csv"
    np.savetxt(csv, rng.standard_t(2.0, size=(600, 2)), delimiter=",")
    model = tmp_path / "model.npz"
    assert main(["fit", str(csv), "--flow", "maf", "--base", "student_t", "--out", str(model), *FIT]) == 0
    flow = inference.load(str(model))
    assert flow.base_kind == "student_t" and np.all(np.asarray(flow.base_df) < 30.0)  # trained away from its start

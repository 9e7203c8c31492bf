"""linrec.reproduce: the loss comparison end to end on tiny synthetic data."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from linrec.reproduce import (
    add_arguments,
    grid_points,
    paired_gain,
    planted_data,
    run,
    split_validation,
)


def _args(tmp_path, *extra):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--out", str(tmp_path), "--n-jobs", "1", *extra])


def _write_lightgcn(folder, X):
    folder.mkdir()
    for name, M in (("train.txt", X[0]), ("test.txt", X[1])):
        lines = [
            " ".join(map(str, [u, *M.indices[M.indptr[u] : M.indptr[u + 1]]]))
            for u in range(M.shape[0])
            if M.indptr[u + 1] > M.indptr[u]
        ]
        (folder / name).write_text("\n".join(lines) + "\n")


def test_split_validation_keeps_every_user_and_partitions():
    train, _ = planted_data(seed=1, n_users=60, n_items=40, rank=3)
    rest, val = split_validation(train, 0.3, seed=0)
    assert (rest + val != train).nnz == 0  # a partition of the training entries
    assert rest.multiply(val).nnz == 0
    assert np.all(np.diff(rest.indptr) >= 1)
    assert val.nnz == pytest.approx(0.3 * train.nnz, rel=0.3)
    with pytest.raises(ValueError, match="share"):
        split_validation(train, 1.0, seed=0)


def test_grid_points():
    assert grid_points("ccl", "none") == grid_points("ccl", "defaults") == [{}]
    small = grid_points("ccl", "small")
    assert {"learning_rate": 3e-3, "margin": 0.8} in small and len(small) == 4
    assert len(grid_points("infonce", "full")) == 3 * 2 * 3
    with pytest.raises(ValueError, match="grid"):
        grid_points("ccl", "huge")


def test_run_on_a_lightgcn_folder(tmp_path):
    data = tmp_path / "tiny"
    _write_lightgcn(data, planted_data(seed=2, n_users=120, n_items=60, rank=3))
    out = tmp_path / "out"
    args = _args(
        out,
        "--data",
        str(data),
        "--losses",
        "infonce",
        "debiased_infonce",
        "ccl",
        "--validation-share",
        "0.2",
        "--epochs",
        "2",
        "--curve-users",
        "50",
        "--sweep",
    )
    assert run(args) == 0
    report = (out / "results.md").read_text()
    for loss in ("infonce", "debiased_infonce", "ccl"):
        assert f"| {loss} |" in report
    assert "debiased_infonce vs infonce" in report
    assert "ccl: negative_weight" in report and "infonce: temperature" in report
    saved = json.loads((out / "results.json").read_text())
    results = saved["results"]["tiny"]
    for r in results.values():
        assert 0.0 <= r["recall"][0] <= 1.0 and r["recall"][1] >= 0.0
        assert len(r["test_curve"]) == r["epochs"] <= 2
        assert len(r["tuning"]) == 4  # the small grid: 2 learning rates x 2 axis values
    assert len(saved["sweeps"]["tiny"]["ccl:negative_weight"]["val_recall"]) == 5
    assert (out / "learning_curves.png").stat().st_size > 0
    assert (out / "sweep.png").stat().st_size > 0


def test_defaults_grid_replays_the_plateau_schedule(tmp_path):
    data = tmp_path / "tiny"
    _write_lightgcn(data, planted_data(seed=3, n_users=150, n_items=60, rank=3))
    out = tmp_path / "out"
    args = _args(
        out,
        *("--data", str(data), "--losses", "infonce", "--grid", "defaults"),
        *("--epochs", "40", "--patience", "1", "--plateau-decays", "2"),
        *("--validation-share", "0.2", "--set", "learning_rate=0.05", "--set", "n_factors=32"),
        *("--set", "batch_size=512", "--set", "n_negatives=64"),
    )
    assert run(args) == 0
    (r,) = json.loads((out / "results.json").read_text())["results"]["tiny"].values()
    (trial,) = r["tuning"]
    # the final run replays the tuned run's schedule up to its chosen epoch count
    assert r["epochs"] == 1 + int(np.argmax(trial["curve"]))
    assert trial["milestones"] and all(m < r["epochs"] for m in trial["milestones"])
    assert r["params"]["learning_rate_milestones"] == (trial["milestones"] or None)
    assert len(r["test_curve"]) == r["epochs"]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        run(_args(tmp_path, "--epochs", "0"))
    with pytest.raises(ValueError, match="key=value"):
        run(_args(tmp_path, "--set", "learning_rate"))
    with pytest.raises(ValueError, match="plateau-decays"):
        run(_args(tmp_path, "--plateau-decays", "-1"))


def test_overrides_reach_the_model(tmp_path):
    out = tmp_path / "out"
    args = _args(out, "--losses", "bpr", "--grid", "none", "--epochs", "1", "--set", "l2=0.5")
    args.set.append("negative_sharing=pair")
    assert run(args) == 0
    params = json.loads((out / "results.json").read_text())["results"]
    (synthetic,) = params.values()
    assert synthetic["bpr"]["params"]["l2"] == 0.5
    assert synthetic["bpr"]["params"]["negative_sharing"] == "pair"


def test_linrec_reproduce_command(tmp_path, capsys):
    from linrec.cli import main

    out = tmp_path / "out"
    argv = ["reproduce", "--losses", "bpr", "--grid", "none", "--epochs", "1", "--n-jobs", "1"]
    code = main([*argv, "--out", str(out)])
    assert code == 0
    assert "| bpr |" in (out / "results.md").read_text()
    assert main(["reproduce", "--epochs", "0", "--out", str(out)]) == 1
    assert "--epochs must be >= 1" in capsys.readouterr().err


def test_paired_gain_matches_the_formulas(rng):
    a = rng.random(500)
    b = rng.random(500)
    gain, diff, half = paired_gain(a, b)
    assert gain == pytest.approx(a.mean() / b.mean() - 1, rel=1e-12)
    assert diff == pytest.approx((a - b).mean(), rel=1e-12)
    assert half == pytest.approx(1.96 * (a - b).std(ddof=1) / np.sqrt(500), rel=1e-12)
    # pairing: a shared per-user offset leaves the interval unchanged
    offset = 10 * rng.random(500)
    assert paired_gain(a + offset, b + offset)[2] == pytest.approx(half, rel=1e-9)


def test_paired_gain_rejects_unpaired_scores_and_zero_reference():
    with pytest.raises(ValueError, match="equal length"):
        paired_gain(np.ones(3), np.ones(4))
    assert np.isnan(paired_gain(np.ones(3), np.zeros(3))[0])

import json
import subprocess
import sys

import pytest

from linrec import __version__
from linrec._registry import MODELS, make_model
from linrec.cli import _parse_value, fit_and_evaluate, main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_parse_value():
    assert _parse_value("3") == 3
    assert _parse_value("0.5") == 0.5
    assert _parse_value("True") is True
    assert _parse_value("none") is None
    assert _parse_value("cholesky") == "cholesky"
    assert _parse_value("[1, 2]") == [1, 2]


def test_make_model_errors():
    with pytest.raises(ValueError, match="unknown model"):
        make_model("nope")
    with pytest.raises(ValueError, match="no parameter"):
        make_model("item_knn", {"bogus": 1})
    assert make_model("item-knn", {"n_neighbors": 5}).n_neighbors == 5


def test_demo_runs_every_registered_model(capsys):
    assert main(["demo", "--users", "600", "--items", "300"]) == 0
    out = capsys.readouterr().out
    for name in MODELS:
        assert f"| {name} |" in out
    assert "Recall@20" in out and "NDCG@20" in out


def test_rows_reach_the_caller_as_each_model_finishes(rng):
    from linrec.datasets import make_implicit, random_holdout_split

    X = make_implicit(n_users=200, n_items=80, random_state=0)
    X_train, X_test = random_holdout_split(X, test_fraction=0.2, random_state=0)
    models = {name: make_model(name) for name in ("most_popular", "item_knn")}
    seen = []

    def on_row(row):
        # called after that model's fit and before the next model's
        seen.append((row["model"], models["item_knn"].__dict__.get("similarity_") is not None))

    rows = fit_and_evaluate(models, X_train, X_test, ks=(10, 20), on_row=on_row)
    assert [r["model"] for r in rows] == ["most_popular", "item_knn"]
    assert seen == [("most_popular", False), ("item_knn", True)]
    assert all(0 <= r["Recall@10"] <= r["Recall@20"] <= 1 for r in rows)


def test_evaluate_interaction_file(tmp_path, capsys, rng):
    lines = ["user,item,weight"]
    for u in range(60):
        for i in rng.choice(40, size=8, replace=False):
            lines.append(f"u{u},item{i},1")
    path = tmp_path / "log.csv"
    path.write_text("\n".join(lines) + "\n")
    code = main(["evaluate", "--data", str(path), "--model", "most_popular", "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["model"] == "most_popular" and 0 <= rows[0]["Recall@20"] <= 1


def test_evaluate_bad_param_is_a_clean_error(tmp_path, capsys):
    path = tmp_path / "log.csv"
    path.write_text("1,2\n2,3\n3,1\n1,3\n")
    code = main(["evaluate", "--data", str(path), "--model", "item_knn", "--param", "k=3"])
    assert code == 1
    assert "no parameter" in capsys.readouterr().err


@pytest.mark.data
def test_evaluate_lightgcn_folder(shared_data, capsys):
    code = main(["evaluate", "--data", str(shared_data / "gowalla"), "--model", "most_popular"])
    assert code == 0
    out = capsys.readouterr().out
    assert "29,858 users x 40,981 items" in out


def test_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "linrec", "--version"], capture_output=True, text=True, check=True
    )
    assert __version__ in out.stdout

"""Search validation and search-file loading: every mistake is one line naming the file and the reason."""
from __future__ import annotations

from pathlib import Path

import pytest

from tunevision import Digits, Search, TunevisionError
from tunevision.search import load_search_file

GOOD = '''
from ray import tune
import tunevision
search = tunevision.Search(name="t", data=tunevision.Digits(), space={"lr": tune.loguniform(1e-4, 1e-2)}, trials=3)
'''


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.py"
    path.write_text(text)
    return path


def test_load_search_file_returns_the_search(tmp_path):
    search = load_search_file(write(tmp_path, GOOD))
    assert search.name == "t" and search.trials == 3 and search.metric == "val_accuracy"


def test_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "search = (\n")
    with pytest.raises(TunevisionError, match=rf"{path}:\d+: syntax error"):
        load_search_file(path)


def test_missing_search_variable_is_named(tmp_path):
    path = write(tmp_path, "x = 1\n")
    with pytest.raises(TunevisionError, match=rf"{path}: defines no `search`"):
        load_search_file(path)


def test_search_of_wrong_type_is_named(tmp_path):
    path = write(tmp_path, "search = {'name': 'x'}\n")
    with pytest.raises(TunevisionError, match="`search` is a dict"):
        load_search_file(path)


def test_unknown_search_option_lists_known_ones(tmp_path):
    path = write(tmp_path, GOOD.replace("trials=3", "trails=3"))
    with pytest.raises(TunevisionError, match=r"unknown option 'trails' \(known: name, data, space"):
        load_search_file(path)


def test_unknown_space_key_lists_known_ones(tmp_path):
    path = write(tmp_path, GOOD.replace('"lr"', '"learning_rate"'))
    with pytest.raises(TunevisionError, match=r"s.py: space\['learning_rate'\]: unknown key \(known: .*lr"):
        load_search_file(path)


def test_error_raised_by_user_code_names_file_and_type(tmp_path):
    path = write(tmp_path, "import tunevision\nraise ValueError('boom')\n")
    with pytest.raises(TunevisionError, match=rf"{path}: ValueError: boom"):
        load_search_file(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(TunevisionError, match="no such search file"):
        load_search_file(tmp_path / "nope.py")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"mode": "maximum"}, "mode 'maximum' must be 'min' or 'max'"),
        ({"trials": 0}, "trials must be a whole number >= 1"),
        ({"metric": "accuracy"}, "metric 'accuracy' is not reported"),
        ({"searcher": "hyperopt"}, r"searcher 'hyperopt' is unknown \(known: optuna, random, grid\)"),
        ({"scheduler": "pbt"}, "scheduler 'pbt' is unknown"),
        ({"name": "a b"}, "name 'a b' must be"),
        ({"patience": 0}, "patience must be None"),
        ({"metric": ("val_accuracy", "val_fnr"), "mode": "max"}, "mode 'max' must be 'min' or 'max', one per metric"),
        ({"metric": ("val_accuracy", "val_accuracy"), "mode": ("max", "max")}, "must be one metric name or two different"),
        ({"choose": "max val_accuracy if val_fnr < 0.1"}, r"choose 'max val_accuracy if val_fnr < 0.1': expected"),
        ({"choose": "min val_accuracy"}, "choose 'min val_accuracy': the search's mode for val_accuracy is 'max'"),
        ({"choose": "max val_accuracy where val_fnr <= 0.1"}, "the constraint must be on the search's other metric"),
        ({"metric": ("val_accuracy", "val_fnr"), "mode": ("max", "min"), "choose": "max val_f1.3"},
         r"choose 'max val_f1.3': val_f1.3 is not the search's metric"),
        ({"fnr_target": 1.5}, "fnr_target must be None or a number from 0 to below 1"),
        ({"ensemble": 0}, "ensemble must be a whole number >= 1"),
    ],
)
def test_search_rejects_bad_settings(changes, message):
    with pytest.raises(TunevisionError, match=message):
        Search(**{"name": "t", "data": Digits(), **changes})


def test_optuna_refuses_grid_search_and_names_the_alternatives():
    from ray import tune

    with pytest.raises(TunevisionError, match="grid_search needs searcher='grid' or 'random'"):
        Search(name="t", data=Digits(), space={"dropout": tune.grid_search([0.4, 0.5])})
    assert Search(name="t", data=Digits(), space={"dropout": tune.grid_search([0.4, 0.5])}, searcher="grid")


def test_two_metrics_take_one_mode_each_and_choose_defaults_to_the_first_metrics_best():
    s = Search(name="t", data=Digits(), metric=["val_accuracy", "val_fnr"], mode=["max", "min"])
    assert s.metrics == ("val_accuracy", "val_fnr") and s.modes == ("max", "min") and str(s.rule) == "max val_accuracy"
    s = s.replace(choose="min val_fnr where val_accuracy >= 0.9")
    assert s.rule.rank_metric == "val_objective" and s.rule.mode == "min"


def test_per_class_metric_is_accepted_as_search_metric():
    assert Search(name="t", data=Digits(), metric="val_recall.3").metric == "val_recall.3"


def test_candidates_enumerate_choices_grids_and_constants():
    from ray import tune

    s = Search(name="t", data=Digits(), searcher="grid",
               space={"backbone": tune.choice(["cnn", "dense"]), "weights": None, "dropout": tune.grid_search([0.1, 0.2])})
    assert s.candidates("backbone") == ["cnn", "dense"]
    assert s.candidates("weights") == [None]
    assert s.candidates("dropout") == [0.1, 0.2]
    assert s.candidates("lr") == [1e-3]  # the default


def test_importing_tunevision_does_not_import_ray_or_mlflow():
    import subprocess
    import sys

    code = "import sys, tunevision; print(any(m in sys.modules for m in ('ray', 'mlflow')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

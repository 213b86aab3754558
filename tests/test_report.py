"""`tunevision report`: a search's trials read back from a real MLflow store, ranked, plotted, noted, linked.

The store is written by the real recorder (SearchRun + TrialRecorder, the Ray Tune callback) driven with Ray's
own Trial objects, as a search drives it; tests/test_mlflow_ui.py does the same through a whole search.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from ray.tune.experiment import Trial

from tunevision import report
from tunevision.cli import main
from tunevision.tracking import SearchRun, TrialRecorder

CLASSES = ["cat", "dog"]


def figures(accuracy: float, n: int = 20) -> dict[str, float]:
    right = round(accuracy * n)
    return {"val_accuracy": accuracy, "val_loss": 1 - accuracy, "val_cm.cat.cat": right // 2, "val_cm.cat.dog": n // 2 - right // 2,
            "val_cm.dog.cat": n // 2 - (right - right // 2), "val_cm.dog.dog": right - right // 2}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, str, dict[str, str]]:
    """A search of 4 trials, recorded as a search records it; returns (tracking URI, search run id, trial ids by role)."""
    folder = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the store's artifacts (./mlruns) stay in it
        yield _record(folder)


def _record(folder: Path) -> tuple[str, str, dict[str, str]]:
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    search_file = folder / "pets.py"
    search_file.write_text("# the search file\n")
    search_run = SearchRun(uri, "pets")
    search_run.start(search_file, {})
    recorder = TrialRecorder(search_run, CLASSES, "val_accuracy", "max")
    recorder.setup()
    space = [(1e-3, "adam", 0.1), (4.2e-4, "adamw", 0.3), (5e-3, "sgd", 0.2), (2e-3, "adam", 0.0)]
    trials = [Trial("run_trial", config={"lr": lr, "optimizer": opt, "dropout": d, "image_size": 24},
                    evaluated_params={"optimizer": opt, "lr": lr, "dropout": d}, stub=True) for lr, opt, d in space]
    curves = {0: [0.6, 0.9, 0.7], 1: [0.85, 0.85], 2: [], 3: [0.5, 0.55]}  # trial 0 peaks before its last epoch
    for i, t in enumerate(trials):
        recorder.on_trial_start(0, trials, t)
        for epoch, accuracy in enumerate(curves[i], 1):
            recorder.on_trial_result(0, trials, t, {**figures(accuracy), "epoch": epoch, "training_iteration": epoch})
            t.update_last_result({"epoch": epoch})
        if curves[i]:
            recorder.on_trial_complete(0, trials, t)
        else:
            recorder.on_trial_error(0, trials, t)
    test = {"test_accuracy": 0.8, "test_cm.cat.cat": 9, "test_cm.cat.dog": 1, "test_cm.dog.cat": 3, "test_cm.dog.dog": 7}
    search_run.log_best(trials[0].config, trials[0].trial_id, test, CLASSES)
    search_run.finish()
    return uri, search_run.run_id, {"peaked": trials[0].trial_id, "steady": trials[1].trial_id, "failed": trials[2].trial_id}


def test_trial_runs_are_named_by_their_sampled_values_and_log_their_best_epoch(store):
    uri, run_id, _ = store
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_run(run_id).info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
    names = sorted(r.info.run_name for r in runs)
    assert names == ["t01 adam lr=1.0e-3 dropout=0.1", "t02 adamw lr=4.2e-4 dropout=0.3",
                     "t03 sgd lr=5.0e-3 dropout=0.2", "t04 adam lr=2.0e-3 dropout=0"]
    peaked = next(r for r in runs if r.info.run_name.startswith("t01"))
    assert peaked.data.metrics["best_val_accuracy"] == 0.9 and peaked.data.metrics["best_epoch"] == 2
    assert peaked.data.metrics["val_accuracy"] == 0.7  # the last epoch: what the view must not sort by
    assert json.loads(peaked.data.tags["tunevision.sampled"]) == ["optimizer", "lr", "dropout"]
    assert client.get_run(run_id).data.tags["tunevision.metric"] == "val_accuracy"


def test_trials_rank_by_their_best_epoch_and_failed_ones_come_last(store):
    uri, run_id, ids = store
    client = MlflowClient(uri)
    found = report.collect(client, client.get_run(run_id))
    assert [t.trial_id for t in found.trials[:2]] == [ids["peaked"], ids["steady"]]
    assert [(t.best, t.best_epoch, t.epochs) for t in found.trials] == [(0.9, 2, 3), (0.85, 1, 2), (0.55, 2, 2), (None, None, 0)]
    assert found.trials[-1].status == "FAILED" and found.chosen == ids["peaked"]
    assert found.sampled == ["optimizer", "lr", "dropout"] and found.sort_metric == "best_val_accuracy"
    assert set(found.importances) == {"optimizer", "lr", "dropout"}
    assert sum(found.importances.values()) == pytest.approx(1.0)
    text = report.table(found).splitlines()
    assert text[1].split()[:7] == ["1", "t01", "adam", "lr=1.0e-3", "dropout=0.1", "0.9000", "2/3"]
    assert text[1].endswith("<- chosen") and "FAILED" in text[4]


def test_importances_need_two_trials_with_the_metric(store):
    uri, run_id, _ = store
    client = MlflowClient(uri)
    found = report.collect(client, client.get_run(run_id))
    import dataclasses

    one = dataclasses.replace(found, trials=found.trials[:1])
    assert report.param_importances(one) == (None, "1 trial(s) reported val_accuracy; importances need 2 or more")


def test_publish_logs_the_report_notes_the_leaderboard_and_saves_the_ui_view(store):
    uri, run_id, ids = store
    client = MlflowClient(uri)
    published = report.publish(client, uri, client.get_run(run_id))
    logged = {Path(f.path).name for f in client.list_artifacts(run_id, "report")}
    assert logged == {"trials.csv", "param_importances.json", "param_importances.png", "parallel_coordinates.png",
                      "learning_curves.png", "confusion_matrix.png", "confusion_matrix.json"}
    cm = json.loads(Path(client.download_artifacts(run_id, "report/confusion_matrix.json")).read_text())
    assert cm["matrix"] == [[9, 1], [3, 7]] and cm["split"] == "test split"  # the chosen trial's, tested once

    note = client.get_run(run_id).data.tags["mlflow.note.content"]
    assert "| 1 | **t01 adam lr=1.0e-3 dropout=0.1** (chosen) | 0.9000 | 2/3 | FINISHED |" in note
    assert "| 4 | t03 sgd lr=5.0e-3 dropout=0.2 | - | -/0 | FAILED |" in note
    assert "tested once: test_accuracy 0.8000" in note and published.link in note

    experiment_id = client.get_run(run_id).info.experiment_id
    assert published.link == (f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
                               f"&viewStateShareKey={run_id}")
    view = json.loads(client.get_experiment(experiment_id).tags[f"mlflow.sharedViewState.{run_id}"])
    state = json.loads(view["state"])
    assert state["searchFilter"] == f"tags.mlflow.parentRunId = '{run_id}'"
    assert state["orderByKey"] == "metrics.`best_val_accuracy`" and state["orderByAsc"] is False
    assert {"metrics.`val_accuracy`", "params.`lr`", "params.`optimizer`"} <= set(state["selectedColumns"])


def test_cli_report_prints_the_ranked_table_and_writes_the_csv(store, tmp_path, capsys):
    uri, run_id, ids = store
    assert main(["report", "pets", "--tracking-uri", uri, "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert f"search run {run_id}" in out and "<- chosen" in out
    assert "confusion matrix of t01 adam lr=1.0e-3 dropout=0.1 (test split):" in out
    assert "start the UI first: mlflow ui --backend-store-uri sqlite:///" in out
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [r["trial_id"] for r in rows[:2]] == [ids["peaked"], ids["steady"]]
    assert rows[0]["best_val_accuracy"] == "0.9" and rows[0]["chosen"] == "true" and rows[0]["lr"] == "0.001"
    assert rows[-1]["status"] == "FAILED" and rows[-1]["best_val_accuracy"] == ""


def test_cli_report_names_an_unknown_experiment_or_a_run_that_is_no_search(store, capsys):
    uri, run_id, ids = store
    assert main(["report", "petz", "--tracking-uri", uri]) == 2
    assert capsys.readouterr().err.strip() == "tunevision: error: no experiment 'petz' in the MLflow store (there: pets)"
    client = MlflowClient(uri)
    trial_run = client.search_runs([client.get_run(run_id).info.experiment_id], f"tags.`tunevision.trial_id` = '{ids['steady']}'")[0]
    assert main(["report", "pets", "--tracking-uri", uri, "--run", trial_run.info.run_id]) == 2
    assert "not a search run of experiment 'pets'" in capsys.readouterr().err


def test_ui_address_is_the_tracking_server_or_mlflow_uis_default():
    assert report.ui_address("http://10.0.0.5:5000/") == "http://10.0.0.5:5000"
    assert report.ui_address("sqlite:///mlflow.db") == "http://127.0.0.1:5000"
    assert report.ui_hint("http://10.0.0.5:5000") == ""
    assert report.ui_hint("sqlite:///mlflow.db") == f"start the UI first: mlflow ui --backend-store-uri sqlite:///{Path('mlflow.db').resolve()}"


def test_a_description_edited_in_the_ui_is_not_overwritten(store):
    uri, run_id, _ = store
    client = MlflowClient(uri)
    report.publish(client, uri, client.get_run(run_id))
    client.set_tag(run_id, "mlflow.note.content", "my own notes")  # what the UI's description editor writes
    report.publish(client, uri, client.get_run(run_id))
    assert client.get_run(run_id).data.tags["mlflow.note.content"] == "my own notes"


def test_facets_link_carries_filter_and_sort_as_the_ui_reads_them(store):
    uri, run_id, _ = store
    client = MlflowClient(uri)
    found = report.collect(client, client.get_run(run_id))
    link = report.facets_link("http://10.0.0.5:5000", found)
    assert link == (f"http://10.0.0.5:5000/#/experiments/{found.experiment_id}/runs?workflowType=machine_learning"
                    f"&searchFilter=tags.mlflow.parentRunId%20%3D%20%27{run_id}%27"
                    "&orderByKey=metrics.%60best_val_accuracy%60&orderByAsc=false")


def test_a_dict_drawn_by_choice_reads_as_one_param_and_importances_are_computed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "aug.py").write_text("# the search file\n")
    search_run = SearchRun(uri, "aug")
    search_run.start(tmp_path / "aug.py", {})
    recorder = TrialRecorder(search_run, CLASSES, "val_accuracy", "max")
    recorder.setup()
    drawn = [(None, 1e-3, 0.6), ({"hflip": True, "zoom": 0.1}, 2e-3, 0.8), ({"hflip": True, "zoom": 0.2}, 3e-3, 0.7)]
    trials = [Trial("run_trial", config={"augment": augment, "lr": lr}, evaluated_params={"augment": augment, "lr": lr},
                    stub=True) for augment, lr, _ in drawn]
    for t, (_, _, accuracy) in zip(trials, drawn):
        recorder.on_trial_start(0, trials, t)
        recorder.on_trial_result(0, trials, t, {**figures(accuracy), "epoch": 1, "training_iteration": 1})
        recorder.on_trial_complete(0, trials, t)
    search_run.finish()
    client = MlflowClient(uri)
    found = report.collect(client, client.get_run(search_run.run_id))
    assert [t.params["augment"] for t in found.trials] == ["{hflip=True, zoom=0.1}", "{hflip=True, zoom=0.2}", "None"]
    assert set(found.importances) == {"augment", "lr"}

"""A driver killed with SIGKILL mid-search: `--resume` continues the same search, nothing lost or repeated."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

SEARCH = '''
from ray import tune
import tunevision
search = tunevision.Search(
    name="resumable",
    data=tunevision.ImageFolder("{root}"),
    # staged size and augmentation, as soda_bottles and retinopathy use: the checkpoint must hold them as plain data
    space={{"backbone": "cnn", "image_size": tunevision.progressive({{0: 32, 2: 48}}), "batch_size": 8,
           "augment": tunevision.progressive({{0: None, 2: {{"hflip": True}}}}), "lr": tune.loguniform(1e-3, 1e-2)}},
    trials=4, max_epochs=5, scheduler="fifo", max_concurrent=1, seed=3,
)
'''


def tunevision(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", TUNEVISION_OFFLINE="1")
    env.pop("RAY_ADDRESS", None)
    command = [str(Path(sys.executable).with_name("tunevision")), *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)


def trial_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("resumable")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "tags.`tunevision.role` = 'trial'")


def steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "val_accuracy"))


@pytest.fixture
def search_file(tmp_path: Path, pattern_folder: Path) -> Path:
    path = tmp_path / "resumable.py"
    path.write_text(SEARCH.format(root=pattern_folder))
    return path


@pytest.mark.slow
def test_resume_after_the_driver_is_killed_continues_the_same_search_without_rerunning_or_duplicating(
    tmp_path: Path, search_file: Path, cache_dir
):
    import optuna
    import ray.cloudpickle as pickle

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    driver = tunevision("search", str(search_file), "--tracking-uri", uri, "--storage", str(tmp_path / "ray"), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and driver.poll() is None:
            runs = trial_runs(client)
            finished = [r for r in runs if r.info.status == "FINISHED"]
            running = [r for r in runs if r.info.status == "RUNNING" and len(steps(client, r.info.run_id)) >= 2]
            if finished and running:
                break
            time.sleep(0.2)
        assert driver.poll() is None, "the search ended before the kill: " + driver.stderr.read()[-2000:]
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone, as an OOM killer or a lost login would
        driver.wait(30)
    finally:
        try:  # what the driver started (its in-process Ray) goes down with it, as on a lost machine
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # Ray deletes a superseded checkpoint at once but uploads its snapshot later: a kill in between leaves the
    # snapshot naming a deleted checkpoint. Make that race happen every time: the cut-off trial's checkpoints
    # move to names the snapshot has never heard of, in the same order.
    tune_path = Path(client.search_runs([client.get_experiment_by_name("resumable").experiment_id],
                                        "tags.`tunevision.role` = 'search'")[0].data.tags["tunevision.tune_path"])
    cut_off = [f for f in tune_path.glob("run_trial_*") if not (f / "checkpoint_000004").exists()]
    for checkpoint in sorted(cut_off[0].glob("checkpoint_*")):
        checkpoint.rename(checkpoint.with_name(f"checkpoint_0000{90 + int(checkpoint.name[-2:])}"))
    before = {r.info.run_id: r for r in trial_runs(client)}
    finished_before = {i: r for i, r in before.items() if r.info.status == "FINISHED"}
    assert finished_before and len(finished_before) < 4
    history_before = {i: steps(client, i) for i in before}

    resumed = tunevision("search", str(search_file), "--resume", "--tracking-uri", uri, cwd=tmp_path)
    out, err = resumed.communicate(timeout=400)

    assert resumed.returncode == 0, err[-3000:]
    assert re.search(r"the snapshot's checkpoint_\d+ had been deleted; continuing from checkpoint_00009\d \(epoch \d\)", out), out
    experiment = client.get_experiment_by_name("resumable")
    parents = client.search_runs([experiment.experiment_id], "tags.`tunevision.role` = 'search'")
    assert len(parents) == 1  # the same search run, continued
    parent = parents[0]
    assert f"resuming search run {parent.info.run_id}" in out
    assert parent.info.status == "FINISHED" and parent.data.tags["tunevision.resumes"] == "1"
    assert "test_accuracy" in parent.data.metrics and parent.data.metrics["trials_finished"] == 4
    after = trial_runs(client)
    assert len(after) == 4 and len({r.data.tags["tunevision.trial_id"] for r in after}) == 4  # no duplicate runs
    assert set(before) <= {r.info.run_id for r in after}  # trials cut off by the kill kept their runs
    for run in after:
        assert run.info.status == "FINISHED"
        assert steps(client, run.info.run_id) == [1, 2, 3, 4, 5]  # no gap, no repeated step
        if run.info.run_id in finished_before:  # finished trials were not run again
            assert run.info.end_time == finished_before[run.info.run_id].info.end_time
            assert steps(client, run.info.run_id) == history_before[run.info.run_id]
    # Disk: Ray kept at most the best and the latest checkpoint of every trial.
    trial_folders = [f for f in tune_path.iterdir() if f.is_dir() and f.name.startswith("run_trial")]
    assert len(trial_folders) == 4
    assert all(1 <= len(list(f.glob("checkpoint_*"))) <= 2 for f in trial_folders)
    # Optuna's study carried the trials from before the kill into the suggestions after it.
    known = parent.data.metrics["resume_optuna_history"]
    assert known >= len(finished_before)
    assert f"the searcher keeps {int(known)} finished trial(s) from before" in out
    state_files = sorted(Path(parent.data.tags["tunevision.tune_path"]).glob("searcher-state-*.pkl"))  # newest by name, as Ray reads it
    study = pickle.loads(state_files[-1].read_bytes())["_ot_study"]
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 4
    lrs = sorted(round(t.params["lr"], 12) for t in complete)
    assert lrs == sorted(round(float(r.data.params["lr"]), 12) for r in after)


@pytest.mark.slow
def test_resume_of_a_search_that_does_not_exist_says_so(tmp_path: Path, search_file: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    started = time.monotonic()
    process = tunevision("search", str(search_file), "--resume", "--name", "nosuch", "--tracking-uri", uri, cwd=tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert err.strip().splitlines()[-1] == (
        f"tunevision: error: {search_file}: --resume: nothing to resume in experiment 'nosuch' in {uri}: "
        "there is no such search; run without --resume to start one"
    )
    assert time.monotonic() - started < 60


def test_a_search_name_taken_by_another_search_file_is_refused_unless_resume_or_a_new_name(
    tmp_path: Path, search_file: Path, mlflow_uri: str
):
    from tunevision.errors import TunevisionError
    from tunevision.search import load_search_file
    from tunevision.tracking import SearchRun
    from tunevision.resume import SEARCH_FILE_SHA, earlier_search, sha256
    from tunevision.tuner import RunOptions

    search = load_search_file(search_file)
    first = SearchRun(mlflow_uri, search.name)
    first.start(search_file, {SEARCH_FILE_SHA: sha256(search_file), "tunevision.search_file": str(search_file)})
    first.finish("FAILED")  # a search that died: --resume may continue it
    edited = tmp_path / "edited.py"
    edited.write_text(search_file.read_text().replace("max_epochs=5", "max_epochs=6"))
    again = SearchRun(mlflow_uri, search.name)

    assert earlier_search(again, search, RunOptions(search_file), sha256(search_file)) is None  # same file: fine
    with pytest.raises(TunevisionError) as refused:
        earlier_search(again, search, RunOptions(edited), sha256(edited))
    assert str(refused.value) == (
        f"search name 'resumable' is taken by a different search file ({search_file}, run {first.run_id}) "
        f"in {mlflow_uri}: pass --name NEW_NAME to start a new search, or --resume to continue that one"
    )
    with pytest.raises(TunevisionError, match=r"--resume: .*edited.py is not the file search run .* ran"):
        earlier_search(again, search, RunOptions(edited, resume=True), sha256(edited))
    renamed = search.replace(name="resumable-v2")
    assert earlier_search(SearchRun(mlflow_uri, renamed.name), renamed, RunOptions(edited), sha256(edited)) is None


def _moved(what: str) -> str:
    import ray

    return (f"Ray {ray.__version__} moved a private name tunevision/resume.py reads: {what}. Update resume.py "
            f"(repair_checkpoints, optuna_history) before widening the ray pin in pyproject.toml")


@pytest.mark.slow
def test_ray_private_state_that_resume_reads_is_where_resume_py_looks(tmp_path: Path, ray_session):
    """A real tiny Tune run, built as tunevision builds it; its files hold every private name resume.py relies on."""
    import json
    import tempfile

    import ray
    import ray.cloudpickle as pickle
    from packaging.requirements import Requirement
    from ray import tune
    from ray.tune import Callback, Checkpoint

    from tunevision import Digits, Search
    from tunevision.resume import optuna_history
    from tunevision.tuner import _new_tuner

    pin = next(Requirement(line.strip().strip('",')) for line in (Path(__file__).parents[1] / "pyproject.toml").read_text().splitlines()
               if line.strip().startswith('"ray['))
    assert pin.specifier and ray.__version__ in pin.specifier, f"Ray {ray.__version__} is not the tested {pin}"

    def trainable(config):
        for epoch in range(2):
            with tempfile.TemporaryDirectory() as folder:
                Path(folder, "weights").write_text(str(epoch))
                tune.report({"val_accuracy": config["lr"] * epoch}, checkpoint=Checkpoint.from_directory(folder))

    search = Search(name="pins", data=Digits(), space={"lr": tune.uniform(0.1, 1.0)}, trials=2,
                               max_epochs=2, scheduler="fifo")
    tune_path = tmp_path / "pins"
    _new_tuner(search, tune.with_resources(trainable, {"cpu": 1}), Callback(), str(tune_path)).fit()

    snapshots = sorted(tune_path.glob("experiment_state-*.json"))
    assert snapshots, _moved(f"no experiment_state-*.json in the experiment folder ({sorted(p.name for p in tune_path.iterdir())})")
    state = json.loads(snapshots[-1].read_text())
    assert "trial_data" in state, _moved(f"experiment_state JSON has no 'trial_data' (keys: {sorted(state)})")
    assert len(state["trial_data"]) == 2
    for entry in state["trial_data"]:
        assert isinstance(entry, list) and len(entry) == 2, _moved("trial_data entries are not [trial state, metadata] pairs")
        trial, meta = json.loads(entry[0]), json.loads(entry[1])
        assert "trial_id" in trial, _moved(f"a trial state has no 'trial_id' (keys: {sorted(trial)})")
        manager = meta.get("checkpoint_manager")
        assert isinstance(manager, dict) and manager.get("_type") == "CLOUDPICKLE_FALLBACK" and "value" in manager, \
            _moved(f"trial metadata 'checkpoint_manager' is not a CLOUDPICKLE_FALLBACK hex value ({str(manager)[:120]})")
        manager = pickle.loads(bytes.fromhex(manager["value"]))
        for name in ("_checkpoint_results", "_latest_checkpoint_result"):
            assert hasattr(manager, name), _moved(f"{type(manager).__name__} has no {name}")
        named = [r.checkpoint.path for r in [*manager._checkpoint_results, manager._latest_checkpoint_result] if r]
        assert named and all(Path(p).is_dir() for p in named), _moved("checkpoint results do not name checkpoint folders")

    assert list(tune_path.glob("searcher-state-*.pkl")), _moved("no searcher-state-*.pkl in the experiment folder")
    assert optuna_history(str(tune_path)) == 2, _moved("the searcher state holds no '_ot_study' with the 2 finished trials")

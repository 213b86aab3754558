"""A driver killed with SIGKILL mid-search: `--resume` continues the same search, nothing lost or repeated."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import shapes
from fakes import write_pattern_images
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


def tunevision(*args: str, cwd: Path, env_extra: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", TUNEVISION_OFFLINE="1", **(env_extra or {}))
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


KILLABLE = '''
import os
import signal

from ray import tune
import tunevision

# A test's first driver SIGKILLs its own process group (itself and its in-process Ray) right after the
# TrialRecorder callback named in KILL_DRIVER_AT ("on_trial_start:2" = after the 2nd trial's run is created).
if os.environ.get("KILL_DRIVER_AT"):
    from tunevision.tracking import TrialRecorder

    hook, count = os.environ["KILL_DRIVER_AT"].split(":")
    original, calls = getattr(TrialRecorder, hook), []

    def killing(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls.append(hook)
        if len(calls) == int(count):
            os.killpg(0, signal.SIGKILL)

    setattr(TrialRecorder, hook, killing)

search = tunevision.Search(
    name="killed",
    data=tunevision.ImageFolder("{root}"),
    space={{"backbone": "cnn", "cnn": {{"channels": [8]}}, "image_size": 16, "batch_size": 16,
            "lr": tune.loguniform(1e-3, 1e-2)}},
    trials=3, max_epochs=2, scheduler="fifo", max_concurrent=1, seed=5,
)
'''


def snapshot_trial_ids(tune_path: Path) -> set[str]:
    """The trial ids of Ray's newest experiment snapshot."""
    newest = sorted(tune_path.glob("experiment_state-*.json"))[-1]
    return {json.loads(state)["trial_id"] for state, _ in json.loads(newest.read_text())["trial_data"]}


# Where each driver in turn is killed: as the second trial starts (its run just created, a trial Ray has not
# snapshotted yet), right after the next driver logs its first epoch, and as the third driver closes a run FINISHED.
KILLS = ["on_trial_start:2", "on_trial_result:1", "on_trial_complete:1"]


@pytest.mark.slow
def test_resume_after_kills_anywhere_leaves_one_run_per_ray_trial_and_none_running(
    tmp_path: Path, pattern_folder: Path, mlflow_uri: str, ray_session, cache_dir, capsys
):
    from tunevision.cli import main
    from tunevision.tracking import LOST, NOT_RESUMED

    search_file = tmp_path / "killed.py"
    search_file.write_text(KILLABLE.format(root=pattern_folder))
    client = MlflowClient(mlflow_uri)
    lost, statuses = set(), {}
    for turn, kill_at in enumerate(KILLS):
        # Ray snapshots the experiment when a trial saves a checkpoint and every 10 s or more: an hour here, so
        # that a trial started since the last checkpoint is never in the snapshot (a slow start does the same).
        driver = tunevision("search", str(search_file), "--tracking-uri", mlflow_uri, "--storage", str(tmp_path / "ray"),
                            *(["--resume"] if turn else []), cwd=tmp_path,
                            env_extra={"KILL_DRIVER_AT": kill_at, "TUNE_GLOBAL_CHECKPOINT_S": "3600"})
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == -signal.SIGKILL, (kill_at, err[-3000:])
        experiment = client.get_experiment_by_name("killed").experiment_id
        parent = client.search_runs([experiment], "tags.`tunevision.role` = 'search'")[0]
        known = snapshot_trial_ids(Path(parent.data.tags["tunevision.tune_path"]))
        runs = client.search_runs([experiment], "tags.`tunevision.role` = 'trial'")
        new_lost = {r.info.run_id for r in runs if r.data.tags["tunevision.trial_id"] not in known} - lost
        if turn == 0:
            assert len(new_lost) == 1  # the run of the trial that had just started
        lost |= new_lost
        statuses |= {r.info.run_id: r.info.status for r in runs if r.info.run_id in new_lost}

    assert main(["search", str(search_file), "--resume", "--tracking-uri", mlflow_uri]) == 0
    assert f"resuming search run {parent.info.run_id}" in capsys.readouterr().out

    runs = client.search_runs([experiment], "tags.`tunevision.role` = 'trial'")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    kept = [r for r in runs if NOT_RESUMED not in r.data.tags]
    assert len(kept) == 3 and len({r.data.tags["tunevision.trial_id"] for r in kept}) == 3  # one run per trial Ray ran
    for run in kept:
        assert run.info.status == "FINISHED" and steps(client, run.info.run_id) == [1, 2]  # no gap, no epoch twice
    closed = {r.info.run_id: r for r in runs if NOT_RESUMED in r.data.tags}
    assert set(closed) == lost  # every run of a trial that no snapshot held is closed, with its reason
    for run in closed.values():
        assert run.data.tags[NOT_RESUMED] == LOST
        if statuses[run.info.run_id] == "RUNNING":
            assert run.info.status == "KILLED" and run.data.tags["tunevision.error"] == LOST
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["tunevision.resumes"] == str(len(KILLS))
    assert parent.data.metrics["trials_finished"] == 3


def started_search(search_file: Path, uri: str, tune_path: Path, **changes) -> str:
    """Record a search run as `tunevision search` starts one (still RUNNING); return its id."""
    from tunevision.resume import DRIVER, SEARCH_FILE_SHA, SETTINGS, TUNE_PATH, driver_tag, settings, sha256
    from tunevision.search import load_search_file
    from tunevision.tracking import SearchRun

    search = load_search_file(search_file).replace(**changes)
    run = SearchRun(uri, search.name)
    run.start(search_file, {SEARCH_FILE_SHA: sha256(search_file), "tunevision.search_file": str(search_file),
                            "tunevision.data": search.data.describe(), DRIVER: driver_tag()})
    run.set_tags({TUNE_PATH: str(tune_path)})
    run.log_text(json.dumps(settings(search)), SETTINGS)
    return run.run_id


def test_resume_is_refused_while_the_earlier_driver_still_runs_and_allowed_once_it_died(
    tmp_path: Path, search_file: Path, mlflow_uri: str, capsys
):
    from tunevision.cli import main
    from tunevision.resume import LOCK_FILE, DriverLock

    tune_path = tmp_path / "ray" / "resumable-1"
    run_id = started_search(search_file, mlflow_uri, tune_path)
    holder = subprocess.Popen(  # the earlier driver: another process holding the search's lock
        [sys.executable, "-c", f"from tunevision.resume import DriverLock; lock = DriverLock.claim({str(tune_path)!r}, 'x'); "
                               "print('held', flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        assert holder.stdout.readline() == "held\n"
        assert main(["search", str(search_file), "--resume", "--tracking-uri", mlflow_uri]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert re.fullmatch(
            rf"tunevision: error: {re.escape(str(search_file))}: --resume: search run {run_id} is still running \(host {re.escape(socket.gethostname())}, "
            rf"pid {holder.pid}, started [\d: -]+, holding {re.escape(str(tune_path / LOCK_FILE))}\): "
            r"stop that driver or let it finish before resuming", last), last
    finally:
        holder.kill()
        holder.wait()
    DriverLock.claim(str(tune_path), run_id).release()  # the kernel dropped the dead driver's lock


def test_resume_with_other_data_or_set_is_refused_naming_what_differs(
    tmp_path: Path, search_file: Path, pattern_folder: Path, mlflow_uri: str, capsys
):
    from tunevision.cli import main

    run_id = started_search(search_file, mlflow_uri, tmp_path / "ray" / "resumable-1")
    other = write_pattern_images(tmp_path / "other", per_class=3)

    assert main(["search", str(search_file), "--resume", "--tracking-uri", mlflow_uri, "--data", str(other),
                 "--set", "image_size=32", "--max-epochs", "2"]) == 2

    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"tunevision: error: {search_file}: --resume: search run {run_id} ran with other settings: "
        f"data ImageFolder('{pattern_folder}', split=(0.8, 0.1, 0.1), channels=3) -> "
        f"ImageFolder('{other}', split=(0.8, 0.1, 0.1), channels=3) (--data); max_epochs 5 -> 2 (--max-epochs); "
        """space['image_size'] {"type": "Progressive", "stages": [[0, 32], [2, 48]]} -> 32 (--set); """
        "resume with the flags it ran with, or start a new search with --name NEW_NAME"
    )
    assert MlflowClient(mlflow_uri).get_run(run_id).data.tags.get("tunevision.resumes") is None  # nothing touched


def test_runs_of_trials_a_restored_experiment_does_not_know_are_closed_with_their_reason(mlflow_uri: str):
    import pickle
    from types import SimpleNamespace

    from tunevision.tracking import LOST, NOT_RESUMED, SearchRun, TrialRecorder

    search_run = SearchRun(mlflow_uri, "lost")
    search_run.start(Path(__file__), {})
    recorder = TrialRecorder(search_run, ["a", "b"], "val_accuracy", "max")
    trials = {i: SimpleNamespace(trial_id=i, config={"lr": 0.1}, evaluated_params={"lr": 0.1}) for i in ("t1", "t2", "t3", "t4")}
    runs = {i: recorder.run_id(trial) for i, trial in trials.items()}
    client = search_run.client
    client.set_terminated(runs["t1"], "FINISHED")
    client.set_terminated(runs["t4"], "FINISHED")  # finished, but the driver died before Ray snapshotted it

    restored = pickle.loads(pickle.dumps(recorder))  # as Ray restores the callback with the experiment
    restored.on_step_begin(0, [trials["t1"], trials["t2"]])  # the trials Ray's snapshot held
    restored.on_step_begin(1, [trials["t1"], trials["t2"]])  # once per driver: the runs are not searched again

    status = {i: client.get_run(r) for i, r in runs.items()}
    assert [status[i].info.status for i in ("t1", "t2", "t3", "t4")] == ["FINISHED", "RUNNING", "KILLED", "FINISHED"]
    assert status["t3"].data.tags["tunevision.error"] == LOST and status["t3"].data.tags[NOT_RESUMED] == LOST
    assert status["t4"].data.tags[NOT_RESUMED] == LOST and "tunevision.error" not in status["t4"].data.tags
    assert NOT_RESUMED not in status["t2"].data.tags
    assert restored.run_id(trials["t2"]) == runs["t2"]  # a trial Ray restores keeps its run
    assert restored.run_id(trials["t3"]) != runs["t3"]  # an id Ray hands out again gets a new run, never the lost one


def test_epochs_logged_after_ray_s_last_snapshot_are_not_logged_again_when_the_restored_trial_repeats_them(mlflow_uri: str):
    import pickle
    from types import SimpleNamespace

    from tunevision.tracking import SearchRun, TrialRecorder

    search_run = SearchRun(mlflow_uri, "late")
    search_run.start(Path(__file__), {})
    recorder = TrialRecorder(search_run, ["a", "b"], "val_accuracy", "max")
    trial = SimpleNamespace(trial_id="t1", config={"lr": 0.1}, evaluated_params={"lr": 0.1})

    def report(to: TrialRecorder, epoch: int, accuracy: float) -> None:
        to.on_trial_result(0, [trial], trial, {"epoch": epoch, "val_accuracy": accuracy})

    for epoch in (1, 2):
        report(recorder, epoch, 0.5)
    snapshot = pickle.dumps(recorder)  # Ray's last snapshot of the experiment, this callback included
    report(recorder, 3, 0.6)  # logged by the driver, then it died before the next snapshot

    restored = pickle.loads(snapshot)
    restored.on_step_begin(0, [trial])
    for epoch in (3, 4):  # the trial continues from the snapshot's checkpoint (epoch 2)
        report(restored, epoch, 0.7)

    history = search_run.client.get_metric_history(recorder.runs["t1"], "val_accuracy")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.5), (2, 0.5), (3, 0.6), (4, 0.7)]

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


SHAPE_EPOCHS = 5  # each trial is cut off after epoch 3 (shapes.py holds it there), then continues to 5


@pytest.mark.slow
def test_resume_after_the_driver_is_killed_continues_every_shape_s_trial_from_its_checkpoint(tmp_path: Path, cache_dir):
    """Every study shape (tests/shapes.py) mid-training when the driver dies: each continues after --resume."""
    root = write_pattern_images(tmp_path / "images", per_class=60, size=24)
    search_file = shapes.write_search(tmp_path / "shapes.py", "shapes", root, SHAPE_EPOCHS)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    # Each trial is held as it reports epoch 3, mid-training; once all are, the driver kills itself and its Ray.
    driver = tunevision("search", str(search_file), "--tracking-uri", uri, "--storage", str(tmp_path / "ray"), cwd=tmp_path,
                        env_extra={shapes.FAULT: "driver:3"})
    try:
        out, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == -signal.SIGKILL, err[-3000:]
    assert "fault: the driver goes now" in out, out[-3000:]
    experiment = client.get_experiment_by_name("shapes").experiment_id
    before = {shapes.shape_of(r): steps(client, r.info.run_id)
              for r in client.search_runs([experiment], "tags.`tunevision.role` = 'trial'")}
    assert sorted(before) == sorted(shapes.BACKBONES)
    assert all(s == [1, 2, 3] for s in before.values()), before  # every trial cut off mid-training, after epoch 3

    resumed = tunevision("search", str(search_file), "--resume", "--tracking-uri", uri, cwd=tmp_path)
    out, err = resumed.communicate(timeout=400)

    assert resumed.returncode == 0, err[-3000:]
    parent = client.search_runs([experiment], "tags.`tunevision.role` = 'search'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED" and parent[0].data.tags["tunevision.resumes"] == "1"
    runs = client.search_runs([experiment], "tags.`tunevision.role` = 'trial'")
    assert len(runs) == len(shapes.BACKBONES) and len({r.data.tags["tunevision.trial_id"] for r in runs}) == len(runs)
    tune_path = Path(parent[0].data.tags["tunevision.tune_path"])
    for run in runs:
        shape = shapes.shape_of(run)
        assert run.info.status == "FINISHED", (shape, run.info.status, run.data.tags.get("tunevision.error"))
        assert steps(client, run.info.run_id) == list(range(1, SHAPE_EPOCHS + 1)), shape  # no gap, no epoch twice
        started = shapes.restarts(next(tune_path.glob(f"*{run.data.tags['tunevision.trial_id']}*")))
        assert len(started) == 2 and 2 <= started[1] <= len(before[shape]) + 1, \
            f"{shape}: cut off after epoch {len(before[shape])}, the resumed trial began at epoch {started[1:]}, not from its checkpoint"

"""Continuing a search: which earlier search `--resume` continues, and what Ray needs to restore it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tunevision.errors import TunevisionError
from tunevision.search import Search

SEARCH_FILE_SHA = "tunevision.search_file_sha256"
TUNE_PATH = "tunevision.tune_path"


def sha256(path: Path) -> str:
    """The search file's fingerprint: what --resume and a reused name compare."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def earlier_search(search_run: Any, search: Search, options: Any, sha: str) -> Any | None:
    """The search run `--resume` continues (None without --resume); refuse a name taken by another file."""
    earlier = search_run.search_runs()
    where = f"experiment {search.name!r} in {search_run.tracking_uri}"
    if not options.resume:
        other = [r for r in earlier if r.data.tags.get(SEARCH_FILE_SHA, sha) != sha]
        if other:
            used = other[0].data.tags.get("tunevision.search_file", "another file")
            raise TunevisionError(
                f"search name {search.name!r} is taken by a different search file ({used}, run {other[0].info.run_id}) "
                f"in {search_run.tracking_uri}: pass --name NEW_NAME to start a new search, or --resume to continue that one"
            )
        return None
    unfinished = [r for r in earlier if r.info.status != "FINISHED"]
    if not unfinished:
        state = f"its {len(earlier)} search run(s) all finished" if earlier else "there is no such search"
        raise TunevisionError(f"--resume: nothing to resume in {where}: {state}; run without --resume to start one")
    previous = unfinished[0]
    if previous.data.tags.get(SEARCH_FILE_SHA) != sha:
        raise TunevisionError(
            f"--resume: {options.search_file} is not the file search run {previous.info.run_id} ran "
            f"({previous.data.tags.get('tunevision.search_file', '?')}, changed since): restore it, or pass --name NEW_NAME without --resume"
        )
    if TUNE_PATH not in previous.data.tags:
        raise TunevisionError(f"--resume: search run {previous.info.run_id} has no {TUNE_PATH} tag: it stopped before Ray Tune started")
    stored = previous.data.tags[TUNE_PATH]
    if options.storage and storage_join(options.storage, Path(stored).name) != stored:
        raise TunevisionError(f"--resume: --storage {options.storage} differs from the search's own {stored}; leave --storage out")
    return previous


def storage_join(storage: str, name: str) -> str:
    """The Tune experiment folder `name` under `storage`, a cloud URI or an absolute local path."""
    return storage.rstrip("/") + "/" + name if "://" in storage else str(Path(storage).expanduser().resolve() / name)


def optuna_history(tune_path: str) -> int | None:
    """How many finished trials the restored Optuna study holds (None when not readable from here)."""
    import glob

    import optuna
    import ray.cloudpickle as pickle

    # The newest by name (a session timestamp), as Ray picks it: syncing gives every copy the same mtime.
    files = sorted(glob.glob(str(Path(tune_path) / "searcher-state-*.pkl")))
    if not files:
        return None
    with open(files[-1], "rb") as f:
        state = pickle.load(f)
    study = state.get("_ot_study") if isinstance(state, dict) else None
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))) if study else None


def repair_checkpoints(tune_path: str, logged_epochs: Callable[[str], int], log: Callable[[str], None]) -> None:
    """Give every checkpoint the experiment snapshot names a folder, before Ray restores from it.

    Ray deletes a trial's superseded checkpoint as soon as a newer one is registered, but uploads the
    experiment snapshot in the background: a driver killed in between leaves a snapshot that names a
    deleted checkpoint, and that trial could never resume. The newest surviving checkpoint whose epoch
    MLflow already holds (`logged_epochs(trial_id)`) takes the missing name, so no epoch goes unrecorded;
    checkpoints the snapshot does not know are removed, as Ray would never delete them.
    """
    import json
    import shutil

    import ray.cloudpickle as pickle
    import torch

    from tunevision.trial import CHECKPOINT_FILE

    snapshots = sorted(Path(tune_path).glob("experiment_state-*.json")) if "://" not in tune_path else []
    if not snapshots:
        return
    for state, meta in json.loads(snapshots[-1].read_text())["trial_data"]:
        manager = json.loads(meta).get("checkpoint_manager", {})
        if manager.get("_type") != "CLOUDPICKLE_FALLBACK":
            continue
        manager = pickle.loads(bytes.fromhex(manager["value"]))
        named = {Path(r.checkpoint.path) for r in [*manager._checkpoint_results, manager._latest_checkpoint_result] if r}
        missing = sorted(p for p in named if not p.exists())
        if not missing:
            continue
        trial_id = json.loads(state)["trial_id"]
        surviving = sorted(p for p in missing[0].parent.glob("checkpoint_*") if p not in named)
        logged = logged_epochs(trial_id)

        def epoch(folder: Path) -> int:  # Lightning's epoch index of the save, + 1 = the epoch reported with it
            return torch.load(folder / CHECKPOINT_FILE, map_location="cpu", mmap=True, weights_only=True)["epoch"] + 1

        usable = [p for p in surviving if epoch(p) <= logged]
        if not usable:
            continue  # nothing recorded to continue from: Ray fails the trial with its own reason
        for path in missing:
            shutil.copytree(usable[-1], path)
        for path in surviving:
            shutil.rmtree(path)
        log(f"trial {trial_id}: the snapshot's {', '.join(p.name for p in missing)} had been deleted; "
            f"continuing from {usable[-1].name} (epoch {epoch(missing[0])})")

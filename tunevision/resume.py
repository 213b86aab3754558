"""Continuing a search: which earlier search `--resume` continues, what it must refuse, and what Ray needs to restore it."""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import inspect
import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Any, Callable, Mapping

from tunevision.data.base import DataSource
from tunevision.errors import TunevisionError
from tunevision.search import Search

SEARCH_FILE_SHA = "tunevision.search_file_sha256"
TUNE_PATH = "tunevision.tune_path"
DRIVER = "tunevision.driver"  # JSON: host, pid and start of the driver that runs (or last ran) the search
SETTINGS = "settings.json"  # parent-run artifact: the effective Search, what --resume compares
LOCK_FILE = "tunevision-driver.lock"
# Search fields the command line overrides, by flag: the search file itself is compared by its sha256.
FLAGS = {"data": "--data", "space": "--set", "trials": "--trials", "max_epochs": "--max-epochs", "seed": "--seed",
         "cpus_per_trial": "--cpus-per-trial", "gpus_per_trial": "--gpus-per-trial", "max_concurrent": "--max-concurrent"}


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


def settings(search: Search) -> dict[str, Any]:
    """The effective search as plain JSON data: the data source's description, the space, every other field."""
    return json.loads(json.dumps({f.name: _plain(getattr(search, f.name)) for f in dataclasses.fields(search)}))


def _plain(value: Any) -> Any:
    if isinstance(value, DataSource):
        return value.describe()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if inspect.isroutine(value) or inspect.isclass(value):
        return f"{value.__module__}.{value.__qualname__}"
    if hasattr(value, "__dict__"):  # a Ray Tune domain (tune.loguniform...), a progressive schedule
        return {"type": type(value).__qualname__, **{k: _plain(v) for k, v in sorted(vars(value).items())}}
    return repr(value)


def recorded_settings(search_run: Any, run_id: str) -> dict[str, Any] | None:
    """The settings.json search run `run_id` stored when it started (None for runs from before it was stored)."""
    try:
        return json.loads(search_run.read_text(SETTINGS, run_id))
    except Exception:  # MLflow raises its own or OSError for a missing artifact, by store
        return None


def check_settings(recorded: Mapping[str, Any] | None, search: Search, data_tag: str | None, run_id: str) -> None:
    """Refuse to resume search run `run_id` with other --data, --set or budget flags than it ran with.

    `recorded` is the run's settings.json (None for runs that predate it: only the data tag is compared).
    """
    now = settings(search)
    if recorded is None:
        recorded = {"data": data_tag} if data_tag is not None else {}
        now = {"data": now["data"]}
    changes = []
    for name in sorted(set(recorded) | set(now)):
        before, after = recorded.get(name), now.get(name)
        if before == after:
            continue
        if name == "space" and isinstance(before, dict) and isinstance(after, dict):
            changes += [f"space[{key!r}] {_short(before.get(key, 'unset'))} -> {_short(after.get(key, 'unset'))} (--set)"
                        for key in sorted(set(before) | set(after)) if before.get(key, "unset") != after.get(key, "unset")]
        else:
            changes.append(f"{name} {_short(before)} -> {_short(after)}" + (f" ({FLAGS[name]})" if name in FLAGS else ""))
    if changes:
        raise TunevisionError(
            f"--resume: search run {run_id} ran with other settings: {'; '.join(changes)}; resume with the flags it ran "
            f"with, or start a new search with --name NEW_NAME"
        )


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _field(tag: str | None, name: str) -> Any:
    try:
        return json.loads(tag or "{}").get(name)
    except (ValueError, AttributeError):
        return None


def driver_tag() -> str:
    """This process as the driver of a search: the value of the parent run's `tunevision.driver` tag."""
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")})


class DriverLock:
    """An exclusive `flock` that the driver of a search holds while it runs, so a second one is refused.

    The lock file is in the Tune folder when that is a local or shared path (NFS passes flock on), else
    (a cloud URI) in this machine's cache folder, keyed on the URI. The kernel drops the lock when the
    driver dies, however it dies: a stale lock never blocks a `--resume`. A driver on another machine
    writing to a cloud URI cannot be seen from here; `claim` then warns with what the tag says.
    """

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path, self.handle = path, handle

    @classmethod
    def claim(cls, tune_path: str, run_id: str, earlier: str | None = None, log: Callable[[str], None] = print) -> DriverLock:
        """Lock search run `run_id`'s Tune folder for this driver; refuse if another driver holds it.

        `earlier` is the run's `tunevision.driver` tag: the driver that ran it before, for the warning
        when it ran on another machine and the lock cannot tell.
        """
        if "://" in tune_path:
            from tunevision.data.cache import cache_dir

            path = cache_dir() / "drivers" / f"{hashlib.sha256(tune_path.encode()).hexdigest()[:16]}.lock"
            host = _field(earlier, "host")
            if host and host != socket.gethostname():
                log(f"warning: search run {run_id} was driven from {host} (tag {DRIVER}); whether that driver still runs "
                    f"cannot be checked from here, with {tune_path} on cloud storage: make sure it has stopped")
        else:
            path = Path(tune_path) / LOCK_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # not "w": that would erase the holder's name before we know we hold it
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            try:
                who = ", ".join(f"{k} {v}" for k, v in json.loads(holder).items())
            except (ValueError, AttributeError):  # a holder that has not written its name yet
                who = "another driver"
            raise TunevisionError(f"--resume: search run {run_id} is still running ({who}, holding {path}): "
                                  f"stop that driver or let it finish before resuming") from None
        except OSError as exc:  # a file system without locks (some FUSE mounts): run, but say what is not guarded
            log(f"warning: cannot lock {path} ({exc.strerror}): a second driver on this search would not be refused")
        handle.seek(0)
        handle.truncate()
        handle.write(driver_tag())
        handle.flush()
        return cls(path, handle)

    def release(self) -> None:
        """Let another driver resume the search."""
        self.handle.close()  # closing the last descriptor drops the flock

"""MLflow records, written from the driver only: one parent run per search, one child run per trial."""
from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from ray.tune import Callback
from ray.tune.utils import flatten_dict

from tunevision.errors import TunevisionError
from tunevision.online import check_tracking_uri
from tunevision.metrics import confusion_matrix
from tunevision.names import trial_name

ROLE = "tunevision.role"
TRIAL_ID = "tunevision.trial_id"
SAMPLED = "tunevision.sampled"  # a trial's params the searcher chose (JSON list), not the space's constants
METRIC, MODE = "tunevision.metric", "tunevision.mode"  # on the search run: what its trials are ranked by
PARENT = "mlflow.parentRunId"
NOT_RESUMED = "tunevision.not_resumed"
LOST = "the driver died before Ray recorded this trial; not resumed (Ray ran the search on without it)"
# Keys of a Tune result that are our figures; everything else Ray adds (time_this_iter_s...) is skipped.
FIGURE_PREFIXES = ("train_", "val_", "trainable_params", "total_params")


def _params(config: Mapping[str, Any]) -> list[Param]:
    return [Param(k, str(v)[:6000]) for k, v in flatten_dict(dict(config), delimiter=".").items()]


def _log_metrics(client: MlflowClient, run_id: str, figures: Mapping[str, float], step: int,
                 tags: Sequence[RunTag] = ()) -> None:
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, step) for k, v in figures.items()]
    for i in range(0, len(metrics), 1000):  # MLflow's log_batch limit
        client.log_batch(run_id, metrics=metrics[i : i + 1000], tags=list(tags) if i == 0 else [])


def _log_confusion(client: MlflowClient, run_id: str, figures: Mapping[str, float], prefix: str,
                   classes: Sequence[str], folder: str | None, extra: Mapping[str, Any]) -> None:
    from tunevision.plots import confusion_matrix_png

    cm = confusion_matrix(figures, prefix, classes)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "confusion_matrix.json").write_text(
            json.dumps({"classes": list(classes), "rows": "true", "columns": "predicted", "matrix": cm, **extra}, indent=1)
        )
        confusion_matrix_png(cm, classes, Path(tmp) / "confusion_matrix.png", title=f"{prefix} confusion matrix")
        client.log_artifacts(run_id, tmp, folder)


def _trial_run(client: MlflowClient, experiment_id: str, parent_id: str, trial_id: str) -> str | None:
    """The child run of `trial_id` under the search run `parent_id`, if there is one (a run closed as lost is not)."""
    found = client.search_runs([experiment_id], f"tags.`{PARENT}` = '{parent_id}' and tags.`{TRIAL_ID}` = '{trial_id}'",
                               max_results=10)
    return next((run.info.run_id for run in found if NOT_RESUMED not in run.data.tags), None)


def _last_step(client: MlflowClient, run_id: str, metric: str) -> int:
    return max((m.step for m in client.get_metric_history(run_id, metric)), default=0)


class SearchRun:
    """The parent run of one `tunevision search`: search file, data report, manifest, best config, test figures."""

    def __init__(self, tracking_uri: str | None, experiment: str) -> None:
        check_tracking_uri(tracking_uri)
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        self.tracking_uri = mlflow.get_tracking_uri()
        self.client = MlflowClient(self.tracking_uri)
        try:
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        except Exception as e:  # an unreachable or unwritable store must stop us before any trial
            raise TunevisionError(f"--tracking-uri {self.tracking_uri}: cannot reach the MLflow store ({type(e).__name__}: {str(e)[:200]})") from None
        self.run_id = ""

    def start(self, search_file: Path, tags: Mapping[str, str]) -> str:
        """Open the parent run and store the search file; return its run id."""
        run = self.client.create_run(self.experiment_id, run_name=f"search-{time.strftime('%Y%m%d-%H%M%S')}",
                                     tags={ROLE: "search", **tags})
        self.run_id = run.info.run_id
        self.client.log_artifact(self.run_id, str(search_file))
        return self.run_id

    def search_runs(self) -> list[Any]:
        """Every earlier search run of this experiment, newest first."""
        return self.client.search_runs([self.experiment_id], f"tags.`{ROLE}` = 'search'",
                                       order_by=["attributes.start_time DESC"], max_results=1000)

    def reopen(self, run_id: str) -> None:
        """Continue an earlier search run (`--resume`): mark it running again."""
        self.run_id = run_id
        self.client.update_run(run_id, status="RUNNING")

    def read_text(self, name: str, run_id: str | None = None) -> str:
        """Return a text artifact of this (or another) search run."""
        with tempfile.TemporaryDirectory() as tmp:
            return Path(self.client.download_artifacts(run_id or self.run_id, name, tmp)).read_text()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tag the search run."""
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_figures(self, figures: Mapping[str, float], step: int = 0) -> None:
        """Log metrics on the search run."""
        _log_metrics(self.client, self.run_id, figures, step)

    def logged_epochs(self, trial_id: str, metric: str = "val_loss") -> int:
        """How many epochs of a trial this search run's child run holds (0 when it has none)."""
        run_id = _trial_run(self.client, self.experiment_id, self.run_id, trial_id)
        return _last_step(self.client, run_id, metric) if run_id else 0

    def log_text(self, text: str, name: str) -> None:
        """Store a text artifact on the parent run."""
        self.client.log_text(self.run_id, text, name)

    def log_file(self, path: Path, folder: str | None = None) -> None:
        """Store a file as an artifact of the parent run, under `folder`."""
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_best(self, config: Mapping[str, Any], trial_id: str, test_figures: Mapping[str, float],
                 classes: Sequence[str]) -> None:
        """Record the chosen trial's config as params and its test figures (metrics + confusion matrix)."""
        self.client.log_batch(self.run_id, params=_params(config), tags=[RunTag("tunevision.best_trial_id", trial_id)])
        _log_metrics(self.client, self.run_id, test_figures, step=0)
        _log_confusion(self.client, self.run_id, test_figures, "test", classes, "test", {"trial_id": trial_id})

    def log_model(self, program: Path, card: Any, registered_name: str) -> str:
        """Log the exported program (export.py) as an MLflow pyfunc model of this run, register it; return its URI.

        The model is code (served_model.py) plus the torch.export program: nothing is unpickled on load,
        and tunevision need not be installed where it serves.
        """
        import mlflow.pyfunc
        import numpy
        import pandas
        import torch

        from tunevision.export import SERVED_MODEL_CODE, signature

        requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={numpy.__version__}",
                        f"pandas=={pandas.__version__}", f"mlflow=={mlflow.__version__}"]
        with mlflow.start_run(run_id=self.run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(SERVED_MODEL_CODE),
                artifacts={"program": str(program)},
                model_config=card.model_config(),
                signature=signature(card),
                metadata=card.metadata(),
                pip_requirements=requirements,
                registered_model_name=registered_name,
            )
        versions = self.client.search_model_versions(f"name='{registered_name}' and run_id='{self.run_id}'")
        return f"models:/{registered_name}/{versions[0].version}" if versions else info.model_uri

    def finish(self, status: str = "FINISHED") -> None:
        """Close the parent run."""
        if self.run_id:
            self.client.set_terminated(self.run_id, status)


class TrialRecorder(Callback):
    """Ray Tune callback (runs in the driver) that writes each trial as a child run of the search run.

    Ray pickles it with the experiment and restores it on `--resume`: the MLflow client is rebuilt from
    the tracking URI, and what it knows per trial (last step, best epoch) travels in `get_state`.
    Everything it writes happens in Ray's controller loop, which starts no trial meanwhile, except a
    finished trial's confusion matrix (drawing it takes longer than a trivial trial's whole training): that
    is drawn and stored by one background thread, which the search waits for when its trials are over.
    """

    def __init__(self, search_run: SearchRun, classes: Sequence[str], metric: str, mode: str) -> None:
        self.tracking_uri = search_run.tracking_uri
        self.client = search_run.client
        self.experiment_id = search_run.experiment_id
        self.parent_id = search_run.run_id
        self.classes = list(classes)
        self.metric, self.mode = metric, mode
        self.runs: dict[str, str] = {}
        self.best: dict[str, dict[str, float]] = {}
        self.last_step: dict[str, int] = {}
        self.placements: dict[str, list[dict[str, Any]]] = {}
        self._store_read = False
        self.restored = False  # a restored search may hold runs this recorder has not seen: look them up
        self._drawing: ThreadPoolExecutor | None = None
        self._drawn: list[Future] = []

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("client", "_store_read", "_drawing", "_drawn"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.client = MlflowClient(self.tracking_uri)
        self._store_read = False
        self.restored = True
        self._drawing, self._drawn = None, []

    def get_state(self) -> dict[str, Any]:
        """What Ray stores with each experiment snapshot, for a restored search."""
        return {"runs": self.runs, "best": self.best, "last_step": self.last_step, "placements": self.placements}

    def set_state(self, state: dict[str, Any]) -> None:
        """Take back what `get_state` stored."""
        for key in ("runs", "best", "last_step", "placements"):
            getattr(self, key).update(state.get(key, {}))

    def setup(self, **info: Any) -> None:
        # What `tunevision report` sorts by, for a search whose file it does not load.
        self.client.log_batch(self.parent_id, tags=[RunTag(METRIC, self.metric), RunTag(MODE, self.mode)])

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._store_read:  # the first step of a (restored) experiment: `trials` is what Ray's snapshot held
            self._store_read = True
            self.close_lost_runs({trial.trial_id for trial in trials})
            self.catch_up()

    def catch_up(self) -> None:
        """Take each trial's last step from its run: what the driver logged after Ray's last snapshot.

        This callback's state comes back from that snapshot, while a restored trial continues from the
        checkpoint the snapshot names and reports the epochs after it again: those already in MLflow are
        not logged twice.
        """
        for trial_id, run_id in self.runs.items():
            self.last_step[trial_id] = max(self.last_step.get(trial_id, 0), _last_step(self.client, run_id, self.metric))

    def close_lost_runs(self, known: set[str]) -> list[str]:
        """Close the trial runs of trials Ray does not know (`known`: the trial ids it restored); return their ids.

        A driver killed between creating a trial's run and Ray's next snapshot leaves a run whose trial Ray
        never restores: it would stay RUNNING forever. Like Optuna's `fail_stale_trials`, it is closed, not
        deleted: KILLED, with the reason in `tunevision.error` and `tunevision.not_resumed` (on any status).
        """
        closed, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], f"tags.`{PARENT}` = '{self.parent_id}'",
                                           max_results=1000, page_token=token)
            for run in page:
                tags = run.data.tags
                if tags.get(ROLE) != "trial" or tags.get(TRIAL_ID) in known or NOT_RESUMED in tags:
                    continue
                running = run.info.status in ("RUNNING", "SCHEDULED")
                self.client.log_batch(run.info.run_id, tags=[RunTag(NOT_RESUMED, LOST)]
                                      + ([RunTag("tunevision.error", LOST)] if running else []))
                if running:
                    self.client.set_terminated(run.info.run_id, "KILLED")
                self.runs.pop(tags.get(TRIAL_ID, ""), None)
                closed.append(run.info.run_id)
            token = page.token
            if not token:
                return closed

    def run_id(self, trial: Any, trials: Sequence[Any] = ()) -> str:
        """Return the trial's child run, creating it once; a restored trial finds its existing run.

        A new run is named by the trial's place in `trials` and its sampled values (`t03 adamw lr=4.2e-4`).
        """
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        run_id = _trial_run(self.client, self.experiment_id, self.parent_id, trial.trial_id) if self.restored else None
        if run_id:
            # The driver died after logging steps its snapshot does not know: never log them twice.
            logged = _last_step(self.client, run_id, self.metric)
            self.last_step[trial.trial_id] = max(self.last_step.get(trial.trial_id, 0), logged)
        else:
            index = next((i for i, t in enumerate(trials) if t.trial_id == trial.trial_id), len(self.runs)) + 1
            sampled = [key.replace("/", ".") for key in trial.evaluated_params]  # MLflow's param names
            run = self.client.create_run(
                self.experiment_id, run_name=trial_name(index, trial.evaluated_params),
                tags={PARENT: self.parent_id, ROLE: "trial", TRIAL_ID: trial.trial_id, SAMPLED: json.dumps(sampled)},
            )
            run_id = run.info.run_id
            self.client.log_batch(run_id, params=_params(trial.config))
        self.runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        known = self.restored or trial.trial_id in self.runs  # else its run was just created, RUNNING
        run_id = self.run_id(trial, trials)
        if known:
            self.client.update_run(run_id, status="RUNNING")  # a resumed trial that had been left FAILED or KILLED

    def _placement_tags(self, trial: Any, result: Mapping[str, Any]) -> list[RunTag]:
        """Tags of where the trial runs; every process it ran in (node, GPUs, from, to) goes in `tunevision.placements`."""
        if "node_id" not in result:
            return []
        history = self.placements.setdefault(trial.trial_id, [])
        where = {"node_id": result["node_id"], "node_ip": result.get("node_ip", ""),
                 "gpu_ids": [g for g in str(result.get("gpu_ids", "")).split(",") if g],
                 "start": float(result.get("process_started", 0.0))}
        end = float(result.get("reported_at", time.time()))
        if history and history[-1]["start"] == where["start"] and history[-1]["node_id"] == where["node_id"]:
            history[-1]["end"] = end
        else:
            history.append({**where, "end": end})
        return [RunTag("tunevision.node_id", where["node_id"]), RunTag("tunevision.node_ip", where["node_ip"]),
                RunTag("tunevision.gpu_ids", ",".join(where["gpu_ids"])),
                RunTag("tunevision.placements", json.dumps(history[-20:]))]  # the last 20 fit MLflow's tag size

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        tags = self._placement_tags(trial, result) + _feature_cache_tags(result)
        step = int(result.get("epoch") or result.get("training_iteration", 0))
        if step <= self.last_step.get(trial.trial_id, 0):  # a restored trial repeating an epoch already recorded
            if tags:
                self.client.log_batch(self.run_id(trial, trials), tags=tags)
            return
        self.last_step[trial.trial_id] = step
        figures = {k: v for k, v in result.items() if k.startswith(FIGURE_PREFIXES) and isinstance(v, (int, float))}
        _log_metrics(self.client, self.run_id(trial, trials), figures, step, tags)  # one request per epoch
        best = self.best.get(trial.trial_id)
        if self.metric in figures and (best is None or self._better(figures[self.metric], best[self.metric])):
            self.best[trial.trial_id] = {**figures, "epoch": step}

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def _log_best(self, trial: Any, run_id: str) -> None:
        """The trial's best epoch: `best_<metric>` and `best_epoch` (what the search chose on and the MLflow view sorts by)."""
        best = self.best.get(trial.trial_id)
        if best is not None and self.metric in best:
            _log_metrics(self.client, run_id, {f"best_{self.metric}": best[self.metric], "best_epoch": best["epoch"]},
                         int(best["epoch"]))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.run_id(trial, trials)
        best = self.best.get(trial.trial_id)
        if best is not None:
            if self._drawing is None:
                self._drawing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunevision-confusion")
            self._drawn.append(self._drawing.submit(_log_confusion, self.client, run_id, best, "val", self.classes, None,
                                                    {"epoch": best["epoch"]}))
        self._log_best(trial, run_id)
        self.client.set_terminated(run_id, "FINISHED")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.wait_drawn()

    def wait_drawn(self) -> None:
        """Wait until every finished trial's confusion matrix is stored; raise the first error drawing one met."""
        drawing, drawn, self._drawing, self._drawn = self._drawing, self._drawn, None, []
        if drawing is not None:
            drawing.shutdown(wait=True)
        for future in drawn:
            future.result()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Ray retries it from its last checkpoint (a lost node, a crashed process): count and say why.
        run_id = self.run_id(trial, trials)
        self.client.log_batch(run_id, tags=[RunTag("tunevision.retries", str(trial.num_failures)),
                                            RunTag("tunevision.last_retry_reason", error_reason(trial))])

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.run_id(trial, trials)
        self._log_best(trial, run_id)
        self.client.set_tag(run_id, "tunevision.error", error_reason(trial))
        self.client.set_terminated(run_id, "FAILED")


def _feature_cache_tags(result: Mapping[str, Any]) -> list[RunTag]:
    """Tags of whether the trial trained from cached features: "hit", "built" or "off: <why>", and the file's size."""
    if "feature_cache" not in result:
        return []
    return [RunTag("tunevision.feature_cache", str(result["feature_cache"])),
            RunTag("tunevision.feature_cache_bytes", str(int(result.get("feature_cache_bytes", 0))))]


def error_reason(trial: Any) -> str:
    """One line saying why a trial failed: the exception's own last line, not Ray's wrapper."""
    error = _local_error(trial) or trial.get_pickled_error() or trial.get_error()
    cause = getattr(error, "cause", None) or error  # RayTaskError wraps the trial's own exception
    text = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else str(error or "failed")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "failed")[:5000]


def _local_error(trial: Any) -> Any:
    """The trial's latest error as the driver just wrote it (storage gets its copy later)."""
    import os

    import ray.cloudpickle as pickle

    path = getattr(trial, "pickled_error_file", None)
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        return Path(path).read_text()
    return None


def load_model(model_uri: str) -> Any:
    """Load a registered tunevision model as MLflow's pyfunc (its metadata: `model.metadata.metadata`)."""
    import mlflow.pyfunc

    try:
        return mlflow.pyfunc.load_model(model_uri)
    except Exception as e:  # unknown URI, missing version, wrong store: the user's mistake, one line
        raise TunevisionError(f"{model_uri}: cannot load the model ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None

"""MLflow records, written from the driver only: one parent run per search, one child run per trial."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from ray.tune import Callback
from ray.tune.utils import flatten_dict

from tunevision.errors import TunevisionError
from tunevision.metrics import confusion_matrix

ROLE = "tunevision.role"
TRIAL_ID = "tunevision.trial_id"
PARENT = "mlflow.parentRunId"
# Keys of a Tune result that are our figures; everything else Ray adds (time_this_iter_s...) is skipped.
FIGURE_PREFIXES = ("train_", "val_", "trainable_params", "total_params")


def _params(config: Mapping[str, Any]) -> list[Param]:
    return [Param(k, str(v)[:6000]) for k, v in flatten_dict(dict(config), delimiter=".").items()]


def _log_metrics(client: MlflowClient, run_id: str, figures: Mapping[str, float], step: int) -> None:
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, step) for k, v in figures.items()]
    for i in range(0, len(metrics), 1000):  # MLflow's log_batch limit
        client.log_batch(run_id, metrics=metrics[i : i + 1000])


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


class SearchRun:
    """The parent run of one `tunevision search`: search file, data report, manifest, best config, test figures."""

    def __init__(self, tracking_uri: str | None, experiment: str) -> None:
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

    def log_text(self, text: str, name: str) -> None:
        """Store a text artifact on the parent run."""
        self.client.log_text(self.run_id, text, name)

    def log_best(self, config: Mapping[str, Any], trial_id: str, test_figures: Mapping[str, float],
                 classes: Sequence[str]) -> None:
        """Record the chosen trial's config as params and its test figures (metrics + confusion matrix)."""
        self.client.log_batch(self.run_id, params=_params(config), tags=[RunTag("tunevision.best_trial_id", trial_id)])
        _log_metrics(self.client, self.run_id, test_figures, step=0)
        _log_confusion(self.client, self.run_id, test_figures, "test", classes, "test", {"trial_id": trial_id})

    def log_model(self, model: Any, example: Any, registered_name: str) -> str:
        """Log the best model with its signature under the parent run and register it; return its model URI."""
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        with torch.no_grad():
            output = model(example).numpy()
        signature = infer_signature(example.numpy(), output)
        with mlflow.start_run(run_id=self.run_id):
            info = mlflow.pytorch.log_model(
                model,
                name="model",
                signature=signature,
                registered_model_name=registered_name,
                serialization_format="pickle",  # keeps the Predictor's classes, image size and channels
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "tunevision"],
            )
        versions = self.client.search_model_versions(f"name='{registered_name}' and run_id='{self.run_id}'")
        return f"models:/{registered_name}/{versions[0].version}" if versions else info.model_uri

    def finish(self, status: str = "FINISHED") -> None:
        """Close the parent run."""
        if self.run_id:
            self.client.set_terminated(self.run_id, status)


class TrialRecorder(Callback):
    """Ray Tune callback (runs in the driver) that writes each trial as a child run of the search run."""

    def __init__(self, search_run: SearchRun, classes: Sequence[str], metric: str, mode: str) -> None:
        self.client = search_run.client
        self.experiment_id = search_run.experiment_id
        self.parent_id = search_run.run_id
        self.classes = list(classes)
        self.metric, self.mode = metric, mode
        self.runs: dict[str, str] = {}
        self.best: dict[str, dict[str, float]] = {}
        self.last_step: dict[str, int] = {}

    def run_id(self, trial: Any) -> str:
        """Return the trial's child run, creating it once; a restored trial finds its existing run."""
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{PARENT}` = '{self.parent_id}' and tags.`{TRIAL_ID}` = '{trial.trial_id}'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
        else:
            run = self.client.create_run(
                self.experiment_id, run_name=str(trial),
                tags={PARENT: self.parent_id, ROLE: "trial", TRIAL_ID: trial.trial_id},
            )
            run_id = run.info.run_id
            self.client.log_batch(run_id, params=_params(trial.config))
        self.runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.run_id(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        step = int(result.get("training_iteration", 0))
        if step <= self.last_step.get(trial.trial_id, 0):
            return  # a restored trial repeating an epoch already recorded
        self.last_step[trial.trial_id] = step
        figures = {k: v for k, v in result.items() if k.startswith(FIGURE_PREFIXES) and isinstance(v, (int, float))}
        _log_metrics(self.client, self.run_id(trial), figures, step)
        best = self.best.get(trial.trial_id)
        if self.metric in figures and (best is None or self._better(figures[self.metric], best[self.metric])):
            self.best[trial.trial_id] = {**figures, "epoch": step}

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.run_id(trial)
        best = self.best.get(trial.trial_id)
        if best is not None:
            _log_confusion(self.client, run_id, best, "val", self.classes, None, {"epoch": best["epoch"]})
        self.client.set_terminated(run_id, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.run_id(trial)
        error = trial.get_pickled_error() or trial.get_error()
        lines = str(error or "failed").strip().splitlines()
        self.client.set_tag(run_id, "tunevision.error", (lines[-1] if lines else "failed")[:5000])
        self.client.set_terminated(run_id, "FAILED")


def load_model(model_uri: str) -> Any:
    """Load a logged tunevision model (a Predictor) from MLflow."""
    import mlflow.pytorch

    try:
        return mlflow.pytorch.load_model(model_uri, map_location="cpu")
    except Exception as e:  # unknown URI, missing version, wrong store: the user's mistake, one line
        raise TunevisionError(f"{model_uri}: cannot load the model ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None

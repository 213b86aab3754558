"""Run a whole search: validate, start Ray, tune with Optuna + ASHA, test the chosen model once, record it."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tunevision.errors import TunevisionError
from tunevision.search import Search


@dataclass(frozen=True)
class RunOptions:
    """Where a search runs and records: the CLI's flags that are not part of the Search itself."""

    search_file: Path
    address: str | None = None  # an existing Ray cluster; None = Ray started in-process
    tracking_uri: str | None = None  # None = MLflow's default (sqlite:///mlflow.db in the working folder)
    storage: str | None = None  # Ray Tune storage path; None = ~/ray_results


@dataclass(frozen=True)
class Outcome:
    """What a finished search produced."""

    parent_run_id: str
    best_trial_id: str
    best_config: dict[str, Any]
    best_val: float
    test_figures: dict[str, float]
    model_uri: str
    trials: int
    failed: int


def _searcher(search: Search) -> Any:
    """Return the search algorithm: Optuna's TPE, or Ray's random/grid variant generator."""
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.sample import Domain

    from tunevision.search import walk_space

    samples = any(isinstance(value, Domain) for _, value in walk_space(search.space))
    if search.searcher == "optuna" and samples:  # a space of constants leaves TPE nothing to choose
        import warnings

        import optuna
        from ray.tune.search.optuna import OptunaSearch

        # Lists as choices (hidden_units: [[128], [128, 64]]) work with the in-memory study Ray uses.
        warnings.filterwarnings("ignore", message="Choices for a categorical distribution")

        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=search.seed))
    return BasicVariantGenerator(random_state=search.seed)


def _scheduler(search: Search) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if search.scheduler == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=search.max_epochs,
                             grace_period=min(search.grace_period, search.max_epochs))
    return FIFOScheduler()


def check_search(search: Search) -> None:
    """Check what can fail before any trial starts: backbones and their weights for every candidate."""
    from tunevision.models import check_weights

    for backbone in search.candidates("backbone"):
        for weights in search.candidates("weights"):
            check_weights(backbone, weights)


def _start_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise TunevisionError(f"--address {address}: cannot connect to a Ray cluster ({str(e).splitlines()[0][:200]})") from None
        return
    # A Ray started by this process serves only this machine: keep it on loopback.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)


def run(search: Search, options: RunOptions, log: Callable[[str], None] = print) -> Outcome:
    """Run `search` end to end and return what it chose; MLflow writes happen here, in the driver."""
    import torch
    from ray import tune

    from tunevision.data import prepare
    from tunevision.tracking import SearchRun, TrialRecorder
    from tunevision.trial import CHECKPOINT_FILE, evaluate_checkpoint, run_trial

    check_search(search)
    data = prepare(search.data, search.seed)
    log(data.report())
    search_run = SearchRun(options.tracking_uri, search.name)
    search_run.start(options.search_file, {"tunevision.search_file": str(options.search_file),
                                           "tunevision.data": search.data.describe()})
    search_run.log_text(data.report(), "data_report.txt")
    search_run.log_text(data.manifest_csv(), "manifest.csv")
    status = "FAILED"
    try:
        _start_ray(options.address)
        num_samples = 1 if search.searcher == "grid" else search.trials
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, data=data, search=search),
            {"cpu": search.cpus_per_trial, "gpu": search.gpus_per_trial},
        )
        recorder = TrialRecorder(search_run, data.classes, search.metric, search.mode)
        tuner = tune.Tuner(
            trainable,
            param_space=dict(search.space),
            tune_config=tune.TuneConfig(
                metric=search.metric, mode=search.mode, search_alg=_searcher(search),
                scheduler=_scheduler(search), num_samples=num_samples, max_concurrent_trials=search.max_concurrent,
            ),
            run_config=tune.RunConfig(
                name=f"{search.name}-{search_run.run_id[:8]}",
                storage_path=options.storage,
                callbacks=[recorder],
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=1, checkpoint_score_attribute=search.metric, checkpoint_score_order=search.mode,
                ),
                failure_config=tune.FailureConfig(max_failures=search.max_failures),
                verbose=1,
            ),
        )
        started = time.monotonic()
        results = tuner.fit()
        failed = sum(1 for r in results if r.error is not None)
        log(f"{len(results)} trials, {failed} failed, {time.monotonic() - started:.0f} s")
        try:
            best = results.get_best_result(search.metric, search.mode, scope="all")
        except RuntimeError:
            raise TunevisionError(f"no trial reported {search.metric}: every trial failed (see the trial runs in MLflow)") from None
        checkpoint = best.get_best_checkpoint(search.metric, search.mode)
        if checkpoint is None:
            raise TunevisionError(f"the best trial {best.path} left no checkpoint")
        best_val = float(best.metrics_dataframe[search.metric].agg(search.mode))
        trial_id = str(best.metrics.get("trial_id", ""))
        with checkpoint.as_directory() as folder:  # no copy when storage is local; a temporary one otherwise
            model, test_figures = evaluate_checkpoint(Path(folder) / CHECKPOINT_FILE, data, search)
        search_run.log_best(best.config, trial_id, test_figures, data.classes)
        predictor = model.predictor()
        example = torch.zeros(1, data.source.channels, predictor.image_size, predictor.image_size)
        model_uri = search_run.log_model(predictor, example, search.name)
        status = "FINISHED"
        return Outcome(search_run.run_id, trial_id, dict(best.config), best_val, test_figures, model_uri,
                       len(results), failed)
    finally:
        search_run.finish(status)

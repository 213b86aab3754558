"""Run a whole search: validate, start Ray, tune with Optuna + ASHA, test the chosen model once, record it."""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from tunevision.errors import TunevisionError
from tunevision.resume import (
    DRIVER,
    SEARCH_FILE_SHA,
    SETTINGS,
    TUNE_PATH,
    DriverLock,
    check_settings,
    driver_tag,
    earlier_search,
    optuna_history,
    recorded_settings,
    repair_checkpoints,
    settings,
    sha256,
    storage_join,
)
from tunevision.search import Search


@dataclass(frozen=True)
class RunOptions:
    """Where a search runs and records: the CLI's flags that are not part of the Search itself."""

    search_file: Path
    address: str | None = None  # an existing Ray cluster; None = Ray started in-process
    tracking_uri: str | None = None  # None = MLflow's default (sqlite:///mlflow.db in the working folder)
    storage: str | None = None  # Ray Tune storage path; None = ~/ray_results
    resume: bool = False  # continue the newest unfinished search of this name
    cpu_fallback: bool = False  # a trial given a GPU on a node without CUDA trains on the CPU instead of failing
    resource_wait: float = 600.0  # with address: seconds to wait for a node that can hold a trial, then stop
    output: str = "progress"  # the terminal: live progress, "quiet" (the summary only) or "verbose" (Ray's own tables)


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
    resumed: bool = False
    link: str = ""  # opens this search's trials in the MLflow UI
    winner: Any = None  # winner.Winner: single or ensemble, temperature, threshold


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

        # Two metrics: TPE's multi-objective mode; Optuna is told each trial's last epoch, as with one.
        two = len(search.metrics) == 2
        return OptunaSearch(metric=list(search.metrics) if two else search.metrics[0],
                            mode=list(search.modes) if two else search.modes[0],
                            sampler=optuna.samplers.TPESampler(seed=search.seed))
    # Ray ignores TuneConfig.max_concurrent_trials for a variant generator: it takes its own limit.
    return BasicVariantGenerator(random_state=search.seed, max_concurrent=search.max_concurrent or 0)


def _scheduler(search: Search) -> Any:
    from tunevision.schedulers import NewestFirstASHA, NewestFirstFIFO

    if search.scheduler == "asha":  # one number per epoch: the rule's rank metric (choose.py)
        return NewestFirstASHA(time_attr="training_iteration", metric=search.rule.rank_metric, mode=search.rule.mode,
                               max_t=search.max_epochs, grace_period=min(search.grace_period, search.max_epochs))
    return NewestFirstFIFO()


def _check_resources(search: Search, address: str | None, log: Callable[[str], None], wait: float = 0.0) -> None:
    """Stop before any trial when no node can hold one; on a cluster (`address`), once `wait` seconds pass without one.

    A trial's CPUs and GPUs are one bundle on one node, so two nodes of 2 CPUs cannot hold a trial of 4.
    While it waits, the request goes to Ray's autoscaler (`request_resources`), which may add such a node.
    """
    import ray

    need = {"CPU": search.cpus_per_trial, "GPU": search.gpus_per_trial}
    flags = {"CPU": "--cpus-per-trial", "GPU": "--gpus-per-trial"}

    def nodes() -> list[dict[str, float]]:
        return [n["Resources"] for n in ray.nodes() if n["Alive"]]

    def holds(node: dict[str, float], *names: str) -> bool:
        return all(node.get(name, 0) >= need[name] for name in names or need)

    if any(holds(node) for node in nodes()):
        return
    wait = wait if address else 0.0
    if wait > 0:
        from ray.autoscaler.sdk import request_resources

        log(f"no Ray node can hold a trial of {need['CPU']:g} CPU + {need['GPU']:g} GPU yet: "
            f"waiting up to {wait:g} s (--resource-wait) for one to join")
        request_resources(bundles=[{k: v for k, v in need.items() if v}])
        try:
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if any(holds(node) for node in nodes()):
                    return
                time.sleep(1.0)
        finally:
            request_resources(bundles=[])  # withdrawn: Tune's pending trials ask for themselves
    have = nodes()
    short = [name for name in need if need[name] and not any(holds(node, name) for node in have)] or list(need)
    shapes = Counter(f"{node.get('CPU', 0):g} CPU {node.get('GPU', 0):g} GPU" for node in have)
    message = (" ".join(f"{flags[name]} {need[name]:g}" for name in short)
               + f": no Ray node can hold a trial of {need['CPU']:g} CPU + {need['GPU']:g} GPU"
               + (f" after --resource-wait {wait:g} s" if address else "")
               + f" (nodes: {', '.join(f'{n} x {shape}' for shape, n in shapes.items()) or 'none'}); lower "
               + "/".join(flags[name] for name in short))
    if address:
        raise TunevisionError(f"{message}, add such a node, or wait longer with --resource-wait")
    raise TunevisionError(f"{message}, or run on a cluster with --address")


def _trials_at_once(search: Search) -> int:
    """How many trials the live nodes hold at once (at least 1): per node, its CPUs (and GPUs) over a trial's."""
    import ray

    held = 0
    for node in (n["Resources"] for n in ray.nodes() if n["Alive"]):
        fits = [int(node.get("CPU", 0) // search.cpus_per_trial)]
        if search.gpus_per_trial:
            fits.append(int(node.get("GPU", 0) // search.gpus_per_trial))
        held += min(fits)
    return max(1, held)


@contextmanager
def _start_together(search: Search) -> Iterator[None]:
    """While Tune runs: start as many trials at a time as the nodes hold, not one (Ray's choice for a searcher).

    Ray starts a searcher's trials one at a time (TUNE_MAX_PENDING_TRIALS_PG "auto" is 1 unless
    max_concurrent is set), so trials shorter than a trial process's start-up left all cores but one idle.
    Random and grid search keep Ray's own (many). A value the user set for TUNE_MAX_PENDING_TRIALS_PG
    stands; Ray reads it when `Tuner.fit` starts.
    """
    name = "TUNE_MAX_PENDING_TRIALS_PG"
    if name in os.environ or search.searcher != "optuna":
        yield
        return
    os.environ[name] = str(search.max_concurrent or _trials_at_once(search))
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _start_ray(address: str | None) -> None:
    import ray

    # Keeping one best checkpoint per trial makes Tune snapshot the experiment at every epoch, on purpose:
    # that is what lets --resume and node loss continue from the latest epoch. Its warning about it is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise TunevisionError(f"--address {address}: cannot connect to a Ray cluster ({str(e).splitlines()[0][:200]})") from None
        return
    # Serving only this machine, it listens on loopback when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set before ray
    # was first imported (cli.main does; too late here). "local": a Ray of its own, not one `ray start` left running
    # here, which a bare ray.init() would join; RAY_ADDRESS (as under `ray job submit`) still names a cluster to use.
    ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False, log_to_driver=False,
             configure_logging=False)


@dataclass
class OpenSearch:
    """A search ready to tune: its parent run, prepared data and Ray Tune folder (and what it resumes)."""

    search: Search
    options: RunOptions
    search_run: Any  # tracking.SearchRun
    data: Any  # data.PreparedData
    tune_path: str
    resumes: int = 0  # how many times this search run was resumed, this time included (0: a new search)
    lock: Any = None  # resume.DriverLock held while this driver runs the search


def open_search(search: Search, options: RunOptions, log: Callable[[str], None] = print) -> OpenSearch:
    """Check the space, prepare the data, start Ray and open (or reopen, with --resume) the MLflow search run.

    Nothing is written to the tracking store until the space and the data have been checked.
    """
    import io

    import pandas as pd

    from tunevision.data import prepare
    from tunevision.tracking import SearchRun
    from tunevision.validate import check_space
    from tunevision.winner import check_operating_point

    check_space(search)
    data = None if options.resume else prepare(search.data, search.seed)
    if data is not None:
        check_operating_point(search, data.classes)
    search_run = SearchRun(options.tracking_uri, search.name)
    sha = sha256(options.search_file)
    previous = earlier_search(search_run, search, options, sha)
    lock = None
    if previous is not None:  # refused while its driver runs or with other flags; else the same split as before
        check_settings(recorded_settings(search_run, previous.info.run_id), search, previous.data.tags.get("tunevision.data"),
                       previous.info.run_id)
        lock = DriverLock.claim(previous.data.tags[TUNE_PATH], previous.info.run_id, previous.data.tags.get(DRIVER), log)
        text = search_run.read_text("manifest.csv", previous.info.run_id)
        data = prepare(search.data, search.seed, manifest=pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False))
    log(data.report())
    _start_ray(options.address)
    _check_resources(search, options.address, log, options.resource_wait)
    if previous is not None:
        search_run.reopen(previous.info.run_id)
        tune_path = previous.data.tags[TUNE_PATH]
        resumes = int(previous.data.tags.get("tunevision.resumes", "0")) + 1
        search_run.set_tags({"tunevision.resumes": str(resumes), DRIVER: driver_tag()})
        log(f"resuming search run {search_run.run_id} from {tune_path}")
        return OpenSearch(search, options, search_run, data, tune_path, resumes, lock)
    search_run.start(options.search_file, {"tunevision.search_file": str(options.search_file),
                                           "tunevision.data": search.data.describe(), SEARCH_FILE_SHA: sha,
                                           DRIVER: driver_tag()})
    tune_path = storage_join(options.storage or os.path.expanduser("~/ray_results"), f"{search.name}-{search_run.run_id[:8]}")
    lock = DriverLock.claim(tune_path, search_run.run_id)
    search_run.set_tags({TUNE_PATH: tune_path})
    search_run.log_text(json.dumps(settings(search), indent=1), SETTINGS)
    search_run.log_text(data.report(), "data_report.txt")
    search_run.log_text(data.manifest_csv(), "manifest.csv")
    return OpenSearch(search, options, search_run, data, tune_path, lock=lock)


def tune(opened: OpenSearch, log: Callable[[str], None] = print) -> Any:
    """Run the trials (a new Tuner, or Tuner.restore on --resume) and return Ray Tune's ResultGrid."""
    from ray import tune as ray_tune

    from tunevision.models import get_backbone
    from tunevision.tracking import TrialRecorder
    from tunevision.trial import run_trial

    search, search_run = opened.search, opened.search_run
    trainable = ray_tune.with_resources(
        ray_tune.with_parameters(run_trial, data=opened.data, search=search, cpu_fallback=opened.options.cpu_fallback,
                                 backbones={name: get_backbone(name) for name in search.candidates("backbone")}),
        {"cpu": search.cpus_per_trial, "gpu": search.gpus_per_trial},
    )
    if opened.resumes and ray_tune.Tuner.can_restore(opened.tune_path):
        # Ray restores the trials, their checkpoints, the Optuna study and our TrialRecorder's state.
        repair_checkpoints(opened.tune_path, search_run.logged_epochs, log)
        tuner = ray_tune.Tuner.restore(opened.tune_path, trainable, param_space=dict(search.space),
                                       resume_unfinished=True, resume_errored=False)
        history = optuna_history(opened.tune_path)
        if history is not None:
            log(f"the searcher keeps {history} finished trial(s) from before")
            search_run.log_figures({"resume_optuna_history": history}, step=opened.resumes)
    else:
        recorder = TrialRecorder(search_run, opened.data.classes, search.rule.rank_metric, search.rule.mode)
        tuner = _new_tuner(search, trainable, recorder, opened.tune_path, opened.options.output)
    started = time.monotonic()
    with _start_together(search):
        results = tuner.fit()
    failed = sum(1 for r in results if r.error is not None)
    search_run.log_figures({"trials": len(results), "trials_failed": failed, "trials_finished": len(results) - failed})
    log(f"{len(results)} trials: {len(results) - failed} finished, {failed} failed, {time.monotonic() - started:.0f} s"
        + (" (failed trials: MLflow tag tunevision.error)" if failed else ""))
    return results


def finish(opened: OpenSearch, results: Any, log: Callable[[str], None] = print) -> Outcome:
    """Choose the winner on validation, calibrate it, test it once, record and register it (winner.py)."""
    from tunevision.winner import register_winner

    search = opened.search
    winner = register_winner(results, opened.data, search, opened.search_run, log)
    failed = sum(1 for r in results if r.error is not None)
    return Outcome(opened.search_run.run_id, winner.trial_id, winner.config, winner.figures[search.metrics[0]],
                   winner.test_figures, winner.model_uri, len(results), failed, opened.resumes > 0, winner=winner)


def run(search: Search, options: RunOptions, log: Callable[[str], None] = print) -> Outcome:
    """Run `search` end to end: open it, tune, finish; the search run ends FINISHED only if all three did.

    Then its report: the ranked trials, plots and the MLflow UI link (tunevision/report.py).
    """
    from tunevision import report

    opened = open_search(search, options, log)
    status = "FAILED"
    try:
        outcome = finish(opened, tune(opened, log), log)
        status = "FINISHED"
        return replace(outcome, link=report.after_search(opened.search_run, log))
    finally:
        opened.search_run.finish(status)
        if opened.lock is not None:
            opened.lock.release()


def _new_tuner(search: Search, trainable: Any, recorder: Any, tune_path: str, output: str = "progress") -> Any:
    """A Tuner for a new search whose experiment folder is `tune_path`; `output` as RunOptions.output says."""
    from ray import tune

    from tunevision import progress

    storage, name = tune_path.rsplit("/", 1)
    num_samples = 1 if search.searcher == "grid" else search.trials
    return tune.Tuner(
        trainable,
        param_space=dict(search.space),
        tune_config=tune.TuneConfig(
            search_alg=_searcher(search),  # the searcher and scheduler carry their own metrics
            scheduler=_scheduler(search), num_samples=num_samples, max_concurrent_trials=search.max_concurrent,
            reuse_actors=True,  # a trial process (its imports, warm caches) runs trial after trial: start-up once
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=[recorder, *progress.callbacks(search.rule.rank_metric, search.rule.mode, search.max_epochs, output)],
            checkpoint_config=tune.CheckpointConfig(  # Ray keeps this best one and the latest one
                num_to_keep=1, checkpoint_score_attribute=search.rule.rank_metric, checkpoint_score_order=search.rule.mode,
            ),
            failure_config=tune.FailureConfig(max_failures=search.max_failures),
            verbose=progress.ray_verbosity(output),
        ),
    )

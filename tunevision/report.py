"""What a search found, read back from MLflow: its trials ranked by the metric (terminal and CSV), plots, parameter
importances, the search run's note, and the link that opens its trials in the MLflow UI."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from tunevision.errors import TunevisionError

# The tags tracking.py writes (not imported from there: it loads Ray, which `tunevision report` does without).
ROLE, PARENT, SAMPLED = "tunevision.role", "mlflow.parentRunId", "tunevision.sampled"
METRIC, MODE = "tunevision.metric", "tunevision.mode"
NOTE = "mlflow.note.content"  # the run's description in the MLflow UI (markdown)
NOTE_SHA = "tunevision.note_sha256"  # of the note we wrote last: a note a person edited since is left alone
VIEW_TAG = "mlflow.sharedViewState."  # + key: an experiment's saved runs-table view (MLflow 3.x UI)
DEFAULT_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default
FOLDER = "report"  # artifact folder of the search run
TOP = 10  # trials in the note and in the table printed after a search
CURVES = 5  # trials in the learning-curves plot


@dataclass(frozen=True)
class TrialRow:
    """One trial as MLflow holds it: its run, state and the search metric over its epochs."""

    name: str
    run_id: str
    trial_id: str
    status: str  # FINISHED, FAILED, RUNNING, KILLED
    best: float | None  # the best value of the metric over its epochs (what the search chose on)
    best_epoch: int | None
    epochs: int
    curve: tuple[tuple[int, float], ...]  # (epoch, metric value)
    params: dict[str, str]  # the sampled params, as MLflow stores them
    error: str = ""


@dataclass(frozen=True)
class SearchReport:
    """The trials of one search run, best first (trials without the metric last)."""

    experiment: str
    experiment_id: str
    run_id: str
    run_name: str
    metric: str
    mode: str
    trials: list[TrialRow]
    sampled: list[str]  # param names the searcher chose, in the order the space gives them
    chosen: str = ""  # trial id of the chosen trial, once the search has chosen
    sort_metric: str = ""  # what the UI sorts by: best_<metric>, or <metric> for trials that did not log it
    test: dict[str, float] = field(default_factory=dict)
    importances: dict[str, float] | None = None
    importances_note: str = ""  # why there are none

    def chosen_row(self) -> TrialRow | None:
        """The chosen trial, or the best so far while the search has not chosen."""
        return next((t for t in self.trials if t.trial_id == self.chosen), self.trials[0] if self.trials else None)


# --- reading --------------------------------------------------------------------------------------------------------

def _client(tracking_uri: str | None) -> tuple[Any, str]:
    import mlflow
    from mlflow import MlflowClient

    from tunevision.online import check_tracking_uri

    check_tracking_uri(tracking_uri)
    uri = tracking_uri or mlflow.get_tracking_uri()
    return MlflowClient(uri), uri


def find_search_run(client: Any, experiment: str, run_id: str | None = None) -> Any:
    """The search run `run_id` of `experiment`, or its newest one; a one-line error when there is none."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments(max_results=200) if e.name != "Default")
        raise TunevisionError(f"no experiment {experiment!r} in the MLflow store (there: {', '.join(names) or 'none'})")
    if run_id:
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise TunevisionError(f"--run {run_id}: no such MLflow run") from None
        if run.info.experiment_id != found.experiment_id or run.data.tags.get(ROLE) != "search":
            raise TunevisionError(f"--run {run_id}: not a search run of experiment {experiment!r}")
        return run
    runs = client.search_runs([found.experiment_id], f"tags.`{ROLE}` = 'search'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise TunevisionError(f"experiment {experiment!r} has no tunevision search run")
    return runs[0]


def _best(curve: list[tuple[int, float]], mode: str) -> tuple[float | None, int | None]:
    finite = [(e, v) for e, v in curve if not math.isnan(v)]
    if not finite:
        return None, None
    epoch, value = (max if mode == "max" else min)(finite, key=lambda p: p[1])
    return value, epoch


def _sampled(children: list[Any]) -> list[str]:
    """The params the searcher chose: from the trials' tags, else (older searches) those that differ between trials."""
    keys: list[str] = []
    for child in children:
        for key in json.loads(child.data.tags.get(SAMPLED, "[]")):
            if key not in keys:
                keys.append(key)
    if keys or not children:
        return keys
    names = sorted(set().union(*(c.data.params for c in children)))
    return [k for k in names if len({c.data.params.get(k) for c in children}) > 1]


def _param(params: Mapping[str, str], key: str) -> str | None:
    """A sampled param as one value: MLflow holds a dict drawn by `tune.choice` as `key.sub` params, joined here."""
    if key in params:
        return params[key]
    parts = {k[len(key) + 1:]: v for k, v in params.items() if k.startswith(f"{key}.")}
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(parts.items())) + "}" if parts else None


def collect(client: Any, search_run: Any) -> SearchReport:
    """Read the trials of `search_run` (an MLflow Run) and rank them by the search metric."""
    tags = search_run.data.tags
    metric, mode = tags.get(METRIC, "val_accuracy"), tags.get(MODE, "max")
    experiment_id = search_run.info.experiment_id
    children = client.search_runs(
        [experiment_id], f"tags.`{PARENT}` = '{search_run.info.run_id}' and tags.`{ROLE}` = 'trial'", max_results=10000
    )
    sampled = _sampled(children)
    rows = []
    for child in children:
        by_epoch = {m.step: m.value for m in client.get_metric_history(child.info.run_id, metric)}
        curve = sorted(by_epoch.items())
        best, best_epoch = _best(curve, mode)
        rows.append(TrialRow(
            name=child.info.run_name or child.info.run_id[:8], run_id=child.info.run_id,
            trial_id=child.data.tags.get("tunevision.trial_id", ""), status=child.info.status, best=best,
            best_epoch=best_epoch, epochs=max(by_epoch, default=0), curve=tuple(curve),
            params={k: v for k in sampled if (v := _param(child.data.params, k)) is not None},
            error=child.data.tags.get("tunevision.error", ""),
        ))
    sign, chosen = (-1 if mode == "max" else 1), tags.get("tunevision.best_trial_id", "")
    rows.sort(key=lambda r: (r.best is None, sign * (r.best or 0.0), r.trial_id != chosen, r.name))  # a tie: the chosen first
    experiment = client.get_experiment(experiment_id)
    report = SearchReport(
        experiment=experiment.name, experiment_id=experiment_id, run_id=search_run.info.run_id,
        run_name=search_run.info.run_name or "", metric=metric, mode=mode, trials=rows, sampled=sampled,
        chosen=chosen,
        test={k: v for k, v in search_run.data.metrics.items() if k.startswith("test_")},
        sort_metric=f"best_{metric}" if any(f"best_{metric}" in c.data.metrics for c in children) else metric,
    )
    importances, why = param_importances(report)
    return dataclasses.replace(report, importances=importances, importances_note=why)


# --- parameter importances ------------------------------------------------------------------------------------------

def _distribution(values: list[str]) -> tuple[Any, Callable[[str], Any]]:
    """An Optuna distribution for one param's observed values: numbers on a (log) range, else categories."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    try:
        numbers = [float(v) for v in values]
    except ValueError:
        numbers = []
    if numbers and all(math.isfinite(n) for n in numbers) and min(numbers) < max(numbers):
        low, high = min(numbers), max(numbers)
        return FloatDistribution(low, high, log=low > 0 and high / low >= 20), float  # lr-like ranges read in decades
    return CategoricalDistribution(sorted(set(values))), str


def study_of(report: SearchReport) -> Any:
    """An in-memory Optuna study of the trials that reported the metric: their sampled params and best value."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scored = [t for t in report.trials if t.best is not None and all(k in t.params for k in report.sampled)]
    converters = {}
    distributions = {}
    for key in report.sampled:
        distributions[key], converters[key] = _distribution([t.params[key] for t in scored])
    study = optuna.create_study(direction="maximize" if report.mode == "max" else "minimize")
    study.add_trials([
        optuna.trial.create_trial(params={k: converters[k](t.params[k]) for k in report.sampled},
                                  distributions=distributions, value=t.best, user_attrs={"name": t.name})
        for t in scored
    ])
    return study


def param_importances(report: SearchReport) -> tuple[dict[str, float] | None, str]:
    """Optuna's fANOVA importances of the sampled params for the metric, or None and the reason."""
    import optuna

    scored = [t for t in report.trials if t.best is not None]
    if not report.sampled:
        return None, "the space samples no parameter"
    if len(scored) < 2:
        return None, f"{len(scored)} trial(s) reported {report.metric}; importances need 2 or more"
    if len({t.best for t in scored}) == 1:  # fANOVA has no variance to share out
        return None, f"every trial reached the same {report.metric}"
    if all(len({t.params.get(k) for t in scored}) == 1 for k in report.sampled):
        return None, "every trial drew the same parameters"
    study = study_of(report)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {k: float(v) for k, v in importances.items()}, ""


# --- writing --------------------------------------------------------------------------------------------------------

def _value(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def table(report: SearchReport, top: int | None = None) -> str:
    """The trials as a text table, best first; the chosen one marked."""
    rows = report.trials[:top] if top else report.trials
    chosen = report.chosen_row()
    width = max([len("trial")] + [len(t.name) for t in rows])
    lines = [f"{'#':>3}  {'trial':<{width}}  {report.metric:>14}  {'epoch':>7}  status"]
    for rank, t in enumerate(rows, 1):
        epoch = f"{t.best_epoch}/{t.epochs}" if t.best_epoch is not None else f"-/{t.epochs}"
        mark = "  <- chosen" if chosen is not None and t.run_id == chosen.run_id and report.chosen else ""
        why = f" ({t.error[:80]})" if t.error else ""
        lines.append(f"{rank:>3}  {t.name:<{width}}  {_value(t.best):>14}  {epoch:>7}  {t.status}{why}{mark}")
    if top and len(report.trials) > top:
        lines.append(f"     ... {len(report.trials) - top} more (tunevision report {report.experiment} --run {report.run_id})")
    return "\n".join(lines)


def trials_csv(report: SearchReport) -> str:
    """The trials as CSV, best first: rank, name, ids, status, best metric and epoch, epochs, sampled params, error."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["rank", "trial", "run_id", "trial_id", "status", f"best_{report.metric}", "best_epoch", "epochs",
                     *report.sampled, "error", "chosen"])
    for rank, t in enumerate(report.trials, 1):
        writer.writerow([rank, t.name, t.run_id, t.trial_id, t.status, "" if t.best is None else repr(t.best),
                         "" if t.best_epoch is None else t.best_epoch, t.epochs, *(t.params.get(k, "") for k in report.sampled),
                         t.error, str(bool(report.chosen) and t.trial_id == report.chosen).lower()])
    return out.getvalue()


def importances_text(report: SearchReport) -> str:
    """One line: the sampled params by importance for the metric."""
    if report.importances is None:
        return f"parameter importances: none ({report.importances_note})"
    return "parameter importances (fANOVA, share of {} variance): {}".format(
        report.metric, ", ".join(f"{k} {v:.2f}" for k, v in report.importances.items()))


def _confusion(client: Any, report: SearchReport) -> tuple[dict[str, Any], str] | None:
    """The chosen trial's confusion matrix: its test split once tested, else its best validation epoch."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no download bar amid the report
    chosen = report.chosen_row()
    for run_id, name, split in ((report.run_id, "test/confusion_matrix.json", "test split"),
                                (chosen.run_id if chosen else None, "confusion_matrix.json", "validation, best epoch")):
        if run_id is None:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                return json.loads(Path(client.download_artifacts(run_id, name, tmp)).read_text()), split
            except Exception:  # not logged (yet): an unfinished search or a trial without a finished epoch
                continue
    return None


def confusion_text(cm: dict[str, Any]) -> str:
    """A confusion matrix as text: rows = true class, columns = predicted."""
    classes, matrix = [str(c) for c in cm["classes"]], cm["matrix"]
    width = max(6, *(len(c) for c in classes), *(len(str(v)) for row in matrix for v in row))
    lines = [" " * width + "  " + " ".join(f"{c:>{width}}" for c in classes) + "   <- predicted"]
    for c, row in zip(classes, matrix):
        lines.append(f"{c:>{width}}  " + " ".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def note(report: SearchReport, link: str = "") -> str:
    """The search run's description (markdown): the leaderboard of the top trials and the chosen one."""
    finished = sum(t.status == "FINISHED" for t in report.trials)
    failed = sum(t.status == "FAILED" for t in report.trials)
    chosen = report.chosen_row()
    head = f"**{len(report.trials)} trials** ({finished} finished, {failed} failed)."
    if chosen is not None and report.chosen:  # first: the part of the note MLflow shows before "Show more"
        shown = [k for k in ("test_accuracy", "test_balanced_accuracy", "test_macro_f1", "test_fnr", "test_fpr") if k in report.test]
        head += (f" Chosen: **{chosen.name}**, best validation {report.metric} {_value(chosen.best)} at epoch {chosen.best_epoch}"
                 + ("; tested once: " + ", ".join(f"{k} {report.test[k]:.4f}" for k in shown) if shown else "") + ".")
    lines = [head, "", f"Ranked by each trial's best validation `{report.metric}` ({report.mode}):", ""]
    lines += [f"| # | trial | best {report.metric} | epoch | status |", "|--:|:--|--:|--:|:--|"]
    for rank, t in enumerate(report.trials[:TOP], 1):
        name = f"**{t.name}** (chosen)" if report.chosen and t.trial_id == report.chosen else t.name
        epoch = f"{t.best_epoch}/{t.epochs}" if t.best_epoch is not None else f"-/{t.epochs}"
        lines.append(f"| {rank} | {name} | {_value(t.best)} | {epoch} | {t.status} |")
    if len(report.trials) > TOP:
        lines.append(f"\n{len(report.trials) - TOP} more in `{FOLDER}/trials.csv`.")
    lines += ["", importances_text(report) + "."]
    if link:
        lines += ["", f"[All trials of this search, sorted by {report.metric}]({link})"]
    lines += ["", f"Plots and the full table: artifacts `{FOLDER}/`."]
    return "\n".join(lines)


def write_files(report: SearchReport, confusion: tuple[dict[str, Any], str] | None, folder: Path) -> list[str]:
    """Write the report's files into `folder`; return their names."""
    from tunevision.plots import confusion_matrix_png, importances_png, learning_curves_png, parallel_coordinates_png

    (folder / "trials.csv").write_text(trials_csv(report))
    names = ["trials.csv"]
    if report.importances is not None:
        (folder / "param_importances.json").write_text(json.dumps(report.importances, indent=1))
        importances_png(report.importances, folder / "param_importances.png",
                        title=f"parameter importances for {report.metric} ({len(report.trials)} trials)")
        names += ["param_importances.json", "param_importances.png"]
    if report.sampled and sum(t.best is not None for t in report.trials) >= 2:
        parallel_coordinates_png(study_of(report), report.metric, folder / "parallel_coordinates.png",
                                 title=f"{report.metric} (best epoch) against the sampled parameters")
        names.append("parallel_coordinates.png")
    top = [t for t in report.trials if t.curve][:CURVES]
    if top:
        learning_curves_png([(t.name, t.curve, t.best_epoch) for t in top], report.metric, folder / "learning_curves.png",
                            title=f"{report.metric} per epoch, top {len(top)} trials (large dot: best epoch)")
        names.append("learning_curves.png")
    chosen = report.chosen_row()
    if confusion is not None and chosen is not None:
        cm, split = confusion
        confusion_matrix_png(cm["matrix"], cm["classes"], folder / "confusion_matrix.png", title=f"{chosen.name}, {split}")
        (folder / "confusion_matrix.json").write_text(json.dumps({**cm, "trial": chosen.name, "split": split}, indent=1))
        names += ["confusion_matrix.png", "confusion_matrix.json"]
    return names


# --- the MLflow UI --------------------------------------------------------------------------------------------------

def ui_address(tracking_uri: str) -> str:
    """The MLflow UI's address: the tracking server's own, else where `mlflow ui` serves by default."""
    if urllib.parse.urlsplit(tracking_uri).scheme in ("http", "https"):
        return tracking_uri.rstrip("/")
    return DEFAULT_UI


def ui_hint(tracking_uri: str) -> str:
    """How to start the UI the link needs, for a store with no server of its own; empty for a server."""
    if urllib.parse.urlsplit(tracking_uri).scheme in ("http", "https"):
        return ""
    uri = tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # relative to the folder the search ran in
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return f"start the UI first: mlflow ui --backend-store-uri {uri}"


def view_state(report: SearchReport) -> dict[str, Any]:
    """The runs-table view of MLflow 3.x's UI for this search: its trials only, sorted, metric and param columns."""
    sort_key = f"metrics.`{report.sort_metric or report.metric}`"
    columns = list(dict.fromkeys([sort_key, f"metrics.`{report.metric}`", "metrics.`best_epoch`",
                                  *(f"params.`{k}`" for k in report.sampled), "metrics.`val_loss`"]))
    return {
        "searchFilter": f"tags.{PARENT} = '{report.run_id}'",
        "orderByKey": sort_key,
        "orderByAsc": report.mode == "min",
        "selectedColumns": columns,
        "columnOrder": columns,  # the UI sizes only the columns it orders: metrics first, wide enough for their digits
        "columnWidths": {c: 100 if c.endswith("`best_epoch`") else 150 if c.startswith("metrics.") else 120 for c in columns},
    }


def trials_link(client: Any, tracking_uri: str, report: SearchReport) -> str:
    """Save this search's view on its experiment and return the UI link that opens it.

    The view opens the "Model training" runs page (`workflowType`) with this search's trials unfolded (a filter on
    their parent run), sorted by the metric, its columns in view. Where the view cannot be saved, the link carries
    the filter and sort itself (`searchFilter`, `orderByKey`, `orderByAsc`; the UI then shows no metric columns).
    """
    from mlflow.exceptions import MlflowException

    state = view_state(report)
    base = f"{ui_address(tracking_uri)}/#/experiments/{report.experiment_id}/runs?workflowType=machine_learning"
    now = int(time.time() * 1000)
    envelope = {"name": f"{report.run_name or report.run_id[:8]}: {len(report.trials)} trials by {report.metric}",
                "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    try:
        client.set_experiment_tag(report.experiment_id, VIEW_TAG + report.run_id, json.dumps(envelope))
    except MlflowException:  # a store that refuses experiment tags (permissions)
        return facets_link(tracking_uri, report)
    return f"{base}&viewStateShareKey={report.run_id}"


def facets_link(tracking_uri: str, report: SearchReport) -> str:
    """The UI link that carries this search's filter and sort itself: its trials, best first, no columns chosen."""
    state = view_state(report)
    facets = {"searchFilter": state["searchFilter"], "orderByKey": state["orderByKey"],
              "orderByAsc": str(state["orderByAsc"]).lower()}
    return (f"{ui_address(tracking_uri)}/#/experiments/{report.experiment_id}/runs?workflowType=machine_learning"
            f"&{urllib.parse.urlencode(facets, quote_via=urllib.parse.quote)}")


# --- the whole report -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Published:
    """A report as written to the search run."""

    report: SearchReport
    link: str
    files: list[str]
    confusion: tuple[dict[str, Any], str] | None


def publish(client: Any, tracking_uri: str, search_run: Any) -> Published:
    """Build the report of `search_run`, log it as artifacts under `report/`, set the run's note, save the UI view."""
    report = collect(client, search_run)
    link = trials_link(client, tracking_uri, report)
    confusion = _confusion(client, report)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(report, confusion, Path(tmp))
        client.log_artifacts(report.run_id, tmp, FOLDER)
    _set_note(client, search_run, note(report, link))
    return Published(report, link, files, confusion)


def _set_note(client: Any, search_run: Any, text: str) -> None:
    """Write the search run's description, unless a person has edited the one we wrote before."""
    import hashlib

    def digest(note: str) -> str:
        return hashlib.sha256(note.encode()).hexdigest()

    tags = search_run.data.tags
    if NOTE in tags and tags.get(NOTE_SHA) != digest(tags[NOTE]):
        return
    client.set_tag(search_run.info.run_id, NOTE, text)
    client.set_tag(search_run.info.run_id, NOTE_SHA, digest(text))


def after_search(search_run: Any, log: Callable[[str], None]) -> str:
    """Publish the report of a search that just ended (a tracking.SearchRun) and show its top trials; return the UI link."""
    client = search_run.client
    published = publish(client, search_run.tracking_uri, client.get_run(search_run.run_id))
    log(table(published.report, top=TOP))
    log(importances_text(published.report))
    log(f"report: {', '.join(published.files)} under {FOLDER}/ of the search run; again any time: "
        f"tunevision report {published.report.experiment}")
    return published.link


def run_report(experiment: str, run_id: str | None, tracking_uri: str | None, csv_path: Path | None,
               out: Callable[[str], None] = print) -> Published:
    """`tunevision report`: the trials of a search, best first, in the terminal (and CSV), logged to its run."""
    client, uri = _client(tracking_uri)
    published = publish(client, uri, find_search_run(client, experiment, run_id))
    report = published.report
    out(f"experiment {report.experiment}, search run {report.run_id} ({report.run_name}): {len(report.trials)} trials, "
        f"ranked by best validation {report.metric} ({report.mode})")
    out(table(report))
    out(importances_text(report))
    if published.confusion is not None:
        cm, split = published.confusion
        out(f"confusion matrix of {report.chosen_row().name} ({split}):")
        out(confusion_text(cm))
    if csv_path is not None:
        csv_path.write_text(trials_csv(report))
        out(f"CSV: {csv_path}")
    out(f"logged: {', '.join(published.files)} under {FOLDER}/ of the search run")
    out(f"compare the trials in MLflow: {published.link}")
    hint = ui_hint(uri)
    if hint:
        out(f"({hint})")
    return published

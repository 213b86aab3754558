"""A search as a user meets it: live progress instead of Ray's tables, the report, and the printed MLflow link
opened in a real browser (headless Chromium) against an `mlflow server` started here on 127.0.0.1.

The browser test reads the page the MLflow app rendered (the DOM after it loaded, not the REST API) and keeps
two screenshots: in the folder named by TUNEVISION_SCREENSHOTS (the README's come from
`TUNEVISION_SCREENSHOTS=docs pytest tests/test_mlflow_ui.py`), else in the test's temporary folder.
`.ci/run` installs Debian's chromium; without it the browser test skips.
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fakes import stop_process_group, wait_until_answering
from tunevision.cli import main

SEARCH = '''
from ray import tune
import tunevision
search = tunevision.Search(
    name="digits-ui",
    data=tunevision.Digits(),
    space={"backbone": "cnn", "cnn": {"channels": [16, 32], "kernel_size": 3}, "image_size": 16,
           "lr": tune.loguniform(3e-4, 1e-2), "batch_size": tune.choice([32, 64])},
    trials=3,
    max_epochs=2,
)
'''
TRIAL_NAME = re.compile(r"^t0[1-3] lr=\d\.\de-[34] bs=(32|64)$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(folder: Path):
    """`mlflow server` on 127.0.0.1 over a SQLite store in `folder`; yields its URI."""
    port, log = free_port(), folder / "server.log"
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{uri}/health", server, log, 120, "mlflow server")
        yield uri
    finally:
        stop_process_group(server)


@dataclass
class Searched:
    uri: str  # the tracking server
    run_id: str  # the search run
    output: str  # what `tunevision search` printed
    link: str  # the link it printed
    folder: Path


@pytest.fixture(scope="module")
def searched(tmp_path_factory, ray_session) -> Searched:
    """One real search (3 trials of 2 epochs on scikit-learn's digits) run with `tunevision search` against an
    `mlflow server` (SQLite store)."""
    from mlflow.tracking._tracking_service import utils

    folder = tmp_path_factory.mktemp("ui")
    search_file = folder / "digits_ui.py"
    search_file.write_text(SEARCH)
    kept_uri = getattr(utils, "_tracking_uri", None)  # the search sets MLflow's URI process-wide
    with mlflow_server(folder) as uri, pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNEVISION_CACHE", str(folder / "cache"))
        printed = io.StringIO()
        started = time.monotonic()
        with contextlib.redirect_stdout(printed):
            code = main(["search", str(search_file), "--tracking-uri", uri, "--storage", str(folder / "ray")])
        output = printed.getvalue()
        print(f"server up, then search in {time.monotonic() - started:.0f} s")
        assert code == 0, output[-3000:]
        link = re.search(r"^compare the trials in MLflow: (\S+)$", output, re.M).group(1)
        run_id = re.search(r"MLflow parent run: (\w+)", output).group(1)
        yield Searched(uri, run_id, output, link, folder)
    utils._tracking_uri = kept_uri


def trial_runs(searched: Searched) -> list:
    client = MlflowClient(searched.uri)
    experiment_id = client.get_run(searched.run_id).info.experiment_id
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{searched.run_id}'")


@pytest.mark.slow
def test_search_shows_live_progress_and_a_report_instead_of_ray_tables(searched):
    lines = searched.output.splitlines()
    assert not [line for line in lines if "Trial status" in line or "│" in line or "View detailed results" in line]
    status = [line for line in lines if line.startswith("trials ")]
    assert status[-1].startswith("trials 3/3 done, 0 running, 0 pending, 0 failed |")
    assert re.search(r"\| best: t0[1-3] lr=\S+ bs=\d+ \| val_accuracy \d\.\d{4} at epoch [12]$", status[-1])
    assert len([line for line in lines if " finished: val_accuracy " in line]) == 3
    assert "parameter importances" in searched.output and "<- chosen" in searched.output
    assert searched.link.startswith(f"{searched.uri}/#/experiments/")  # the tracking server's own address
    assert len(lines) < 60, searched.output  # was ~200 for 3 trials with Ray's tables


@pytest.mark.slow
def test_search_names_trials_notes_the_leaderboard_and_logs_the_report(searched):
    runs = trial_runs(searched)
    assert len(runs) == 3 and all(TRIAL_NAME.match(r.info.run_name) for r in runs), [r.info.run_name for r in runs]
    client = MlflowClient(searched.uri)
    note = client.get_run(searched.run_id).data.tags["mlflow.note.content"]
    chosen = client.get_run(searched.run_id).data.tags["tunevision.best_trial_id"]
    best = next(r for r in runs if r.data.tags["tunevision.trial_id"] == chosen)
    assert best.data.metrics["best_val_accuracy"] == max(r.data.metrics["best_val_accuracy"] for r in runs)
    assert f"| 1 | **{best.info.run_name}** (chosen) |" in note
    logged = {Path(f.path).name for f in client.list_artifacts(searched.run_id, "report")}
    assert {"trials.csv", "parallel_coordinates.png", "learning_curves.png", "confusion_matrix.png"} <= logged


@pytest.mark.slow
def test_report_reads_a_remote_tracking_server(searched, tmp_path, capsys):
    assert main(["report", "digits-ui", "--tracking-uri", searched.uri, "--csv", str(tmp_path / "digits.csv")]) == 0
    out = capsys.readouterr().out
    assert f"compare the trials in MLflow: {searched.link}" in out
    rows = list(csv.DictReader((tmp_path / "digits.csv").open()))
    values = [float(r["best_val_accuracy"]) for r in rows]
    assert len(rows) == 3 and values == sorted(values, reverse=True)
    assert {r["run_id"] for r in rows} == {r.info.run_id for r in trial_runs(searched)}


class Cells(HTMLParser):
    """The runs table as the MLflow app rendered it: row id (the run id) -> {column id: text}, and row order."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.order: dict[str, int] = {}
        self._row: str | None = None
        self._cell: str | None = None
        self._depth = 0  # open elements inside the current cell

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if a.get("role") == "row" and a.get("row-id"):
            self._row = a["row-id"]
            self.rows.setdefault(self._row, {})
            self.order[self._row] = int(a.get("row-index", -1))
        elif a.get("role") == "gridcell" and self._row and a.get("col-id"):
            self._cell, self._depth = a["col-id"], 0
            self.rows[self._row][self._cell] = ""
        elif self._cell:
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self._cell:
            if self._depth == 0:
                self._cell = None
            else:
                self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._row and self._cell:
            self.rows[self._row][self._cell] += data


def chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def browse(url: str, profile: Path, *args: str, budget_ms: int = 15000, window: str = "1920,1080") -> str:
    """Load `url` in headless Chromium with a fresh profile (a browser that never chose a view) and return stdout."""
    command = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               f"--user-data-dir={profile}", f"--window-size={window}", f"--virtual-time-budget={budget_ms}", *args, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_printed_link_opens_the_model_training_view_listing_every_trial_with_its_accuracy(searched, tmp_path):
    runs = {r.info.run_id: r for r in trial_runs(searched)}
    for budget in (15000, 40000):  # a loaded machine may need more time for the app to fetch the runs
        table = Cells()
        table.feed(browse(searched.link, tmp_path / f"profile-{budget}", "--dump-dom", budget_ms=budget))
        if set(runs) <= set(table.rows):
            break
    assert set(table.rows) == set(runs), "the view lists exactly this search's trials"
    for run_id, run in runs.items():
        cells = table.rows[run_id]
        assert cells["attributes.`Run Name`"].endswith(run.info.run_name)  # after the run's colour swatch
        assert float(cells["metrics.`val_accuracy`"]) == pytest.approx(run.data.metrics["val_accuracy"])
        assert float(cells["metrics.`best_val_accuracy`"]) == pytest.approx(run.data.metrics["best_val_accuracy"])
    shown = sorted(runs, key=lambda run_id: table.order[run_id])
    best = [runs[r].data.metrics["best_val_accuracy"] for r in shown]
    assert best == sorted(best, reverse=True), "sorted by the metric, best first"

    shots = Path(os.environ.get("TUNEVISION_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    browse(searched.link, tmp_path / "profile-shot", f"--screenshot={shots / 'mlflow_trials.png'}", budget_ms=20000)
    experiment_id = re.search(r"#/experiments/(\w+)/", searched.link).group(1)
    run_page = f"{searched.uri}/#/experiments/{experiment_id}/runs/{searched.run_id}"
    browse(f"{run_page}?workflowType=machine_learning", tmp_path / "profile-run",
           f"--screenshot={shots / 'mlflow_search_run.png'}", budget_ms=20000, window="1920,1400")
    browse(f"{run_page}/artifacts/report/parallel_coordinates.png?workflowType=machine_learning", tmp_path / "profile-art",
           f"--screenshot={shots / 'mlflow_report.png'}", budget_ms=20000)
    for name in ("mlflow_trials.png", "mlflow_search_run.png", "mlflow_report.png"):
        assert (shots / name).stat().st_size > 20_000, name

"""A shared tracking server: `mlflow server` on PostgreSQL with an artifact root on disk, two searches at once,
and a tracking URI with no MLflow server behind it failing within 5 seconds, before Ray or any trial starts.

The server fixture starts Debian's PostgreSQL (initdb + pg_ctl in a temporary folder, on 127.0.0.1 and a
free port; as the `postgres` user when the tests run as root, since postgres refuses root) and
`mlflow server` from this venv on it. `.ci/run` installs the postgresql package; without it those tests skip.
"""
from __future__ import annotations

import glob
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fakes import stop_process_group, wait_until_answering, write_pattern_images
from tunevision.cli import main

SEARCH = '''
import tunevision
search = tunevision.Search(
    name="shared",
    data=tunevision.ImageFolder("{root}"),
    space={{"backbone": "cnn", "weights": None, "image_size": 24, "lr": 0.005, "batch_size": 16}},
    trials=2,
    max_epochs=2,
    positive_class="dog",
)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    """The folder of Debian's newest PostgreSQL server binaries (or initdb on PATH), None when absent."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3].split(".")[0]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and Path(initdb).with_name("pg_ctl").exists() else None


def server_missing() -> str | None:
    """Why the shared tracking server cannot be started here, or None."""
    if postgres_bin() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql (.ci/run does)"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no `postgres` user to run PostgreSQL as"
        if not shutil.which("runuser"):
            return "running as root and no runuser to run PostgreSQL as the postgres user"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is missing: pip install -e '.[test]'"
    return None


@dataclass
class TrackingServer:
    uri: str  # http://127.0.0.1:PORT
    backend: str  # the PostgreSQL database behind it (SQLAlchemy URI)
    artifacts: Path  # --artifacts-destination
    log: Path


def _run(command: list[str], **kwargs) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {(done.stdout + done.stderr)[-2000:]}")


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory):
    """PostgreSQL + `mlflow server` (artifacts proxied to a folder) on 127.0.0.1; yields a TrackingServer."""
    reason = server_missing()
    if reason:
        pytest.skip(reason)
    bin_dir = postgres_bin()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    base = Path(tempfile.mkdtemp(prefix="tunevision-pg-"))  # pytest's root-only temp folders would lock postgres out
    if as_postgres:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
    data, pg_port = base / "data", free_port()
    server = None
    started_pg = False
    try:
        _run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
              "--locale=C", "--no-sync"])
        _run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "postgres.log"), "-w", "-t", "60",
              "-o", f"-h 127.0.0.1 -p {pg_port} -k {base} -F", "start"])
        started_pg = True
        _run([*as_postgres, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", "postgres", "mlflow"])

        # psycopg2 named explicitly: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
        backend = f"postgresql+psycopg2://postgres@127.0.0.1:{pg_port}/mlflow"
        artifacts = tmp_path_factory.mktemp("mlflow-artifacts")
        port, log = free_port(), tmp_path_factory.mktemp("mlflow-server") / "server.log"
        command = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", backend,
                   "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner processes on 2 cores
        with open(log, "wb") as out:
            server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        uri = f"http://127.0.0.1:{port}"
        wait_until_answering(f"{uri}/health", server, log, 180, "mlflow server")
        yield TrackingServer(uri, backend, artifacts, log)
    finally:
        if server is not None and server.poll() is None:
            stop_process_group(server)
        if started_pg:
            subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def keep_tracking_uri(monkeypatch: pytest.MonkeyPatch):
    """Undo the process-wide tracking URI that `search` and `predict` set, so later tests see MLflow's default."""
    from mlflow.tracking._tracking_service import utils

    if hasattr(utils, "_tracking_uri"):
        monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)


@pytest.fixture
def shared_search(tmp_path: Path) -> Path:
    images = write_pattern_images(tmp_path / "images")
    path = tmp_path / "shared.py"
    path.write_text(SEARCH.format(root=images))
    return path


def runs_of(client, name: str) -> list:
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, f"no experiment {name}"
    return client.search_runs([experiment.experiment_id], max_results=1000)


# --- 1. The whole MLflow contract over the server ----------------------------------------------------------------

@pytest.mark.slow
def test_search_against_a_postgres_backed_tracking_server_keeps_the_mlflow_contract(
    tracking_server, shared_search, tmp_path, ray_session, cache_dir, keep_tracking_uri, capsys
):
    from mlflow import MlflowClient

    uri = tracking_server.uri
    assert main(["search", str(shared_search), "--tracking-uri", uri, "--storage", str(tmp_path / "ray"),
                 "--name", "shared-contract"]) == 0
    out = capsys.readouterr().out
    assert "model: models:/shared-contract/1" in out

    client = MlflowClient(uri)
    runs = runs_of(client, "shared-contract")
    parents = [r for r in runs if r.data.tags.get("tunevision.role") == "search"]
    children = [r for r in runs if r.data.tags.get("tunevision.role") == "trial"]
    assert len(parents) == 1 and len(children) == 2 and len(runs) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert len({c.data.tags["tunevision.trial_id"] for c in children}) == 2
    # Artifacts go through the server's proxy, never straight to a folder the client would need to see.
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs)

    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy")]
        assert steps and steps == list(range(1, len(steps) + 1))  # every epoch once, no gap
        assert {"train_loss", "val_loss", "val_accuracy", "val_recall.dog"} <= set(child.data.metrics)
        cm = json.loads(Path(client.download_artifacts(child.info.run_id, "confusion_matrix.json", str(tmp_path))).read_text())
        assert cm["classes"] == ["cat", "dog"] and len(cm["matrix"]) == 2

    parent_files = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"shared.py", "data_report.txt", "manifest.csv"} <= parent_files
    assert "split" in Path(client.download_artifacts(parent.info.run_id, "manifest.csv", str(tmp_path))).read_text()
    assert {"test_accuracy", "test_fnr", "test_fpr"} <= set(parent.data.metrics)

    # The model: a logged model named "model" whose source is the parent run, registered as version 1.
    experiment_id = client.get_experiment_by_name("shared-contract").experiment_id
    logged = client.search_logged_models([experiment_id], f"source_run_id = '{parent.info.run_id}'")
    assert [m.name for m in logged] == ["model"]
    assert [o.model_id for o in client.get_run(parent.info.run_id).outputs.model_outputs] == [logged[0].model_id]
    versions = client.search_model_versions("name='shared-contract'")
    assert [(str(v.version), v.run_id, v.source) for v in versions] == [("1", parent.info.run_id, f"models:/{logged[0].model_id}")]

    # What the client sent is on the server's disk and in PostgreSQL, not on the client's side.
    assert list(tracking_server.artifacts.rglob("confusion_matrix.json"))
    import psycopg2

    with psycopg2.connect(tracking_server.backend.replace("postgresql+psycopg2", "postgresql")) as db, db.cursor() as cur:
        cur.execute("select count(*) from runs r join experiments e using (experiment_id) where e.name = %s",
                    ("shared-contract",))
        assert cur.fetchone()[0] == 3

    # Predict, through the server, names the right class of images it never saw (fresh ones, same patterns).
    images = sorted(write_pattern_images(tmp_path / "unseen", per_class=3, seed=7).glob("*/*.png"))
    assert main(["predict", "models:/shared-contract/1", *map(str, images), "--tracking-uri", uri]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert [(path, label) for path, label, _ in lines] == [(str(image), image.parent.name) for image in images], lines
    assert all(0.5 < float(prob) <= 1.0 for _, _, prob in lines)


# --- 2. Two searches at once against the same server -----------------------------------------------------------------

@pytest.mark.slow
def test_two_searches_at_once_against_one_server_keep_their_runs_apart(tracking_server, shared_search, tmp_path):
    from mlflow import MlflowClient

    tunevision = str(Path(sys.executable).with_name("tunevision"))
    names, procs = ("shared-a", "shared-b"), {}
    for name in names:
        folder = tmp_path / name
        folder.mkdir()
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "TUNEVISION_OFFLINE": "1",
               "TUNEVISION_CACHE": str(folder / "cache")}
        env.pop("RAY_ADDRESS", None)
        out, err = open(folder / "stdout", "w"), open(folder / "stderr", "w")
        procs[name] = (subprocess.Popen(
            [tunevision, "search", str(shared_search), "--name", name, "--trials", "2", "--max-epochs", "1",
             "--cpus-per-trial", "1", "--tracking-uri", tracking_server.uri, "--storage", str(folder / "ray")],
            cwd=folder, env=env, stdout=out, stderr=err,
        ), out, err)
    try:
        for name, (proc, out, err) in procs.items():
            proc.wait(timeout=400)
    finally:
        for name, (proc, out, err) in procs.items():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
            err.close()
    for name, (proc, _, _) in procs.items():
        assert proc.returncode == 0, f"{name}: {(tmp_path / name / 'stderr').read_text()[-3000:]}"
        assert f"model: models:/{name}/1" in (tmp_path / name / "stdout").read_text()

    client = MlflowClient(tracking_server.uri)
    parent_of = {}
    for name in names:
        runs = runs_of(client, name)
        parents = [r for r in runs if r.data.tags.get("tunevision.role") == "search"]
        assert len(parents) == 1 and len(runs) == 3, f"{name}: {[r.data.tags.get('tunevision.role') for r in runs]}"
        parent_of[name] = parents[0].info.run_id
        children = [r for r in runs if r.data.tags.get("tunevision.role") == "trial"]
        assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent_of[name]}
        assert len({c.data.tags["tunevision.trial_id"] for c in children}) == 2
    # No run anywhere on the server hangs under the other search's parent.
    everything = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    for name in names:
        under = {r.info.experiment_id for r in everything if r.data.tags.get("mlflow.parentRunId") == parent_of[name]}
        assert under == {client.get_experiment_by_name(name).experiment_id}
    for name in names:
        versions = client.search_model_versions(f"name='{name}'")
        assert [v.version for v in versions] == ["1"] and versions[0].run_id == parent_of[name]


# --- 3. No MLflow server at the URI: fail within 5 s, before Ray or any trial ----------------------------------------

@pytest.fixture
def not_mlflow(tmp_path: Path):
    """A plain HTTP server on 127.0.0.1 that answers 404 to MLflow's REST paths."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent():
    """A socket on 127.0.0.1 that takes connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["refused", "not-mlflow", "silent"])
def test_a_tracking_uri_without_an_mlflow_server_fails_within_5_seconds_before_ray(
    kind, request, shared_search, tmp_path, cache_dir, monkeypatch, capsys
):
    import ray
    import ray.tune

    # What a search imports (torch, torchvision, mlflow, Ray Tune) takes longer than 5 s on a small machine: pay it
    # before the clock starts, so the clock times loading the search file and data, and asking the tracking URI.
    import tunevision.data  # noqa: F401
    import tunevision.tracking  # noqa: F401
    import tunevision.trial  # noqa: F401
    import tunevision.tuner  # noqa: F401
    from tunevision.search import load_search_file

    uri = {"refused": lambda: f"http://127.0.0.1:{free_port()}",  # nothing listens on a port just freed
           "not-mlflow": lambda: request.getfixturevalue("not_mlflow"),
           "silent": lambda: request.getfixturevalue("silent")}[kind]()
    load_search_file(shared_search)
    started = []
    monkeypatch.setattr(ray, "init", lambda *a, **k: started.append("ray.init"))
    monkeypatch.setattr(ray.tune, "Tuner", lambda *a, **k: started.append("Tuner"))
    capsys.readouterr()

    t0 = time.monotonic()
    code = main(["search", str(shared_search), "--tracking-uri", uri, "--storage", str(tmp_path / "ray")])
    elapsed = time.monotonic() - t0

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("tunevision: error: ") and uri in err[0], err
    assert elapsed < 5.0, f"{kind}: took {elapsed:.1f} s"
    assert started == []

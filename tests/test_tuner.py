"""A real search end to end: Ray Tune + Optuna + ASHA, Lightning trials, MLflow records, registry, predict."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from fakes import write_pattern_images
from tunevision.cli import main
from tunevision.search import load_search_file
from tunevision.tuner import RunOptions, run

SEARCH = '''
from ray import tune
import tunevision
search = tunevision.Search(
    name="tiny",
    data=tunevision.ImageFolder("{root}"),
    space={{
        "backbone": tune.choice(["cnn", "resnet18"]),
        "weights": None,
        "image_size": 24,
        "lr": tune.loguniform(1e-3, 1e-2),
        "batch_size": 16,
    }},
    trials=4,
    max_epochs=2,
    positive_class="dog",
)
'''

EPOCH_METRICS = {"train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_fnr",
                 "val_fpr", "trainable_params", "total_params"}
PER_CLASS = {f"{m}.{c}" for m in ("val_precision", "val_recall", "val_f1") for c in ("cat", "dog")}
CM = {f"val_cm.{t}.{p}" for t in ("cat", "dog") for p in ("cat", "dog")}


@pytest.fixture
def tiny_search(tmp_path: Path, pattern_folder: Path) -> Path:
    path = tmp_path / "tiny.py"
    path.write_text(SEARCH.format(root=pattern_folder))
    return path


def artifacts(client: MlflowClient, run_id: str, folder: str | None = None) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id, folder)}


@pytest.mark.slow
def test_four_trial_search_records_the_mlflow_contract_and_registers_a_model_that_predicts(
    tmp_path, tiny_search, pattern_folder, mlflow_uri, ray_session, cache_dir, capsys
):
    search = load_search_file(tiny_search)
    outcome = run(search, RunOptions(tiny_search, tracking_uri=mlflow_uri, storage=str(tmp_path / "ray")))
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("tunevision.role") == "search"]
    children = [r for r in runs if r.data.tags.get("tunevision.role") == "trial"]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.run_id == outcome.parent_run_id and parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert len({c.data.tags["tunevision.trial_id"] for c in children}) == 4

    manifest = pd.read_csv(client.download_artifacts(parent.info.run_id, "manifest.csv"))
    n_val, n_test = (manifest["split"] == "val").sum(), (manifest["split"] == "test").sum()
    for child in children:
        assert EPOCH_METRICS | PER_CLASS | CM <= set(child.data.metrics)
        assert {"backbone", "lr", "image_size"} <= set(child.data.params)
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        steps = [m.step for m in history]
        assert steps == list(range(1, len(steps) + 1))  # every epoch once, no gap
        for step in steps:
            cells = [m.value for name in CM for m in client.get_metric_history(child.info.run_id, name) if m.step == step]
            assert sum(cells) == n_val
        assert {"confusion_matrix.png", "confusion_matrix.json"} <= artifacts(client, child.info.run_id)
        assert child.data.metrics["total_params"] >= child.data.metrics["trainable_params"] > 0
        whole = {"cnn": "off: backbone trains", "resnet18": "off: backbone trains from its first stage"}  # both train whole
        assert child.data.tags["tunevision.feature_cache"] == whole[child.data.params["backbone"]]

    # The parent: search file, data report, manifest, best config, test figures named like val ones.
    assert {"tiny.py", "data_report.txt", "manifest.csv", "test"} <= artifacts(client, parent.info.run_id)
    assert {"test/confusion_matrix.png", "test/confusion_matrix.json"} <= artifacts(client, parent.info.run_id, "test")
    test_cells = [v for k, v in parent.data.metrics.items() if k.startswith("test_cm.")]
    assert len(test_cells) == 4 and sum(test_cells) == n_test
    assert {"test_accuracy", "test_fnr", "test_fpr", "test_recall.dog"} <= set(parent.data.metrics)
    assert parent.data.params["backbone"] == str(outcome.best_config["backbone"])
    best = next(c for c in children if c.data.tags["tunevision.trial_id"] == outcome.best_trial_id)
    assert best.data.params["lr"] == parent.data.params["lr"]

    # The model: a logged model named "model" whose source is the parent run (MLflow 3 keeps it apart from the
    # run's artifacts), listed in the run's outputs, registered under the search's name as version 1.
    logged = client.search_logged_models([experiment.experiment_id], f"source_run_id = '{parent.info.run_id}'")
    assert [m.name for m in logged] == ["model"]
    assert [o.model_id for o in client.get_run(parent.info.run_id).outputs.model_outputs] == [logged[0].model_id]
    assert "MLmodel" in {f.path for f in client.list_logged_model_artifacts(logged[0].model_id)}
    versions = client.search_model_versions("name='tiny'")
    assert [(str(v.version), v.run_id, v.source) for v in versions] == [("1", parent.info.run_id, f"models:/{logged[0].model_id}")]
    assert outcome.model_uri == "models:/tiny/1"

    # Predict names the right class of images it never saw, written fresh with the same learnable patterns.
    unseen = write_pattern_images(tmp_path / "unseen", per_class=4, seed=7)
    images = sorted(unseen.glob("*/*.png"))
    capsys.readouterr()
    assert main(["predict", outcome.model_uri, *map(str, images), "--tracking-uri", mlflow_uri]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert [(path, label) for path, label, _ in lines] == [(str(image), image.parent.name) for image in images], lines
    assert all(0.5 < float(prob) <= 1.0 for _, _, prob in lines)


@pytest.mark.slow
@pytest.mark.skipif(not __import__("cluster").can_make_namespaces(), reason="needs root and iproute2 for network namespaces")
def test_search_runs_on_an_existing_two_node_cluster_given_address(tmp_path, tiny_search, cache_dir):
    from cluster import NetnsCluster

    cluster = NetnsCluster(prefix="tvt")
    try:
        cluster.start(workers=1, cpus=1)
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        tunevision = str(Path(sys.executable).with_name("tunevision"))
        result = cluster.driver(
            [tunevision, "search", str(tiny_search), "--address", cluster.address, "--trials", "2", "--max-epochs", "1",
             "--tracking-uri", uri, "--storage", str(tmp_path / "storage"), "--name", "tiny-cluster"],
            cwd=tmp_path, timeout=400,
        )
    finally:
        cluster.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test (once, chosen model): test_accuracy=" in result.stdout
    # The driver's progress works the same on a cluster: plain lines through a pipe, no Ray tables.
    assert "trials 2/2 done, 0 running, 0 pending, 0 failed |" in result.stdout and "Trial status" not in result.stdout
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny-cluster").experiment_id])
    assert sorted(r.data.tags["tunevision.role"] for r in runs) == ["search", "trial", "trial"]


CLUSTER_SCRIPT = """
import sys, threading, time
import ray, tunevision
from ray.cluster_utils import Cluster
from tunevision.cli import main
from tunevision.errors import TunevisionError
from tunevision.tuner import _check_resources

cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1, "object_store_memory": 100 * 2**20}})
ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")

code = main(["search", {search!r}, "--address", cluster.address, "--gpus-per-trial", "1", "--resource-wait", "3",
             "--tracking-uri", {uri!r}, "--storage", {storage!r}])
print("exit", code, flush=True)

def check(cpus, wait):
    try:
        _check_resources(tunevision.Search(name="w", data=tunevision.Digits(), cpus_per_trial=cpus), cluster.address,
                         lambda line: print(line, flush=True), wait)
        print("holds", flush=True)
    except TunevisionError as e:
        print("error:", e, flush=True)

check(4, 0)
waiting = threading.Thread(target=check, args=(2, 120))
waiting.start()
time.sleep(2)
print("adding", flush=True)
cluster.add_node(num_cpus=2, object_store_memory=100 * 2**20)
waiting.join()
check(3, 0)
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.slow
def test_on_a_cluster_no_node_can_hold_a_trial_stops_after_resource_wait_and_a_joining_node_ends_the_wait(
    tiny_search, tmp_path
):
    import os
    import subprocess
    import threading
    import time

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = CLUSTER_SCRIPT.format(search=str(tiny_search), uri=uri, storage=str(tmp_path / "ray"))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": __import__("secrets").token_hex(16),
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "TUNEVISION_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)  # a real multi-node Ray (GCS + one raylet per node) on loopback, token auth on
    with open(tmp_path / "stderr", "w") as err_file:
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=err_file, text=True)
        timer = threading.Timer(300, proc.kill)  # a hang fails the test instead of stalling the suite
        timer.start()
        try:
            lines = [(time.monotonic(), line.strip()) for line in proc.stdout if line.strip()]  # stamped as they arrive
            code = proc.wait(timeout=60)
        finally:
            timer.cancel()
    stderr = (tmp_path / "stderr").read_text()
    assert code == 0, stderr[-3000:]
    text = [line for _, line in lines]

    def at(start: str, after: int = 0) -> tuple[int, float]:
        i = next(i for i, line in enumerate(text) if i >= after and line.startswith(start))
        return i, lines[i][0]

    # The CLI: --gpus-per-trial 1 on a node of 1 CPU and no GPU: waits 3 s, then exit 2 with one line; no MLflow run.
    waits, waited_at = at("no Ray node can hold a trial of 1 CPU + 1 GPU yet: waiting up to 3 s (--resource-wait)")
    exits, exited_at = at("exit ")
    assert text[exits] == "exit 2" and exits > waits and 3 <= exited_at - waited_at < 15, lines
    err = stderr.strip().splitlines()
    assert (f"tunevision: error: {tiny_search}: --gpus-per-trial 1: no Ray node can hold a trial of 1 CPU + 1 GPU after --resource-wait 3 s "
            "(nodes: 1 x 1 CPU 0 GPU); lower --gpus-per-trial, add such a node, or wait longer with --resource-wait") in err
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []

    after = text[exits + 1:]
    # 4 CPUs, no wait: at once, the only node has 1.
    assert after[0].startswith("error: --cpus-per-trial 4: no Ray node can hold a trial of 4 CPU + 0 GPU after "
                               "--resource-wait 0 s (nodes: 1 x 1 CPU 0 GPU)"), after
    # 2 CPUs: waits until a node of 2 CPUs joins (cluster_utils returns once it is registered), not much longer.
    assert "waiting up to 120 s (--resource-wait)" in after[1] and after[2:4] == ["adding", "holds"], after
    assert at("holds", exits)[1] - at("adding", exits)[1] < 20, lines
    # 3 CPUs: the cluster has 3 in all, but no node holds 3.
    assert after[4].startswith("error: --cpus-per-trial 3: no Ray node can hold a trial of 3 CPU + 0 GPU"), after
    assert "1 x 1 CPU 0 GPU" in after[4] and "1 x 2 CPU 0 GPU" in after[4], after


@pytest.mark.slow
def test_trials_shorter_than_a_process_start_reuse_two_processes_side_by_side_on_two_cpus(
    tmp_path, pattern_folder, mlflow_uri, ray_session, cache_dir
):
    """One-epoch trials of a fraction of a second: both cores run trials at once, each process runs several."""
    from ray import tune as ray_tune

    import tunevision
    from tunevision.tuner import open_search, tune

    search = tunevision.Search(name="short", data=tunevision.ImageFolder(str(pattern_folder)), trials=8, max_epochs=1,
                               space={"backbone": "dense", "image_size": 16, "batch_size": 16,
                                      "lr": ray_tune.loguniform(1e-3, 1e-2)})
    search_file = tmp_path / "short.py"
    search_file.write_text("# built in the test\n")
    opened = open_search(search, RunOptions(search_file, tracking_uri=mlflow_uri, storage=str(tmp_path / "ray"), output="quiet"))
    try:
        results = tune(opened)
    finally:
        opened.search_run.finish("FINISHED")
        opened.lock.release()
    spans = {}  # trial process -> [(started, reported)] of its trials
    for result in results:
        assert result.error is None
        spans.setdefault(result.metrics["pid"], []).append((result.metrics["process_started"], result.metrics["reported_at"]))
    assert len(spans) == 2, spans  # both CPUs: the second process was not stopped while it started
    assert sum(len(s) for s in spans.values()) == 8 and max(len(s) for s in spans.values()) >= 2  # processes reused
    (a, b) = spans.values()
    assert any(s0 < e1 and s1 < e0 for s0, e0 in a for s1, e1 in b)  # some trials of the two ran at the same time
    client = MlflowClient(mlflow_uri)
    children = client.search_runs([opened.search_run.experiment_id], "tags.`tunevision.role` = 'trial'")
    assert len(children) == 8 and all(c.info.status == "FINISHED" for c in children)
    assert all({"confusion_matrix.png", "confusion_matrix.json"} <= artifacts(client, c.info.run_id) for c in children)

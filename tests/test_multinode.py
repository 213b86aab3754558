"""Searches on a real three-node Ray cluster (tests/cluster.py): where trials ran, and a worker node lost mid-search
with a trial of every study shape (tests/shapes.py) on it.

Every node declares two GPUs (`ray start --num-gpus 2`) on a machine that has none, so the search runs
with `--cpu-fallback`; the head declares no CPUs, so trials land on the two workers only. Everything the
tests check after the search they read from MLflow (the SQLite store the driver wrote) and the Tune folder.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cluster as netns
import psutil
import pytest
import shapes
from fakes import write_pattern_images
from mlflow import MlflowClient

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not netns.can_make_namespaces(), reason="needs root and iproute2 for network namespaces"),
]

SEARCH = '''
from ray import tune
import tunevision
search = tunevision.Search(
    name="{name}",
    data=tunevision.ImageFolder("{root}"),
    space={{
        "backbone": "cnn",
        "cnn": {{"channels": {channels}}},
        "weights": None,
        "image_size": {size},
        "lr": tune.loguniform(1e-3, 1e-2),
        "batch_size": 16,
    }},
    searcher="random",
    scheduler="fifo",  # every trial runs all its epochs: no ASHA stop to race the checks
    positive_class="dog",
)
'''

GPUS_PER_NODE = 2


def search_file(folder: Path, name: str, root: Path, size: int, channels: list[int]) -> Path:
    path = folder / f"{name}.py"
    path.write_text(SEARCH.format(name=name, root=root, size=size, channels=channels))
    return path


def search_argv(file: Path, name: str, tmp_path: Path, uri: str, trials: int, epochs: int, cpus: float) -> list[str]:
    tunevision = str(Path(sys.executable).with_name("tunevision"))
    return [tunevision, "search", str(file), "--address", f"{netns.SUBNET}.1:{netns.PORT}", "--gpus-per-trial", "0.5",
            "--cpus-per-trial", str(cpus), "--cpu-fallback", "--trials", str(trials), "--max-epochs", str(epochs),
            "--tracking-uri", uri, "--storage", str(tmp_path / "storage"), "--name", name]


def new_store(tmp_path: Path) -> tuple[str, MlflowClient]:
    """An MLflow SQLite store with its tables made before the driver starts, so polling it never races its creation."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.search_experiments()
    return uri, client


def search_runs(client: MlflowClient, name: str) -> tuple[list, list]:
    """(parent runs, trial runs) of the experiment `name`."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return [], []
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    roles = [r.data.tags.get("tunevision.role") for r in runs]
    return [r for r, role in zip(runs, roles) if role == "search"], [r for r, role in zip(runs, roles) if role == "trial"]


def placements(run) -> list[dict]:
    return json.loads(run.data.tags.get("tunevision.placements", "[]"))


def most_overlapping(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that hold one instant (touching ends do not overlap)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])  # ends sort first
    most = held = 0
    for _, change in events:
        held += change
        most = max(most, held)
    return most


def checkpoint_folders(tune_path: Path) -> dict[str, int]:
    """checkpoint_* folders per trial folder of a Tune experiment."""
    trials = [d for d in tune_path.iterdir() if d.is_dir() and (d / "params.json").exists()]
    return {d.name: len([c for c in d.iterdir() if c.is_dir() and c.name.startswith("checkpoint_")]) for d in trials}


def reported(tune_path: Path) -> dict[str, list[tuple[int, str, int]]]:
    """(epoch, node_ip, iterations_since_restore) of every result the driver received, per trial, from Tune's result.json files."""
    out: dict[str, list[tuple[int, str, int]]] = {}
    for file in tune_path.glob("*/result.json"):
        for line in file.read_text().splitlines():
            row = json.loads(line)
            out.setdefault(row["trial_id"], []).append((row["epoch"], row.get("node_ip", ""), row["iterations_since_restore"]))
    return out


def check_trial_records(client: MlflowClient, name: str, trials: int, epochs: int) -> tuple:
    """What both tests ask of a finished search's records; returns (parent, children by trial id, results per trial)."""
    parents, children = search_runs(client, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    ids = [c.data.tags["tunevision.trial_id"] for c in children]
    assert len(children) == trials and len(set(ids)) == trials, f"one child run per trial, got {sorted(ids)}"
    by_id = dict(zip(ids, children))
    for trial_id, child in by_id.items():
        assert child.info.status == "FINISHED", (trial_id, child.info.status, child.data.tags.get("tunevision.error"))
        assert "tunevision.error" not in child.data.tags
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy")]
        assert sorted(steps) == list(range(1, epochs + 1)) and len(steps) == epochs, (trial_id, steps)
        tags = child.data.tags
        assert tags["tunevision.node_id"] and tags["tunevision.node_ip"].startswith(netns.SUBNET + ".")
        assert tags["tunevision.gpu_ids"] in {str(g) for g in range(GPUS_PER_NODE)}, tags["tunevision.gpu_ids"]
        where = placements(child)
        assert where and (where[-1]["node_id"], where[-1]["node_ip"]) == (tags["tunevision.node_id"], tags["tunevision.node_ip"])
        for p in where:
            assert len(p["gpu_ids"]) == 1 and p["start"] <= p["end"], p
    tune_path = Path(parents[0].data.tags["tunevision.tune_path"])
    folders = checkpoint_folders(tune_path)
    assert len(folders) == trials, folders
    assert all(1 <= n <= 2 for n in folders.values()), f"Tune keeps best + latest checkpoint per trial: {folders}"
    # Every epoch reached the driver, in order: a trial restarted from scratch instead of its checkpoint would go back
    # to epoch 1. Only a process that continued from the checkpoint of epoch k may report k again, first.
    results = reported(tune_path)
    assert sorted(results) == sorted(by_id), (sorted(results), sorted(by_id))
    for trial_id, rows in results.items():
        seen = [e for e, _, _ in rows]
        repeats = [i for i in range(1, len(rows)) if seen[i] == seen[i - 1]]
        assert seen == sorted(seen) and set(seen) == set(range(1, epochs + 1)), (trial_id, rows)
        assert all(rows[i][2] == 1 for i in repeats), (trial_id, rows)
    return parents[0], by_id, results


def test_trials_spread_over_two_gpu_workers_at_most_two_per_gpu(tmp_path, cache_dir):
    """Six trials of half a GPU each on two workers of two (fake) GPUs: placement recorded, no GPU over-shared."""
    trials, epochs, name = 6, 4, "placement"
    root = write_pattern_images(tmp_path / "images", per_class=120, size=48)  # trials of several seconds: they overlap
    file = search_file(tmp_path, name, root, size=48, channels=[16, 32, 64])
    uri, client = new_store(tmp_path)
    cluster = netns.NetnsCluster(prefix="tvmp")
    started = time.monotonic()
    try:
        # Each worker: 2 CPUs and 2 GPUs = four trials of 0.5 CPU + 0.5 GPU at once, two per GPU.
        cluster.start(workers=2, cpus=2, gpus=GPUS_PER_NODE, head_cpus=0, head_gpus=GPUS_PER_NODE)
        result = cluster.driver(search_argv(file, name, tmp_path, uri, trials, epochs, cpus=0.5), cwd=tmp_path, timeout=400)
    finally:
        cluster.stop()
    wall = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert f"trials: {trials} finished, 0 failed" in result.stdout

    _, by_id, _ = check_trial_records(client, name, trials, epochs)
    head = f"{netns.SUBNET}.1"
    nodes = {c.data.tags["tunevision.node_ip"] for c in by_id.values()}
    assert head not in nodes and len(nodes) == 2, f"trials ran on {nodes}: expected both workers, not the head"
    per_gpu: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for child in by_id.values():
        for p in placements(child):
            for gpu in p["gpu_ids"]:
                per_gpu.setdefault((p["node_ip"], gpu), []).append((p["start"], p["end"]))
    assert len({ip for ip, _ in per_gpu}) == len({c.data.tags["tunevision.node_id"] for c in by_id.values()})  # one id per node
    overlap = {f"{ip}/gpu{gpu}": most_overlapping(spans) for (ip, gpu), spans in sorted(per_gpu.items())}
    assert max(overlap.values()) <= 2, f"more than two half-GPU trials at once on one GPU: {overlap}"
    at_once = most_overlapping([span for spans in per_gpu.values() for span in spans])
    assert at_once >= 3, f"the cluster never held three trials at once ({at_once}): the placement check proves little"
    counts = {f"{ip}/gpu{gpu}": len(spans) for (ip, gpu), spans in sorted(per_gpu.items())}
    print(f"\nplacement: {trials} trials x {epochs} epochs on nodes {sorted(nodes)}, at most {at_once} at once; "
          f"trials per node/GPU {counts}; "
          f"most at once per node/GPU {overlap}; wall {wall:.0f} s")


def trial_processes(cluster: netns.NetnsCluster, node: str) -> list[int]:
    """The processes in one node's namespace that run a trial (Ray's actor of a function trainable: ray::ImplicitFunc)."""
    found = []
    for pid in cluster.pids(node):
        try:
            if any("ImplicitFunc" in part for part in psutil.Process(pid).cmdline()):
                found.append(pid)
        except psutil.NoSuchProcess:
            continue
    return found


def wait_for(what: str, done, driver, log: Path, timeout: float = 300) -> None:
    """Poll `done()` until true; fail, naming `what`, if the driver exits or `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not done():
        assert driver.poll() is None, f"the search ended (exit {driver.returncode}) before {what}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}:\n{log.read_text()[-4000:]}"
        time.sleep(0.1)


SHAPE_EPOCHS = 5  # each trial is cut off after epoch 3 (shapes.py holds it there), then continues to 5


def test_every_shape_s_trial_continues_from_its_checkpoint_on_the_other_worker_when_its_node_dies(tmp_path, cache_dir):
    """Every study shape (tests/shapes.py) trains on one worker, killed mid-trial: each continues on the other from its checkpoint."""
    epochs, name = SHAPE_EPOCHS, "nodeloss"
    trials = len(shapes.BACKBONES)
    root = write_pattern_images(tmp_path / "images", per_class=60, size=24)
    file = shapes.write_search(tmp_path / f"{name}.py", name, root, epochs)
    uri, client = new_store(tmp_path)
    cluster = netns.NetnsCluster(prefix="tvml", fast_health_check=True)
    log = tmp_path / "driver.log"
    driver = None
    started, start_time = time.monotonic(), time.time()
    try:
        # The first worker holds every trial (four of 0.5 CPU + 0.5 GPU); the second joins once they are placed.
        cluster.start(workers=1, cpus=2, gpus=GPUS_PER_NODE, head_cpus=0, head_gpus=GPUS_PER_NODE)
        lost = cluster.nodes[1]
        lost_ip = cluster.ip(lost)
        driver = cluster.start_driver(search_argv(file, name, tmp_path, uri, trials, epochs, cpus=0.5), cwd=tmp_path, log=log,
                                      env_extra={shapes.FAULT: "node:3"})  # each trial held after epoch 3; then a line
        wait_for("every trial placed on the first worker", lambda: len(trial_processes(cluster, lost)) == trials, driver, log)
        other = cluster.ip(cluster.add_worker(cpus=2, gpus=GPUS_PER_NODE))
        wait_for("every trial held mid-training", lambda: "fault: the node goes now" in log.read_text(), driver, log)
        killed_at = time.time()
        cluster.kill_node(lost)
        noticed = cluster.wait_node_dead(lost, timeout=90)
        code = driver.wait(timeout=max(30.0, 420 - (time.monotonic() - started)))
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait()
        cluster.stop()
    wall = time.monotonic() - started
    output = log.read_text()
    assert code == 0, output[-6000:]
    assert f"trials: {trials} finished, 0 failed" in output

    _, by_id, results = check_trial_records(client, name, trials, epochs)
    cut_off = {}
    for trial_id, child in by_id.items():
        shape = shapes.shape_of(child)
        where, retries = placements(child), int(child.data.tags.get("tunevision.retries", "0"))
        # Trained on the lost node, then on the other worker, from the checkpoint of the last epoch it reported.
        assert [p["node_ip"] for p in where] == [lost_ip, other] and where[1]["start"] > killed_at, (shape, where)
        assert retries >= 1 and child.data.tags.get("tunevision.last_retry_reason"), (shape, child.data.tags)
        nodes = [ip for _, ip, _ in results[trial_id]]
        k = nodes.count(lost_ip)
        assert k >= 3 and nodes == [lost_ip] * k + [other] * (len(nodes) - k), (shape, results[trial_id])
        first_after = results[trial_id][k][0]
        assert first_after in (k, k + 1), f"{shape}: cut off after epoch {k}, it began at epoch {first_after} on {other}, not from its checkpoint"
        cut_off[shape] = k
    retries = {shapes.shape_of(c): c.data.tags.get("tunevision.retries") for c in by_id.values()}
    print(f"\nnode loss: {trials} trials (one per shape) x {epochs} epochs, head + 2 workers; killed {lost_ip} "
          f"{killed_at - start_time:.0f} s into the run with every trial on it, Ray marked it dead {noticed:.1f} s later; "
          f"continued on {other} after epoch: {cut_off}; retries per shape {retries}; "
          f"{trials} trials finished, 0 failed, duplicate runs 0; wall {wall:.0f} s")

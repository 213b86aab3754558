"""A trial whose process dies mid-training continues from its checkpoint, for every study shape.

The same restore (Lightning's checkpoint, loaded weights_only, with the trial's config as plain data) serves
Ray's retries, a lost node and `--resume`; here Ray retries after the trial's process is SIGKILLed.
"""
from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from fakes import write_pattern_images

CUSTOM = '''
from torch import nn
from tunevision.models import BackboneSpec, register_backbone

class Tiny(nn.Sequential):
    def __init__(self, width):
        super().__init__(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = width

register_backbone("tiny_custom", BackboneSpec(build=lambda config, channels: Tiny(8), trunk=lambda m: m, feature_dim=8,
                                              in_channels=3, source="test"))
'''
# shape -> (code before the search, space, searcher)
SHAPES = {
    "progressive": ("", '{"backbone": "cnn", "image_size": tunevision.progressive({0: 16, 2: 24}), '
                        '"augment": tunevision.progressive({0: None, 1: {"hflip": True, "zoom": 0.1}}), "lr": tune.loguniform(1e-3, 1e-2)}', "optuna"),
    "dense": ("", '{"backbone": "dense", "image_size": 16, "hidden_units": 16, "lr": tune.loguniform(1e-3, 1e-2)}', "optuna"),
    "grid": ("", '{"backbone": "cnn", "image_size": 16, "lr": tune.grid_search([1e-3, 1e-2])}', "grid"),
    "custom": (CUSTOM, '{"backbone": "tiny_custom", "image_size": 16, "lr": tune.loguniform(1e-3, 1e-2)}', "optuna"),
}
SEARCH = '''
from ray import tune
import tunevision
{code}
search = tunevision.Search(name="faulty-{shape}", data=tunevision.ImageFolder("{root}"), space={space}, searcher="{searcher}",
                           trials=2, max_epochs={epochs}, scheduler="fifo", max_concurrent=1)
'''
EPOCHS = 6


def trial_processes() -> list[psutil.Process]:
    """This test's Ray worker processes that run a function trainable (process title ray::ImplicitFunc...)."""
    found = []
    for process in psutil.Process().children(recursive=True):  # the in-process Ray's raylet, then its workers
        try:
            if any("ImplicitFunc" in part for part in process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def val_steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "val_accuracy"))


@pytest.mark.slow
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_trial_killed_mid_training_continues_from_its_checkpoint(shape, tmp_path: Path, ray_session, cache_dir):
    from tunevision.cli import main

    code, space, searcher = SHAPES[shape]
    root = write_pattern_images(tmp_path / "images", per_class=60, size=24)
    path = tmp_path / f"faulty_{shape}.py"
    path.write_text(SEARCH.format(code=code, shape=shape, root=root, space=space, searcher=searcher, epochs=EPOCHS))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exit_code: list[int] = []
    search = threading.Thread(target=lambda: exit_code.append(
        main(["search", str(path), "--tracking-uri", uri, "--storage", str(tmp_path / "ray")])))
    before = {p.pid for p in trial_processes()}  # the session's Ray may still hold earlier tests' workers
    search.start()
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and search.is_alive() and time.monotonic() < deadline:
        experiment = client.get_experiment_by_name(f"faulty-{shape}")
        runs = client.search_runs([experiment.experiment_id], "tags.`tunevision.role` = 'trial'") if experiment else []
        if len(runs) == 1 and runs[0].info.status == "RUNNING" and 2 <= len(val_steps(client, runs[0].info.run_id)) <= EPOCHS - 2:
            victims = [p for p in trial_processes() if p.pid not in before]
            if len(victims) == 1:  # the first trial's own process: one trial at a time
                victims[0].send_signal(signal.SIGKILL)
                killed = runs[0].info.run_id
        time.sleep(0.05)
    search.join(300)
    assert killed is not None, "no trial was caught mid-training"
    assert exit_code == [0]
    experiment = client.get_experiment_by_name(f"faulty-{shape}")
    runs = client.search_runs([experiment.experiment_id], "tags.`tunevision.role` = 'trial'")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert all(val_steps(client, r.info.run_id) == list(range(1, EPOCHS + 1)) for r in runs)
    victim = client.get_run(killed)
    assert victim.data.tags["tunevision.retries"] == "1"
    # Continued from its checkpoint (of epoch 2 or later), not from scratch: Lightning's epoch never went back
    # in Tune's own results (the epoch of the checkpoint may be reported again as the restored fit ends it).
    trial_dir = next(Path(victim_path) for victim_path in Path(tmp_path / "ray").glob(f"*/*{victim.data.tags['tunevision.trial_id']}*"))
    epochs = [json.loads(line)["epoch"] for line in (trial_dir / "result.json").read_text().splitlines()]
    assert epochs == sorted(epochs) and set(epochs) == set(range(1, EPOCHS + 1)), epochs

"""The study shapes every fault test runs over: one grid search, one trial per shape, all trials at once.

A shape is what a trial's checkpoint must carry through a fault: staged image size and augmentation on a
cnn (kept as plain data in the checkpoint), a dense network, a backbone that the search file registers
itself (which trial processes never run), and the grid searcher's own state (every trial is a grid point).
The grid walks `backbone`; each shape's other keys follow its backbone (`tune.sample_from`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# shape -> its backbone (its other keys are SHAPES in SEARCH, by backbone)
BACKBONES = {"progressive": "cnn", "dense": "dense", "custom": "tiny_custom"}
FAULT = "TUNEVISION_TEST_FAULT"  # "trials:N", "driver:N" or "node:N": see SEARCH

SEARCH = '''
import os
import signal

from ray import tune
from torch import nn
import tunevision
from tunevision.models import BackboneSpec, register_backbone


class Tiny(nn.Sequential):
    def __init__(self, width):
        super().__init__(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = width


register_backbone("tiny_custom", BackboneSpec(build=lambda config, channels: Tiny(8), trunk=lambda m: m, feature_dim=8,
                                              in_channels=3, source="test"))

# Every key a shape sets, by its backbone: the cnn grows its images and its augmentation stage by stage.
SHAPES = {{
    "cnn": {{"image_size": tunevision.progressive({{0: 16, 2: 24}}), "cnn": {{"channels": [8, 16]}},
            "augment": tunevision.progressive({{0: None, 1: {{"hflip": True, "zoom": 0.1}}}}), "hidden_units": None}},
    "dense": {{"image_size": 16, "cnn": None, "augment": None, "hidden_units": 16}},
    "tiny_custom": {{"image_size": 16, "cnn": None, "augment": None, "hidden_units": None}},
}}


def follows(key):
    return tune.sample_from(lambda spec: SHAPES[spec["config"]["backbone"]][key])


# The fault a test asks for in {fault}, right after MLflow holds the epoch that triggers it:
# "trials:N": the process of each trial, as it reports epoch N (Ray then retries it from its checkpoint);
# "driver:N" and "node:N": each trial's process is held (SIGSTOP) as it reports epoch N, mid-training, so that
# none finishes first; once all are held, the driver SIGKILLs its own process group (itself and its in-process
# Ray), or says so in a line for the test to kill the trials' node.
if os.environ.get("{fault}"):
    from tunevision.tracking import TrialRecorder

    victim, after = os.environ["{fault}"].split(":")
    recorded, held = TrialRecorder.on_trial_result, {{}}

    def killing(self, iteration, trials, trial, result, **info):
        recorded(self, iteration, trials, trial, result, **info)
        if result["epoch"] < int(after) or trial.trial_id in held:
            return
        held[trial.trial_id] = result["pid"]
        os.kill(result["pid"], signal.SIGKILL if victim == "trials" else signal.SIGSTOP)
        print(f"fault: trial {{trial.trial_id}} {{'killed' if victim == 'trials' else 'held'}} after epoch {{result['epoch']}}", flush=True)
        if victim != "trials" and len(held) == len(SHAPES):
            print(f"fault: the {{victim}} goes now", flush=True)
            if victim == "driver":  # Ray's workers have process groups of their own: a held one would stay
                for pid in held.values():
                    os.kill(pid, signal.SIGKILL)
                os.killpg(0, signal.SIGKILL)

    TrialRecorder.on_trial_result = killing

search = tunevision.Search(
    name="{name}",
    data=tunevision.ImageFolder("{root}"),
    space={{"backbone": tune.grid_search(list(SHAPES)), **{{key: follows(key) for key in SHAPES["cnn"]}},
           "batch_size": 16, "lr": 3e-3}},
    searcher="grid", scheduler="fifo", max_epochs={epochs}, cpus_per_trial=0.5, seed=1,
)
'''


def write_search(path: Path, name: str, root: Path, epochs: int) -> Path:
    """Write the shapes' search file at `path`: search `name` on the image folder `root`, `epochs` per trial."""
    path.write_text(SEARCH.format(name=name, root=root, epochs=epochs, fault=FAULT))
    return path


def shape_of(run: Any) -> str:
    """The shape of a trial's MLflow run, by its backbone param."""
    return next(shape for shape, backbone in BACKBONES.items() if run.data.params["backbone"] == backbone)


def restarts(trial_folder: Path) -> list[int]:
    """The epoch of each process's first result, from Tune's result.json: [1] for one process that ran the trial.

    A process that started from scratch reports epoch 1 first; one that continued from the checkpoint of epoch
    k reports k (Lightning ends the restored epoch and Tune's callback reports it again) or k + 1.
    """
    rows = [json.loads(line) for line in (trial_folder / "result.json").read_text().splitlines()]
    return [row["epoch"] for row in rows if row["iterations_since_restore"] == 1]

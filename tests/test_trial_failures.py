"""Trials that raise (NaN loss, out of memory, an exception in a batch) fail alone: recorded, counted, search goes on."""
from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tunevision.cli import main

# The search file registers its own backbone, as a user would: trial processes never run this file,
# so the spec must reach them with the search. Its failure mode is picked by the trial's lr.
SEARCH = '''
import torch
from ray import tune
import tunevision
from tunevision.models import BackboneSpec, register_backbone


class Fragile(torch.nn.Module):
    def __init__(self, lr):
        super().__init__()
        self.lr = lr
        self.conv = torch.nn.Conv2d(3, 8, 3)

    def forward(self, x):
        features = self.conv(x).mean(dim=(2, 3))
        if self.lr == 0.02:
            raise ValueError("simulated failure in a batch")
        if self.lr == 0.03:
            return features * float("nan")
        if self.lr == 0.04:
            torch.empty(10**8, 10**8)  # a real allocation failure: 40 PB
        return features


register_backbone("{backbone}", BackboneSpec(build=lambda config, channels: Fragile(config.lr), trunk=lambda m: m,
                                          feature_dim=8, in_channels=3, default_image_size=16, source="tests"))

search = tunevision.Search(
    name="fragile",
    data=tunevision.ImageFolder("{root}"),
    space={{"backbone": "{backbone}", "image_size": 16, "batch_size": 16, "lr": tune.grid_search([0.01, 0.02, 0.03, 0.04])}},
    searcher="random", scheduler="fifo", trials=1, max_epochs=2, max_failures=0, max_concurrent=2,
)
'''


@pytest.mark.slow
def test_failing_trials_are_marked_failed_with_their_reason_and_the_search_finishes(
    tmp_path: Path, pattern_folder: Path, mlflow_uri: str, ray_session, cache_dir, capsys
):
    search_file = tmp_path / "fragile.py"
    search_file.write_text(SEARCH.format(root=pattern_folder, backbone="fragile"))

    code = main(["search", str(search_file), "--tracking-uri", mlflow_uri, "--storage", str(tmp_path / "ray")])

    out = capsys.readouterr().out
    assert code == 0
    assert "trials: 1 finished, 3 failed" in out
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("fragile").experiment_id])
    parent = next(r for r in runs if r.data.tags["tunevision.role"] == "search")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_failed"] == 3 and parent.data.metrics["trials_finished"] == 1
    trials = {float(r.data.params["lr"]): r for r in runs if r.data.tags["tunevision.role"] == "trial"}
    assert sorted(trials) == [0.01, 0.02, 0.03, 0.04]
    assert trials[0.01].info.status == "FINISHED" and "tunevision.error" not in trials[0.01].data.tags
    assert parent.data.params["lr"] == "0.01"  # the chosen model is the one that trained
    expected = {0.02: "ValueError: simulated failure in a batch",
                0.03: "FloatingPointError: train_loss is nan at epoch 0, batch 0",
                0.04: "can't allocate memory"}
    for lr, reason in expected.items():
        run = trials[lr]
        assert run.info.status == "FAILED", lr
        assert reason in run.data.tags["tunevision.error"], run.data.tags["tunevision.error"]
        assert "\n" not in run.data.tags["tunevision.error"]


@pytest.mark.slow
def test_gpus_per_trial_beyond_an_in_process_ray_without_gpus_stops_before_any_trial(
    tmp_path: Path, pattern_folder: Path, mlflow_uri: str, ray_session, cache_dir, capsys
):
    search_file = tmp_path / "fragile.py"
    search_file.write_text(SEARCH.format(root=pattern_folder, backbone="fragile_gpu"))

    code = main(["search", str(search_file), "--tracking-uri", mlflow_uri, "--gpus-per-trial", "1"])

    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"tunevision: error: {search_file}: --gpus-per-trial 1: no Ray node can hold a trial of 1 CPU + 1 GPU "
                   "(nodes: 1 x 2 CPU 0 GPU); lower --gpus-per-trial, or run on a cluster with --address")
    assert MlflowClient(mlflow_uri).search_runs(
        [MlflowClient(mlflow_uri).get_experiment_by_name("fragile").experiment_id]) == []


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine where CUDA is unavailable")
def test_a_trial_given_a_gpu_where_cuda_is_unavailable_fails_with_the_reason_unless_cpu_fallback_is_set():
    from tunevision.errors import TunevisionError
    from tunevision.trial import choose_accelerator

    assert choose_accelerator("", cpu_fallback=False) == "cpu"
    assert choose_accelerator("0", cpu_fallback=True) == "cpu"
    with pytest.raises(TunevisionError, match=r"trial was given GPU 0 on node .* but CUDA is unavailable there .*--cpu-fallback"):
        choose_accelerator("0", cpu_fallback=False)

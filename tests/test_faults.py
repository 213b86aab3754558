"""A trial whose process dies mid-training continues from its checkpoint, for every study shape (tests/shapes.py).

The same restore (Lightning's checkpoint, loaded weights_only, with the trial's config as plain data) serves
Ray's retries, a lost node and `--resume`; here Ray retries after each trial's process is SIGKILLed.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import shapes
from fakes import write_pattern_images
from mlflow import MlflowClient

EPOCHS = 4


def val_steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "val_accuracy"))


@pytest.mark.slow
def test_every_shape_s_trial_killed_mid_training_continues_from_its_checkpoint(
    tmp_path: Path, ray_session, cache_dir, monkeypatch, capsys
):
    from tunevision.cli import main
    from tunevision.tracking import TrialRecorder

    root = write_pattern_images(tmp_path / "images", per_class=60, size=24)
    path = shapes.write_search(tmp_path / "faulty.py", "faulty", root, EPOCHS)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv(shapes.FAULT, "trials:2")  # each trial's process as it reports its 2nd epoch
    monkeypatch.setattr(TrialRecorder, "on_trial_result", TrialRecorder.on_trial_result)  # the file patches it: undone after

    assert main(["search", str(path), "--tracking-uri", uri, "--storage", str(tmp_path / "ray")]) == 0

    assert capsys.readouterr().out.count(" killed after epoch 2") == len(shapes.BACKBONES)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("faulty")
    runs = {shapes.shape_of(r): r for r in client.search_runs([experiment.experiment_id], "tags.`tunevision.role` = 'trial'")}
    assert sorted(runs) == sorted(shapes.BACKBONES)
    for shape, run in runs.items():
        assert run.info.status == "FINISHED", (shape, run.data.tags.get("tunevision.error"))
        assert run.data.tags.get("tunevision.retries") == "1", (shape, run.data.tags)
        assert val_steps(client, run.info.run_id) == list(range(1, EPOCHS + 1)), shape  # no epoch lost or logged twice
        # Continued from its checkpoint (epoch 2 or later), not from scratch: the retried process began past epoch 1.
        folder = next((tmp_path / "ray").glob(f"*/*{run.data.tags['tunevision.trial_id']}*"))
        started = shapes.restarts(folder)
        assert len(started) == 2 and started[1] >= 2, f"{shape}: the retried trial began at epoch {started[1:]}, not from its checkpoint"

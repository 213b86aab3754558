"""The space vocabulary: TrialConfig fills defaults and checks every value; progressive values change by epoch;
the README's key table is generated from it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunevision import TunevisionError, progressive
from tunevision.space import KEYS, TrialConfig, markdown_table, value_at

README = Path(__file__).resolve().parents[1] / "README.md"


def test_trial_config_fills_defaults_and_keeps_given_values():
    config = TrialConfig.from_dict({"lr": 0.1, "augment": {"hflip": True}})
    assert config.lr == 0.1 and config.augment == {"hflip": True}
    assert config.backbone == "resnet18" and config.batch_size == 32


def test_trial_config_reads_a_plain_epoch_dict_as_progressive():
    config = TrialConfig.from_dict({"backbone": "cnn", "image_size": {0: 16, 3: 32}})
    assert [config.image_size.at(e) for e in (0, 2, 3)] == [16, 16, 32]
    assert config.final().image_size == 32


def test_trial_config_round_trips_through_json_plain_data():
    config = TrialConfig.from_dict({"backbone": "cnn", "image_size": progressive({0: 16, 2: 24}),
                                    "augment": progressive({0: None, 1: {"hflip": True}}), "hidden_units": [8, 0.5]})
    plain = json.loads(json.dumps(config.to_plain()))
    assert TrialConfig.from_plain(plain) == config


def test_trial_config_rejects_an_unknown_key():
    with pytest.raises(TunevisionError, match=r"space\['lrate'\]: unknown key"):
        TrialConfig.from_dict({"lrate": 0.1})


def test_trial_config_rejects_both_freeze_keys():
    with pytest.raises(TunevisionError, match="set one, not both"):
        TrialConfig.from_dict({"trainable_layers": 3, "trainable_fraction": 0.5})


def test_progressive_value_changes_at_its_stage_boundaries():
    sizes = progressive({0: 128, 5: 256})
    assert [value_at(sizes, e) for e in (0, 4, 5, 9)] == [128, 128, 256, 256]
    assert value_at(224, 3) == 224


def test_progressive_must_start_at_epoch_zero():
    with pytest.raises(TunevisionError, match="must start at epoch 0"):
        progressive({3: 256})


def test_every_progressive_stage_is_checked():
    with pytest.raises(TunevisionError, match=r'space\["image_size"\]: invalid -8'):
        TrialConfig.from_dict({"image_size": {0: 16, 2: -8}})


def test_readme_key_table_is_the_generated_one():
    assert markdown_table() in README.read_text()
    assert all(f"| `{k}` |" in markdown_table() for k in KEYS)


def test_ci_runs_the_readme_test_command():
    import subprocess

    ci = (README.parent / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci
    command = subprocess.run(
        ["awk", '/<!-- test-command -->/{grab=1; next} grab && /^```/{if (started) exit; started=1; next} grab && started', str(README)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert command.endswith("python -m pytest")

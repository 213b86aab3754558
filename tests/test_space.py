"""The space vocabulary: defaults fill what a space leaves out, progressive values change by epoch, the README documents every key."""
from __future__ import annotations

from pathlib import Path

import pytest

from tunevision import TunevisionError, progressive
from tunevision.space import KEYS, final, resolve, value_at

README = Path(__file__).resolve().parents[1] / "README.md"


def test_resolve_fills_defaults_and_keeps_given_values():
    config = resolve({"lr": 0.1, "augment": {"hflip": True}})
    assert config["lr"] == 0.1 and config["augment"] == {"hflip": True}
    assert config["backbone"] == "resnet18" and config["batch_size"] == 32


def test_progressive_value_changes_at_its_stage_boundaries():
    sizes = progressive({0: 128, 5: 256})
    assert [value_at(sizes, e) for e in (0, 4, 5, 9)] == [128, 128, 256, 256]
    assert value_at(224, 3) == 224
    assert final({"image_size": sizes, "lr": 0.1}) == {"image_size": 256, "lr": 0.1}


def test_progressive_must_start_at_epoch_zero():
    with pytest.raises(TunevisionError, match="must start at epoch 0"):
        progressive({3: 256})


def test_readme_documents_every_space_key():
    text = README.read_text()
    missing = [k for k in KEYS if f"| `{k}` |" not in text]
    assert missing == []


def test_ci_runs_the_readme_test_command():
    import subprocess

    ci = (README.parent / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci
    command = subprocess.run(
        ["awk", '/<!-- test-command -->/{grab=1; next} grab && /^```/{if (started) exit; started=1; next} grab && started', str(README)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert command.endswith("python -m pytest")

"""Model tests never touch the network: offline mode and an empty torch hub in tmp_path."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def offline_empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEVISION_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"

"""Shared fixtures: one Ray per test session, tiny image folders written with Pillow, a fresh MLflow store."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fakes import write_pattern_images

# A Ray started by the tests stays on loopback; trials use one CPU each.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TUNEVISION_OFFLINE", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

@pytest.fixture(scope="session")
def ray_session():
    """Start Ray once for every test that runs a search in-process."""
    import ray

    # address="local": a Ray of its own, never one that `ray start` left running on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    """A fresh MLflow SQLite store for one test."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def pattern_folder(tmp_path: Path) -> Path:
    """A two-class image folder of 48 learnable PNG images."""
    return write_pattern_images(tmp_path / "images")


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the decode-once cache at a temporary folder."""
    monkeypatch.setenv("TUNEVISION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"

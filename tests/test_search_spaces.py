"""Every study's search file runs for real through the CLI, on tiny data the test writes in the study's own format.

Studies whose backbones need torchvision's ImageNet files run with `--set weights=None` (no network
here); the offline EfficientNet-Lite0 study keeps its real weights.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from fakes import write_label_table, write_mnist_raw, write_pattern_images
from tunevision.cli import main
from tunevision.search import load_search_file

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
TINY = ["--trials", "1", "--max-epochs", "1"]
NO_DOWNLOAD = ["--set", "weights=None", "--set", "image_size=32"]

STUDIES = {
    "digits": lambda tmp: TINY,
    "graffiti": lambda tmp: ["--data", str(write_pattern_images(tmp / "g", 10, 32, ("Graffiti", "No-Graffiti"), fmt="jpg")), *TINY, *NO_DOWNLOAD],
    "graffiti_lite0": lambda tmp: ["--data", str(write_pattern_images(tmp / "g", 10, 32, ("Graffiti", "No-Graffiti"), fmt="jpg")), *TINY, "--set", "image_size=64"],
    "flowers": lambda tmp: ["--data", str(write_pattern_images(tmp / "f", 10, 32, ("daisy", "dandelion", "rose", "sunflower", "tulip"))), *TINY, *NO_DOWNLOAD],
    "fashion_mnist": lambda tmp: ["--data", str(write_mnist_raw(tmp / "fm")), *TINY],
    "soda_bottles": lambda tmp: ["--data", str(write_pattern_images(tmp / "s", 10, 40, ("coca_cola", "fanta", "pepsi"), fmt="jpg")), *TINY, *NO_DOWNLOAD],
    "retinopathy": lambda tmp: ["--data", str(write_label_table(tmp / "r")), *TINY, "--set", "image_size=32"],
}


def test_every_search_file_in_search_spaces_is_covered():
    assert {p.stem for p in SPACES.glob("*.py")} == set(STUDIES)


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_search_file_loads_and_says_where_its_data_comes_from(study):
    search = load_search_file(SPACES / f"{study}.py")
    assert search.name == study
    assert "Run:" in (SPACES / f"{study}.py").read_text() or study == "digits"


@pytest.mark.slow
@pytest.mark.parametrize("study", sorted(STUDIES))
def test_search_file_runs_through_the_cli_on_tiny_data_in_its_format(study, tmp_path, mlflow_uri, ray_session, cache_dir, capsys):
    argv = ["search", str(SPACES / f"{study}.py"), *STUDIES[study](tmp_path),
            "--tracking-uri", mlflow_uri, "--storage", str(tmp_path / "ray")]
    assert main(argv) == 0, capsys.readouterr().err[-2000:]
    assert "test (once, chosen model): test_accuracy=" in capsys.readouterr().out
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name(study).experiment_id])
    trials = [r for r in runs if r.data.tags["tunevision.role"] == "trial"]
    assert trials and all("val_accuracy" in r.data.metrics for r in trials)

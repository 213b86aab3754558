"""`tunevision check` and a real search on a damaged label table: every bad file named, none crashes a trial."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from tunevision.cli import main

BAD = {
    "3_left": "empty file",
    "4_left": "not an image",
    "5_left": "truncated",
    "7_left": "missing",
}


def write_damaged_table(root: Path) -> Path:
    """A retinopathy-like table: names without '.jpeg', grades 0-2, and one file of each kind of damage."""
    from PIL import Image

    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(36):
        grade = i % 3
        name = f"{10 + i}_left"
        pixels = rng.integers(0, 60, (20, 20, 3), dtype=np.uint8)
        pixels[:, grade * 6 : grade * 6 + 6] = 230
        Image.fromarray(pixels).save(images / f"{name}.jpeg", format="PNG" if i == 0 else "JPEG")  # PNG bytes in .jpeg is fine
        rows.append((name, grade))
    (images / "3_left.jpeg").write_bytes(b"")
    (images / "4_left.jpeg").write_bytes(bytes(rng.integers(0, 255, 500, dtype=np.uint8)))
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    (images / "5_left.jpeg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    Image.new("RGB", (20, 20)).save(images / "unlisted_right.jpeg", format="JPEG")
    rows += [("3_left", 0), ("4_left", 1), ("5_left", 2), ("7_left", 0)]
    table = root / "labels.csv"
    table.write_text("image,level\n" + "".join(f"{n},{g}\n" for n, g in rows))
    return table


@pytest.fixture
def damaged_search(tmp_path: Path) -> Path:
    table = write_damaged_table(tmp_path / "retina")
    path = tmp_path / "retina.py"
    path.write_text(f'''
from ray import tune
import tunevision
search = tunevision.Search(
    name="retina-tiny",
    data=tunevision.LabelTable("{table}", images="{table.parent / 'images'}", path_column="image",
                               label_column="level", suffix=".jpeg"),
    space={{"backbone": "cnn", "image_size": 16, "lr": tune.loguniform(1e-3, 1e-2), "class_weights": True, "batch_size": 8}},
    trials=2, max_epochs=1,
)
''')
    return path


def test_check_names_every_bad_file_and_the_class_counts(damaged_search, cache_dir, capsys):
    assert main(["check", str(damaged_search)]) == 0
    out = capsys.readouterr().out
    for name in BAD:
        assert name in out
    assert "unlisted_right.jpeg" in out
    assert "samples: 36 usable, 5 problem(s)" in out
    assert "classes (3): 0, 1, 2" in out
    assert "check passed: nothing was trained" in out


def test_check_with_data_flag_reads_another_table(damaged_search, tmp_path, cache_dir, capsys):
    other = write_damaged_table(tmp_path / "elsewhere")
    assert main(["check", str(damaged_search), "--data", str(other)]) == 0
    assert str(other) in capsys.readouterr().out


@pytest.mark.slow
def test_search_on_a_damaged_table_runs_to_the_end_and_records_its_bad_files(
    damaged_search, tmp_path, mlflow_uri, ray_session, cache_dir
):
    argv = ["search", str(damaged_search), "--tracking-uri", mlflow_uri, "--storage", str(tmp_path / "ray")]
    assert main(argv) == 0
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("retina-tiny").experiment_id])
    parent = next(r for r in runs if r.data.tags["tunevision.role"] == "search")
    assert parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in runs)
    report = Path(client.download_artifacts(parent.info.run_id, "data_report.txt")).read_text()
    for name in [*BAD, "unlisted_right.jpeg"]:
        assert name in report

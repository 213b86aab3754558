"""LabelTable reads a table of names and labels, appends suffixes and reports missing and unlisted files."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import noise

from tunevision.data import LabelTable, prepare
from tunevision.errors import TunevisionError


@pytest.fixture
def retina(tmp_path):
    """train/<name>.jpeg for 12 eyes graded 0..2, listed without suffix in trainLabels.csv, plus strays."""
    images = tmp_path / "train"
    images.mkdir()
    rows = []
    for i in range(12):
        noise(seed=i).save(images / f"{i}_left.jpeg", "JPEG")
        rows.append((f"{i}_left", i % 3))
    rows.append(("99_left", 1))  # listed, never written
    noise().save(images / "stray.jpeg", "JPEG")  # written, never listed
    pd.DataFrame(rows, columns=["image", "level"]).to_csv(tmp_path / "trainLabels.csv", index=False)
    return tmp_path


def test_suffix_labels_missing_and_unlisted(retina):
    source = LabelTable(str(retina / "trainLabels.csv"), images=str(retina / "train"), path_column="image",
                        label_column="level", suffix=".jpeg")
    samples, problems = source.samples()
    assert [s.key for s in samples][:2] == ["0_left.jpeg", "1_left.jpeg"]
    assert {s.label for s in samples} == {"0", "1", "2"}
    reasons = {p.key: p.reason for p in problems}
    assert "missing" in reasons["99_left.jpeg"] and "not listed" in reasons["stray.jpeg"]
    assert len(prepare(source, seed=0).manifest) == 12


def test_split_column_fixes_the_split(tmp_path):
    rows = []
    for i in range(9):
        noise(seed=i).save(tmp_path / f"{i}.png")
        rows.append((f"{i}.png", "ab"[i % 2], ["train", "valid", "test"][i % 3]))
    pd.DataFrame(rows, columns=["path", "label", "fold"]).to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    prepared = prepare(LabelTable(str(tmp_path / "labels.tsv"), split_column="fold"), seed=0)
    assert dict(zip(prepared.manifest.key, prepared.manifest.split)) == {
        f"{i}.png": ["train", "val", "test"][i % 3] for i in range(9)
    }


def test_parquet_integer_labels_read_as_text(tmp_path):
    for i in range(3):
        noise(seed=i).save(tmp_path / f"{i}.png")
    pd.DataFrame({"path": ["0.png", "1.png", "2.png"], "label": [0, 4, 4]}).to_parquet(tmp_path / "t.parquet")
    samples, _ = LabelTable(str(tmp_path / "t.parquet")).samples()
    assert [s.label for s in samples] == ["0", "4", "4"]


def test_unknown_column_names_file_and_columns(retina):
    with pytest.raises(TunevisionError, match=r"trainLabels.csv: no column 'path' \(columns: image, level\)"):
        LabelTable(str(retina / "trainLabels.csv")).samples()


def test_with_root_replaces_images_for_a_folder_and_table_for_a_file(retina):
    source = LabelTable(str(retina / "trainLabels.csv"), images="old")
    assert source.with_root(str(retina / "train")).images == str(retina / "train")
    assert source.with_root("other.csv").table == str(Path.cwd() / "other.csv")  # relative: the driver's folder


@pytest.fixture
def escaping(tmp_path):
    """images/ with six inside files (one listed by absolute path) and rows that lead outside: '../', absolute, symlinks."""
    images, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    images.mkdir()
    elsewhere.mkdir()
    for i in range(6):
        noise(seed=i).save(images / f"in{i}.png")
    noise(seed=5).save(tmp_path / "secret.png")
    noise(seed=6).save(elsewhere / "far.png")
    (images / "link.png").symlink_to(tmp_path / "secret.png")
    (images / "linked_dir").symlink_to(elsewhere, target_is_directory=True)
    rows = [(f"in{i}.png", "ab"[i % 2]) for i in range(5)] + [(str(images / "in5.png"), "b"), ("../secret.png", "a"), (str(tmp_path / "secret.png"), "b"),
            ("link.png", "a"), ("linked_dir/far.png", "b"), ("sub/../../elsewhere/far.png", "a")]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(tmp_path / "table.csv", index=False)
    return tmp_path


def test_rows_that_resolve_outside_the_image_folder_are_refused_and_reported(escaping):
    images = escaping / "images"
    source = LabelTable(str(escaping / "table.csv"), images=str(images))
    samples, problems = source.samples()

    assert [s.key for s in samples] == [f"in{i}.png" for i in range(6)]  # in5.png was absolute, inside: kept, relative
    reasons = {p.key: p.reason for p in problems}
    refused = "; refused (LabelTable(allow_outside=True) accepts it)"
    assert reasons == {
        "../secret.png": f"'..' leads outside {images}{refused}",
        str(escaping / "secret.png"): f"absolute path outside {images}{refused}",
        "link.png": f"a symlink out of {images} (to {escaping / 'secret.png'}){refused}",
        "linked_dir/far.png": f"a symlink out of {images} (to {escaping / 'elsewhere' / 'far.png'}){refused}",
        "../elsewhere/far.png": f"'..' leads outside {images}{refused}",  # from sub/../../elsewhere/far.png
    }
    report = prepare(source, seed=0).report()
    assert f"  link.png: a symlink out of {images}" in report and f"  ../secret.png: '..' leads outside {images}" in report


def test_allow_outside_accepts_rows_outside_the_image_folder(escaping):
    source = LabelTable(str(escaping / "table.csv"), images=str(escaping / "images"), allow_outside=True)
    samples, problems = source.samples()
    assert len(samples) == 11 and problems == []
    assert source.describe().endswith(", allow_outside=True)")

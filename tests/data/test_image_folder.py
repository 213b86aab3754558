"""ImageFolder lists class folders, honours train/val/test folders and reports bad files."""
from __future__ import annotations

import pytest
from conftest import encoded, noise, write_folder

from tunevision.data import ImageFolder, prepare
from tunevision.errors import TunevisionError


def test_bad_files_become_problems_and_are_skipped(folder):
    (folder / "a" / "empty.jpg").write_bytes(b"")
    (folder / "a" / "random.jpg").write_bytes(b"\x01\x02 not an image" * 20)
    data = encoded(noise(64), "JPEG")
    (folder / "b" / "cut.jpg").write_bytes(data[: len(data) // 2])
    (folder / "b" / "png-inside.jpeg").write_bytes(encoded(noise(8), "PNG"))
    prepared = prepare(ImageFolder(str(folder)), seed=0)
    reasons = {p.key: p.reason for p in prepared.problems}
    assert set(reasons) == {"a/empty.jpg", "a/random.jpg", "b/cut.jpg"}
    assert reasons["a/empty.jpg"] == "empty file"
    assert reasons["a/random.jpg"].startswith("not an image")
    assert reasons["b/cut.jpg"].startswith("truncated")
    assert "b/png-inside.jpeg" in set(prepared.manifest["key"])
    assert len(prepared.manifest) == 61
    assert "a/empty.jpg: empty file" in prepared.report()


def test_train_val_test_folders_fix_the_split(tmp_path):
    for split, count in (("train", 4), ("val", 2), ("test", 1)):
        write_folder(tmp_path / split, {"cat": count, "dog": count})
    prepared = prepare(ImageFolder(str(tmp_path)), seed=0)
    assert prepared.counts() == {"train": {"cat": 4, "dog": 4}, "val": {"cat": 2, "dog": 2}, "test": {"cat": 1, "dog": 1}}
    assert prepared.manifest.set_index("key").loc["val/cat/0.png", "split"] == "val"


def test_missing_root_is_a_one_line_error(tmp_path):
    with pytest.raises(TunevisionError, match="is not a folder"):
        ImageFolder(str(tmp_path / "nope")).samples()


def test_with_root_replaces_the_folder(folder, tmp_path):
    assert ImageFolder("elsewhere", split=(0.6, 0.2, 0.2)).with_root(str(folder)) == ImageFolder(str(folder), (0.6, 0.2, 0.2))

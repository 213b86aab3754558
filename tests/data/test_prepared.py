"""prepare() splits stratified and deterministically, reuses a manifest and reports counts and weights."""
from __future__ import annotations

import pickle

import pandas as pd
import pytest
from conftest import write_folder

from tunevision.data import ImageFolder, prepare
from tunevision.errors import TunevisionError


def test_same_seed_same_manifest_other_seed_other_manifest(folder):
    first, again, other = (prepare(ImageFolder(str(folder)), seed=s) for s in (0, 0, 1))
    pd.testing.assert_frame_equal(first.manifest, again.manifest)
    assert not first.manifest.equals(other.manifest)
    assert first.fingerprint() == again.fingerprint() != other.fingerprint()


def test_split_is_stratified(folder):
    counts = prepare(ImageFolder(str(folder)), seed=0).counts()
    assert counts == {"train": {"a": 8, "b": 16, "c": 24}, "val": {"a": 1, "b": 2, "c": 3}, "test": {"a": 1, "b": 2, "c": 3}}


def test_given_manifest_is_reused_instead_of_splitting(folder):
    saved = prepare(ImageFolder(str(folder)), seed=0).manifest
    resumed = prepare(ImageFolder(str(folder)), seed=1, manifest=pd.read_csv(pd.io.common.StringIO(saved.to_csv(index=False))))
    pd.testing.assert_frame_equal(resumed.manifest, saved)


def test_manifest_naming_a_vanished_sample_is_an_error(folder):
    saved = prepare(ImageFolder(str(folder)), seed=0).manifest
    (folder / "a" / "0.png").unlink()
    with pytest.raises(TunevisionError, match=r"manifest: sample 'a/0.png' is no longer usable"):
        prepare(ImageFolder(str(folder)), seed=0, manifest=saved)


def test_class_too_small_for_a_stratified_split_is_named(tmp_path):
    write_folder(tmp_path, {"many": 10, "rare": 2})
    with pytest.raises(TunevisionError, match=r"class 'rare' has 2 usable sample\(s\); a stratified train/val/test split needs at least 3"):
        prepare(ImageFolder(str(tmp_path)), seed=0)


def test_class_weights_are_inverse_train_frequency_with_mean_one(folder):
    weights = prepare(ImageFolder(str(folder)), seed=0).class_weights()
    assert weights.mean().item() == pytest.approx(1.0)
    assert weights[0] / weights[2] == pytest.approx(24 / 8)  # train counts a=8, c=24


def test_prepared_data_pickles_and_reports(folder):
    prepared = pickle.loads(pickle.dumps(prepare(ImageFolder(str(folder)), seed=0)))
    report = prepared.report()
    assert "60 usable, 0 problem(s)" in report and "classes (3): a, b, c" in report
    assert prepared.manifest_csv().splitlines()[0] == "key,label,split"

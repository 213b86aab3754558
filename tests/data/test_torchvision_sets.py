"""TorchvisionSet reads a set already under root and otherwise says where to put it, without hanging."""
from __future__ import annotations

import time

import numpy as np
import pytest

from tunevision.data import TorchvisionSet, prepare
from tunevision.data import torchvision_sets
from tunevision.errors import TunevisionError


def _idx(path, array: np.ndarray, magic: int) -> None:
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_fake_fashion_mnist(root, per_class: int = 3) -> None:
    """A FashionMNIST raw folder in torchvision's layout, with `per_class` images of each of the 10 classes."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    labels = np.repeat(np.arange(10), per_class)
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 28, 28))
    for part in ("train", "t10k"):
        _idx(raw / f"{part}-images-idx3-ubyte", images, 0x803)
        _idx(raw / f"{part}-labels-idx1-ubyte", labels, 0x801)


def test_set_under_root_is_used_with_official_test_split(tmp_path):
    write_fake_fashion_mnist(tmp_path)
    source = TorchvisionSet("FashionMNIST", root=str(tmp_path))
    prepared = prepare(source, seed=0)
    assert source.channels == 1 and "T-shirt/top" in prepared.classes
    counts = prepared.counts()
    assert sum(counts["test"].values()) == 30 and all(n == 1 for n in counts["val"].values())


def test_samples_are_keyed_on_the_file_that_holds_them_so_a_replaced_set_is_a_new_cache(tmp_path):
    write_fake_fashion_mnist(tmp_path)
    source = TorchvisionSet("FashionMNIST", root=str(tmp_path))
    raw = tmp_path / "FashionMNIST" / "raw"
    assert source.path("FashionMNIST/train/4") == str(raw / "train-images-idx3-ubyte")
    assert source.path("FashionMNIST/test/4") == str(raw / "t10k-images-idx3-ubyte")
    assert TorchvisionSet("CIFAR10", root="/d").path("CIFAR10/train/23456") == "/d/cifar-10-batches-py/data_batch_3"
    before = prepare(source, seed=0).fingerprint()
    _idx(raw / "t10k-images-idx3-ubyte", np.zeros((30, 28, 28)), 0x803)  # the test images replaced
    assert prepare(TorchvisionSet("FashionMNIST", root=str(tmp_path)), seed=0).fingerprint() != before


def test_missing_set_without_network_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision_sets, "reachable", lambda host, timeout: False)
    started = time.monotonic()
    with pytest.raises(TunevisionError, match=r"put FashionMNIST/raw/\{train-images-idx3-ubyte"):
        TorchvisionSet("FashionMNIST", root=str(tmp_path)).samples()
    assert time.monotonic() - started < 5


def test_unknown_set_lists_known_ones():
    with pytest.raises(TunevisionError, match=r"unknown set 'Fashion' \(known: FashionMNIST, MNIST"):
        TorchvisionSet("Fashion")

"""The decode-once cache is built once per (data, size, channels) and then only read."""
from __future__ import annotations

import threading

import numpy as np

from tunevision.data import ImageFolder, prepare
from tunevision.data.cache import cache_path, cached_images
from tunevision.data.decode import to_array


class CountingFolder(ImageFolder):
    """An ImageFolder that counts how often it opens a sample."""

    opened = 0
    lock = threading.Lock()

    def open(self, key):
        with CountingFolder.lock:
            CountingFolder.opened += 1
        return super().open(key)


def test_cache_is_built_once_then_read_without_decoding(folder, tmp_path):
    data = prepare(CountingFolder(str(folder)), seed=0)
    CountingFolder.opened = 0
    first = cached_images(data, 6)
    assert CountingFolder.opened == 60 and first.shape == (60, 6, 6, 3) and first.dtype == np.uint8
    second = cached_images(data, 6)
    assert CountingFolder.opened == 60  # nothing decoded again
    assert isinstance(second, np.memmap) and np.array_equal(first, second)
    cached_images(data, 8)
    assert CountingFolder.opened == 120  # a new size is a new cache
    assert sorted(p.name for p in cache_path(data, 6).parent.iterdir() if p.suffix == ".npy") == [
        f"{data.fingerprint()}-6px-3c.npy", f"{data.fingerprint()}-8px-3c.npy"
    ]


def test_concurrent_builders_decode_once(folder):
    data = prepare(CountingFolder(str(folder)), seed=0)
    CountingFolder.opened = 0
    threads = [threading.Thread(target=cached_images, args=(data, 5)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert CountingFolder.opened == 60


def test_rows_follow_the_manifest(folder):
    data = prepare(ImageFolder(str(folder)), seed=0)
    images = cached_images(data, 4)
    for row in (0, 7, 59):
        assert np.array_equal(images[row], to_array(ImageFolder(str(folder)).open(data.manifest.key[row]), 4, 3))

"""The decode-once cache: built once per (data, size, channels), keyed on the files, bounded, and failing in one line."""
from __future__ import annotations

import errno
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import noise

from tunevision.data import Digits, ImageFolder, prepare
from tunevision.data.cache import cache_path, cached_images
from tunevision.data.decode import to_array
from tunevision.errors import TunevisionError


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


def test_an_image_replaced_in_place_is_decoded_again_not_served_stale(folder):
    data = prepare(ImageFolder(str(folder)), seed=0)
    row = int(data.manifest.index[data.manifest.key == "b/3.png"][0])
    before, key = np.array(cached_images(data, 6)[row]), data.fingerprint()
    noise(seed=777).save(folder / "b" / "3.png", "PNG")  # same name, other pixels

    again = prepare(ImageFolder(str(folder)), seed=0)  # the next search over the same folder
    after = cached_images(again, 6)

    assert again.fingerprint() != key
    assert np.array_equal(after[row], to_array(noise(seed=777), 6, 3)) and not np.array_equal(after[row], before)


def test_added_and_removed_images_change_the_cache_key(folder):
    first = prepare(ImageFolder(str(folder)), seed=0).fingerprint()
    noise(seed=900).save(folder / "a" / "new.png", "PNG")
    added = prepare(ImageFolder(str(folder)), seed=0).fingerprint()
    (folder / "c" / "0.png").unlink()
    removed = prepare(ImageFolder(str(folder)), seed=0).fingerprint()
    assert len({first, added, removed}) == 3


def test_in_memory_digits_keep_one_cache_key():
    assert prepare(Digits(), seed=0).fingerprint() == prepare(Digits(), seed=0).fingerprint()


def test_least_recently_used_caches_are_evicted_to_keep_the_folder_under_its_bound(folder, monkeypatch):
    data = prepare(ImageFolder(str(folder)), seed=0)
    paths = {}
    for age, size in ((3000, 7), (2000, 8), (1000, 9)):  # 7 px is the least recently used
        paths[size] = Path(cached_images(data, size).filename)
        os.utime(paths[size], (time.time() - age, time.time() - age))
    cached_images(data, 8)  # used again: now the most recent
    bound = sum(60 * s * s * 3 + 128 for s in (6, 8, 9)) + 100  # rows and .npy header: room for 6, 8 and 9 px only
    monkeypatch.setenv("TUNEVISION_CACHE_MAX_GB", str(bound / 1e9))

    cached_images(data, 6)

    left = sorted(p.name for p in paths[8].parent.glob("*.npy"))
    assert left == sorted([paths[8].name, paths[9].name, cache_path(data, 6).name])
    assert not Path(f"{paths[7]}.lock").exists()
    assert sum(p.stat().st_size for p in paths[8].parent.glob("*.npy")) <= bound


def test_a_cache_used_in_the_last_minute_is_never_evicted(folder, monkeypatch):
    data = prepare(ImageFolder(str(folder)), seed=0)
    monkeypatch.setenv("TUNEVISION_CACHE_MAX_GB", "1e-9")  # one byte: everything is over the bound
    first = Path(cached_images(data, 5).filename)
    cached_images(data, 6)
    assert first.exists()  # a trial may be about to map it


def test_a_bad_cache_bound_is_one_line(folder, monkeypatch):
    monkeypatch.setenv("TUNEVISION_CACHE_MAX_GB", "lots")
    with pytest.raises(TunevisionError, match=r"^TUNEVISION_CACHE_MAX_GB='lots': expected a positive number of gigabytes \(default 50\)$"):
        cached_images(prepare(ImageFolder(str(folder)), seed=0), 5)


def test_a_file_deleted_after_validation_fails_the_build_naming_the_file_and_the_node(folder):
    data = prepare(ImageFolder(str(folder)), seed=0)
    (folder / "c" / "7.png").unlink()  # after prepare (the driver), before a trial builds the cache

    with pytest.raises(TunevisionError) as failed:
        cached_images(data, 6, workers=2)

    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"decode cache: {folder / 'c' / '7.png'}: missing file on node {socket.gethostname()}, ")
    assert not [p for p in cache_path(data, 6).parent.glob("*.npy*") if p.suffix != ".lock"]  # no cache, no temporary file


@pytest.mark.parametrize("writer", ["_write", "posix_fallocate"])
def test_a_full_disk_fails_the_build_naming_the_file_and_the_node(folder, monkeypatch, writer):
    import tunevision.data.cache as cache

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache if writer == "_write" else cache.os, writer, full)
    data = prepare(ImageFolder(str(folder)), seed=0)

    with pytest.raises(TunevisionError) as failed:
        cached_images(data, 6)

    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"decode cache: cannot write {cache_path(data, 6)}.tmp{os.getpid()} (0.00 GB) "
                              f"on node {socket.gethostname()}: no space left on device; ")
    assert not [p for p in cache_path(data, 6).parent.glob("*.npy*") if p.suffix != ".lock"]

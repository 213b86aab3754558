"""Decode-once cache: every image decoded and resized once per (data, size, channels) into a local .npy file.

The first trial on a node to need a size builds the file under an exclusive `fcntl.flock`, writing a
temporary file that is renamed into place (`os.replace`), so a crash never leaves a half-written cache
and concurrent trials build it once; afterwards every trial maps it read-only (`np.load(mmap_mode="r")`).
Rows follow the manifest's order; samples the manifest excludes are never decoded.
"""
from __future__ import annotations

import fcntl
import glob
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.format import open_memmap

from tunevision.data.decode import to_array

if TYPE_CHECKING:
    from tunevision.data.prepared import PreparedData


def cache_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: `directory`, else `$TUNEVISION_CACHE`, else `~/.cache/tunevision`."""
    chosen = directory or os.environ.get("TUNEVISION_CACHE") or Path.home() / ".cache" / "tunevision"
    return Path(chosen).expanduser()


def cache_path(data: PreparedData, size: int, directory: str | os.PathLike[str] | None = None) -> Path:
    """Where the cache of `data` at `size` pixels lives."""
    return cache_dir(directory) / f"{data.fingerprint()}-{size}px-{data.source.channels}c.npy"


def cached_images(
    data: PreparedData, size: int, directory: str | os.PathLike[str] | None = None, workers: int | None = None
) -> np.ndarray:
    """Return every manifest image as a read-only uint8 array N x size x size x C, building the cache if needed.

    Example::

        >>> from tunevision.data import Digits, prepare
        >>> cached_images(prepare(Digits(), seed=0), 16).shape
        (1797, 16, 16, 1)
    """
    path = cache_path(data, size, directory)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not path.exists():  # another process may have built it while we waited
                    _build(data, size, path, workers)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    return np.load(path, mmap_mode="r")


def _build(data: PreparedData, size: int, path: Path, workers: int | None) -> None:
    for stale in glob.glob(f"{glob.escape(str(path))}.tmp*"):  # left by a build that crashed
        os.remove(stale)
    source, keys = data.source, list(data.manifest["key"])
    tmp = f"{path}.tmp{os.getpid()}"
    array = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(keys), size, size, source.channels))

    def fill(row: int) -> None:
        with source.open(keys[row]) as image:
            array[row] = to_array(image, size, source.channels)

    # Pillow releases the GIL while decoding and resizing, so threads use every core.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        list(pool.map(fill, range(len(keys))))
    array.flush()
    os.replace(tmp, path)

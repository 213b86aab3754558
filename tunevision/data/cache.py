"""Decode-once cache: every image decoded and resized once per (data, size, channels) into a local .npy file.

The key (`PreparedData.fingerprint`) covers the source, the manifest and each sample file's size and
modification time on this node, so a replaced, added or removed image gives a new cache. The first
trial on a node to need a size builds the file under an exclusive `fcntl.flock`, writing a temporary
file that is renamed into place (`os.replace`), so a crash never leaves a half-written cache and
concurrent trials build it once; afterwards every trial maps it read-only (`np.load(mmap_mode="r")`).
Rows follow the manifest's order; samples the manifest excludes are never decoded.

The folder is bounded: before a build, the least recently used caches (`<key>-*.npy`, any depth) are removed
until the new one fits in `$TUNEVISION_CACHE_MAX_GB` (default 50). The new file's blocks are reserved
before any row is written, and rows are written with `os.pwrite`, so a full disk is an error naming the
file and the node, never a SIGBUS.
"""
from __future__ import annotations

import errno
import glob
import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.format import open_memmap

from tunevision.data.decode import DecodeError, to_array
from tunevision.data.once import build_once
from tunevision.errors import TunevisionError

if TYPE_CHECKING:
    from tunevision.data.prepared import PreparedData

DEFAULT_MAX_GB = 50.0
IN_USE_S = 60.0  # a cache used this recently may be about to be mapped by a trial: never evicted
CACHE_NAME = re.compile(r"[0-9a-f]{16}-.*\.npy")


def cache_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: `directory`, else `$TUNEVISION_CACHE`, else `~/.cache/tunevision`."""
    chosen = directory or os.environ.get("TUNEVISION_CACHE") or Path.home() / ".cache" / "tunevision"
    return Path(chosen).expanduser()


def max_bytes() -> int:
    """The cache folder's bound in bytes: `$TUNEVISION_CACHE_MAX_GB` gigabytes (10^9 bytes), default 50."""
    text = os.environ.get("TUNEVISION_CACHE_MAX_GB", "").strip()
    try:
        gigabytes = float(text) if text else DEFAULT_MAX_GB
    except ValueError:
        gigabytes = -1.0
    if not gigabytes > 0:
        raise TunevisionError(f"TUNEVISION_CACHE_MAX_GB={text!r}: expected a positive number of gigabytes (default {DEFAULT_MAX_GB:g})")
    return int(gigabytes * 1e9)


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
    for _ in range(3):  # another process may evict it between our build and our mapping: build again
        build_once(path, lambda: _build(data, size, path, workers))
        try:
            os.utime(path)  # least recently used goes first when the folder is full
            return np.load(path, mmap_mode="r")
        except FileNotFoundError:
            continue
    raise TunevisionError(f"decode cache: {path} on node {socket.gethostname()} is removed as soon as it is built: "
                          f"raise TUNEVISION_CACHE_MAX_GB ({max_bytes() / 1e9:g} GB)")


def evict(directory: Path, room: int, limit: int | None = None) -> list[Path]:
    """Remove the least recently used caches under `directory` until `room` more bytes fit in `limit`; return them.

    Caches are the `.npy` files, at any depth, whose name starts with a 16-hex-digit key (as every cache
    tunevision writes is named): nothing else in the folder is ever removed.
    """
    limit = max_bytes() if limit is None else limit
    caches = []
    for path in directory.rglob("*.npy"):
        if not CACHE_NAME.match(path.name):
            continue
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        caches.append((info.st_mtime, info.st_size, path))
    total, removed, now = sum(size for _, size, _ in caches) + room, [], time.time()
    for used, size, path in sorted(caches):
        if total <= limit:
            break
        if now - used < IN_USE_S:
            continue
        # A trial that has the file mapped keeps reading it: unlinking only drops the name.
        Path(path).unlink(missing_ok=True)
        Path(f"{path}.lock").unlink(missing_ok=True)
        total -= size
        removed.append(path)
    return removed


def _build(data: PreparedData, size: int, path: Path, workers: int | None) -> None:
    for stale in glob.glob(f"{glob.escape(str(path))}.tmp*"):  # left by a build that crashed
        os.remove(stale)
    source, keys = data.source, list(data.manifest["key"])
    shape = (len(keys), size, size, source.channels)
    row_bytes = size * size * source.channels
    evict(path.parent, len(keys) * row_bytes)
    tmp = f"{path}.tmp{os.getpid()}"
    node = socket.gethostname()

    def fill(row: int) -> None:
        try:
            with source.open(keys[row]) as image:
                pixels = to_array(image, size, source.channels)
        except (DecodeError, OSError) as exc:
            reason = str(exc) if isinstance(exc, DecodeError) else f"{type(exc).__name__}: {exc.strerror or exc}"
            where = source.path(keys[row]) or keys[row]
            raise TunevisionError(f"decode cache: {where}: {reason} on node {node}, though it passed validation "
                                  f"when the search started: was it changed, moved or deleted since?") from None
        _write(fd, pixels, offset + row * row_bytes)

    try:
        header = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        offset = header.offset
        del header
        fd = os.open(tmp, os.O_RDWR)
        try:
            if hasattr(os, "posix_fallocate"):  # reserve every block now: a full disk fails here, not mid-write
                os.posix_fallocate(fd, 0, offset + len(keys) * row_bytes)
            # Pillow releases the GIL while decoding and resizing, so threads use every core.
            with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
                list(pool.map(fill, range(len(keys))))
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        why = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise TunevisionError(
            f"decode cache: cannot write {tmp} ({len(keys) * row_bytes / 1e9:.2f} GB) on node {node}: {why}; free space "
            f"there, or point TUNEVISION_CACHE at a larger local disk"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write(fd: int, pixels: np.ndarray, offset: int) -> None:
    """Write one row at `offset` (thread-safe; a full disk raises OSError, where a memory-mapped write would SIGBUS)."""
    view = memoryview(np.ascontiguousarray(pixels)).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written

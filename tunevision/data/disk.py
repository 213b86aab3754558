"""What the caches hold on disk: list them with their sizes, keep the feature cache under its bound, clear them.

The cache folder (`$TUNEVISION_CACHE`, default `~/.cache/tunevision`) holds the decode cache's
`<fingerprint>-<size>px-<channels>c.npy` files and, under `features/`, the feature cache's `<key>.npy`
files with a `<key>.npy.json` saying what each holds. The feature cache keeps at most
`$TUNEVISION_FEATURE_CACHE_GB` (default 10) GB: after each use, the least recently used feature files
beyond it are removed (a trial that has one mapped keeps reading it).
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path

from tunevision.data.cache import cache_dir
from tunevision.errors import TunevisionError

LIMIT_ENV = "TUNEVISION_FEATURE_CACHE_GB"
DEFAULT_LIMIT_GB = 10.0
KINDS = ("decoded", "features")


@dataclass(frozen=True)
class Entry:
    """One cache file: its kind ("decoded" or "features"), path, size in bytes, last use and what it holds."""

    kind: str
    path: Path
    bytes: int
    used: float
    about: str


def feature_limit() -> int:
    """The feature cache's bound in bytes, from `$TUNEVISION_FEATURE_CACHE_GB`."""
    text = os.environ.get(LIMIT_ENV, str(DEFAULT_LIMIT_GB))
    try:
        gigabytes = float(text)
    except ValueError:
        gigabytes = -1.0
    if gigabytes < 0:
        raise TunevisionError(f"${LIMIT_ENV}={text!r}: expected gigabytes >= 0")
    return int(gigabytes * 1e9)


def _about(path: Path) -> str:
    try:
        parts = json.loads(Path(f"{path}.json").read_text())
    except (OSError, ValueError):
        return ""
    views = parts.get("views")
    view = f", augmented view {views['view']}" if isinstance(views, dict) else ""
    return (f"{parts.get('backbone')} {parts.get('boundary')} {parts.get('image_size')}px {parts.get('channels')}c, "
            f"{parts.get('rows')} x {parts.get('dim')}{view}, images {parts.get('images')}")


def entries(directory: str | os.PathLike[str] | None = None, kinds: tuple[str, ...] = KINDS) -> list[Entry]:
    """Every cache file of `kinds`, oldest use first."""
    root = cache_dir(directory)
    found = []
    for kind, folder in (("decoded", root), ("features", root / "features")):
        if kind not in kinds:
            continue
        for path in folder.glob("*.npy"):
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed meanwhile by another process
                continue
            about = _about(path) if kind == "features" else path.stem
            found.append(Entry(kind, path, stat.st_size, stat.st_mtime, about))
    return sorted(found, key=lambda e: e.used)


def bound_features(directory: str | os.PathLike[str] | None = None, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used feature files until the feature cache fits its bound; return those removed."""
    files = entries(directory, ("features",))
    total, limit, removed = sum(e.bytes for e in files), feature_limit(), []
    for entry in files:
        if total <= limit:
            break
        if entry.path == keep:
            continue
        _remove(entry.path)
        total -= entry.bytes
        removed.append(entry.path)
    return removed


def clear(directory: str | os.PathLike[str] | None = None, kinds: tuple[str, ...] = KINDS) -> tuple[int, int]:
    """Remove the cache files of `kinds` (with their lock, temporary and description files); return (files, bytes)."""
    files = entries(directory, kinds)
    for entry in files:
        _remove(entry.path)
    return len(files), sum(e.bytes for e in files)


def _remove(path: Path) -> None:
    for extra in [f"{path}.json", f"{path}.lock", *glob.glob(f"{glob.escape(str(path))}.tmp*"), str(path)]:
        try:
            os.remove(extra)
        except FileNotFoundError:
            pass


def human(size: float) -> str:
    """A byte count as text: 118.2 MB."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"

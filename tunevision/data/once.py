"""Build a cache file once per node: under an exclusive lock, by whoever finds it missing first."""
from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Callable


def build_once(path: Path, build: Callable[[], None]) -> bool:
    """Call `build()` (which must leave `path` in place atomically) unless `path` exists; return whether it ran.

    Concurrent callers on one node wait on `<path>.lock` (`fcntl.flock`), so exactly one builds and the
    others find the file when they get the lock.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if path.exists():  # another process built it while we waited
                return False
            build()
            return True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

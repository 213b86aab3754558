"""Listing the files under a folder the way every folder-based source does."""
from __future__ import annotations

import os

IGNORED = {"Thumbs.db", "desktop.ini"}  # system files that are never samples


def walk_files(root: str) -> list[str]:
    """Every file under `root` (recursively, hidden and system files skipped) as sorted posix paths relative to it."""
    found = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in names:
            if not name.startswith(".") and name not in IGNORED:
                found.append(os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/"))
    return sorted(found)


def subfolders(root: str) -> list[str]:
    """The names of the visible subfolders of `root`, sorted."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))

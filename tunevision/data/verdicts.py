"""Validation verdicts remembered per file, so a second search or a `--resume` skips decoding unchanged images.

A verdict (usable, or the reason it is not) is keyed on the file's path, the sample's key, the channels
it is converted to and Pillow's version, and holds the file's size and modification time (ns) when it
was decoded: a file whose size or time differs is decoded again, the quick check `make` and `rsync` use.
The store is one SQLite file in the cache folder of the machine that validates (the driver); writes are
transactions, so two drivers validating at once never see a half-written verdict. Any trouble with the
store (read-only folder, a damaged file) only means decoding again.
"""
from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Iterable, Mapping

import PIL

FILE = "verdicts.sqlite"
USABLE = ""  # the stored reason of a usable sample
_SCHEMA = """CREATE TABLE IF NOT EXISTS verdicts (
    file TEXT NOT NULL, key TEXT NOT NULL, channels INTEGER NOT NULL, decoder TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (file, key, channels, decoder))"""
DECODER = f"pillow {PIL.__version__}"

Stamp = tuple[int, int]  # (size, mtime_ns)


def stamp(path: str) -> Stamp | None:
    """(size, mtime_ns) of `path`, or None when it cannot be stat'ed (missing: validation says why)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


class Verdicts:
    """The verdict store of one cache folder.

    Example::

        >>> store = Verdicts("/tmp/tunevision-doc")
        >>> store.remember(3, {("/tmp/a.png", "a.png"): ((10, 1), "")})
        >>> store.recall(3, {("/tmp/a.png", "a.png"): (10, 1)})
        {('/tmp/a.png', 'a.png'): ''}
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / FILE

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._open()
        except sqlite3.OperationalError:  # locked for longer than the timeout, read-only...: not ours to fix
            raise
        except sqlite3.DatabaseError:  # not a database (damaged, or another file): start a new store
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return self._open()

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=60)  # another driver's write waits, not fails
        try:
            connection.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            connection.execute(_SCHEMA)
        except BaseException:
            connection.close()
            raise
        return connection

    def recall(self, channels: int, files: Mapping[tuple[str, str], Stamp]) -> dict[tuple[str, str], str]:
        """The remembered reason ("" = usable) of every (file, key) whose stamp is unchanged."""
        if not files:
            return {}
        try:
            with closing(self._connect()) as db:
                found = {}
                for (file, key), now in files.items():
                    row = db.execute(
                        "SELECT size, mtime_ns, reason FROM verdicts WHERE file=? AND key=? AND channels=? AND decoder=?",
                        (file, key, channels, DECODER),
                    ).fetchone()
                    if row is not None and (row[0], row[1]) == now:
                        found[(file, key)] = row[2]
                return found
        except (sqlite3.Error, OSError):
            return {}

    def remember(self, channels: int, verdicts: Mapping[tuple[str, str], tuple[Stamp, str]]) -> None:
        """Store verdicts: (file, key) -> ((size, mtime_ns) when decoded, reason or "")."""
        rows: Iterable[tuple] = [
            (file, key, channels, DECODER, size, mtime, reason) for (file, key), ((size, mtime), reason) in verdicts.items()
        ]
        try:
            with closing(self._connect()) as db, db:  # one transaction: all of them or none
                db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        except (sqlite3.Error, OSError):
            pass

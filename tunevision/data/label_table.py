"""LabelTable: a table (CSV, TSV, Excel, Parquet) of image paths or names and their labels."""
from __future__ import annotations

import dataclasses
import os
import posixpath
from dataclasses import dataclass

from PIL import Image

from tunevision.data.base import SPLITS, DataSource, Problem, Sample
from tunevision.data.decode import open_file
from tunevision.data.files import walk_files
from tunevision.data.tables import READERS
from tunevision.errors import TunevisionError

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test", "": None}


@dataclass
class LabelTable(DataSource):
    """Images under `images` listed in `table` with their labels (stored as text: grade 0 -> "0").

    `path_column` holds paths relative to `images` (or bare names); `suffix` is appended to names that
    lack it (`10_left` -> `10_left.jpeg`). `split_column`, if given, fixes each row's split (train, val
    or test; an empty cell leaves the row to the stratified split). Rows whose file is missing and image
    files under `images` that no row lists become problems. `images` defaults to the table's folder, and
    a relative `images` is relative to the table's folder, so `--data other/trainLabels.csv` finds
    `other/train/`. Rows whose path resolves outside `images` (`../`, an absolute path elsewhere, a
    symlink out) are problems too, unless `allow_outside=True`: a table must not reach files it does
    not own.

    Example::

        >>> source = LabelTable("trainLabels.csv", images="train", path_column="image", label_column="level", suffix=".jpeg")
    """

    table: str
    images: str | None = None
    path_column: str = "path"
    label_column: str = "label"
    suffix: str = ""
    split_column: str | None = None
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    channels: int = 3
    allow_outside: bool = False  # accept rows whose path resolves outside `images`

    def __post_init__(self) -> None:
        # Trial processes run in other folders (and on other nodes): a relative table means the driver's folder;
        # `images` stays relative to the table's folder.
        self.table = os.path.abspath(os.path.expanduser(self.table))

    @property
    def image_dir(self) -> str:
        """The folder the table's paths are relative to."""
        return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(self.table)), os.path.expanduser(self.images or "")))

    def samples(self) -> tuple[list[Sample], list[Problem]]:
        """List the table's rows; missing files, duplicate rows and unlisted images are problems."""
        frame = self._read()
        samples, problems, seen = [], [], set()
        inside = _Inside(self.image_dir)
        columns = [self.path_column, self.label_column] + ([self.split_column] if self.split_column else [])
        for row, (name, label, *split) in enumerate(frame[columns].itertuples(index=False, name=None), start=2):
            key = posixpath.normpath(name.strip().replace("\\", "/")) if name.strip() else ""
            if not key:
                problems.append(Problem(f"{os.path.basename(self.table)} row {row}", f"empty {self.path_column!r}"))
                continue
            key += "" if key.endswith(self.suffix) else self.suffix
            key = inside.relative(key)
            if key in seen:
                problems.append(Problem(key, f"listed more than once in {os.path.basename(self.table)} (first row kept)"))
                continue
            seen.add(key)
            outside = None if self.allow_outside else inside.escape(key)
            if not label.strip():
                problems.append(Problem(key, f"empty {self.label_column!r}"))
            elif outside:
                problems.append(Problem(key, f"{outside}; refused (LabelTable(allow_outside=True) accepts it)"))
            elif not os.path.isfile(self.path(key)):
                problems.append(Problem(key, f"listed in {os.path.basename(self.table)} but missing under {self.image_dir}"))
            else:
                samples.append(Sample(key, label.strip(), self._split(split, row)))
        table = os.path.abspath(self.table)
        for name in walk_files(self.image_dir):
            if name not in seen and os.path.abspath(os.path.join(self.image_dir, name)) != table:
                problems.append(Problem(name, f"on disk but not listed in {os.path.basename(self.table)}"))
        return samples, problems

    def _read(self):
        extension = os.path.splitext(self.table)[1].lower()
        if extension not in READERS:
            raise TunevisionError(f"LabelTable: {self.table}: unknown table type {extension!r} (known: {', '.join(READERS)})")
        if not os.path.isfile(self.table):
            raise TunevisionError(f"LabelTable: table {self.table!r} not found (point at it with --data PATH)")
        if not os.path.isdir(self.image_dir):
            raise TunevisionError(f"LabelTable: images folder {self.image_dir!r} not found (point at it with --data PATH)")
        try:
            frame = READERS[extension](self.table)
        except ImportError as exc:
            raise TunevisionError(f"LabelTable: {self.table}: reading {extension} needs {exc.name} (pip install {exc.name})") from None
        for column in (self.path_column, self.label_column, self.split_column):
            if column is not None and column not in frame.columns:
                raise TunevisionError(
                    f"LabelTable: {self.table}: no column {column!r} (columns: {', '.join(map(str, frame.columns))})"
                )
        return frame

    def _split(self, split: list[str], row: int) -> str | None:
        if not split:
            return None
        value = split[0].strip().lower()
        if value not in SPLIT_NAMES:
            raise TunevisionError(
                f"LabelTable: {self.table}: row {row}: {self.split_column!r} is {split[0]!r} (known: {', '.join(SPLITS)})"
            )
        return SPLIT_NAMES[value]

    def open(self, key: str) -> Image.Image:
        """Open `images/key` lazily (Pillow sniffs the format; the extension is not trusted)."""
        return open_file(self.path(key))

    def path(self, key: str) -> str:
        """The file `images/key` (`key` itself when absolute)."""
        return os.path.join(self.image_dir, key)

    def with_root(self, root: str) -> LabelTable:
        """Return a copy reading from `root`: a folder replaces `images`, a file replaces the table."""
        return dataclasses.replace(self, images=root) if os.path.isdir(root) else dataclasses.replace(self, table=root)

    def describe(self) -> str:
        """Name the source with its absolute table and images paths."""
        return (
            f"LabelTable({os.path.abspath(self.table)!r}, images={os.path.abspath(self.image_dir)!r}, "
            f"path_column={self.path_column!r}, label_column={self.label_column!r}, suffix={self.suffix!r}, "
            f"split_column={self.split_column!r}, split={self.split}, channels={self.channels}"
            + (", allow_outside=True)" if self.allow_outside else ")")
        )


class _Inside:
    """Where a table's paths lead, relative to its images folder (symlinks followed)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.real = os.path.realpath(folder)
        self._real_dirs: dict[str, str] = {}

    def relative(self, key: str) -> str:
        """An absolute key inside the folder, as a path relative to it; any other key unchanged."""
        if posixpath.isabs(key) and _within(os.path.normpath(key), self.folder):
            return os.path.relpath(key, self.folder).replace(os.sep, "/")
        return key

    def escape(self, key: str) -> str | None:
        """Why `key` leads outside the folder, or None when its file (followed through symlinks) is inside."""
        path = os.path.join(self.folder, key)
        directory = os.path.dirname(path)
        if directory not in self._real_dirs:  # one realpath per folder, not per file: tables list 100,000s
            self._real_dirs[directory] = os.path.realpath(directory)
        real = os.path.realpath(path) if os.path.islink(path) else os.path.join(self._real_dirs[directory], os.path.basename(path))
        if _within(real, self.real):
            return None
        if posixpath.isabs(key):
            return f"absolute path outside {self.folder}"
        if key == ".." or key.startswith("../"):
            return f"'..' leads outside {self.folder}"
        return f"a symlink out of {self.folder} (to {real})"


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)

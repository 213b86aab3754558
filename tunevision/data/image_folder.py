"""ImageFolder: one subfolder per class, optionally inside train/ val/ test/ folders that fix the split."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from PIL import Image

from tunevision.data.base import DataSource, Problem, Sample
from tunevision.data.decode import open_file
from tunevision.data.files import subfolders, walk_files
from tunevision.errors import TunevisionError

SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class ImageFolder(DataSource):
    """Images in `root/<class>/...`, or `root/{train,val,test}/<class>/...` for an explicit split.

    Every non-hidden file inside a class folder (recursively) is a sample; files that are not images
    become problems when the data is validated. `split` gives the train/val/test fractions used when
    the layout does not fix the split.

    Example::

        >>> source = ImageFolder("../shared/datasets/graffiti")  # Graffiti/, No-Graffiti/
    """

    root: str
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    channels: int = 3

    def __post_init__(self) -> None:
        # Trial processes run in other folders (and on other nodes): a relative root means the driver's folder.
        self.root = os.path.abspath(os.path.expanduser(self.root))

    def samples(self) -> tuple[list[Sample], list[Problem]]:
        """List `root`'s class folders; an explicit layout is one whose folders are all split names."""
        if not os.path.isdir(self.root):
            raise TunevisionError(f"ImageFolder: root {self.root!r} is not a folder (point at it with --data PATH)")
        folders = subfolders(self.root)
        explicit = bool(folders) and set(folders) <= set(SPLIT_FOLDERS) and "train" in folders
        if not explicit:
            return self._classes("", None)
        samples, problems = [], []
        for folder in folders:
            found, seen = self._classes(folder + "/", SPLIT_FOLDERS[folder])
            samples += found
            problems += seen
        return samples, problems

    def _classes(self, prefix: str, split: str | None) -> tuple[list[Sample], list[Problem]]:
        base = os.path.join(self.root, prefix)
        classes = subfolders(base)
        if not classes:
            raise TunevisionError(f"ImageFolder: {base!r} has no class subfolders")
        samples, problems = [], []
        for label in classes:
            files = walk_files(os.path.join(base, label))
            if not files:
                problems.append(Problem(f"{prefix}{label}/", "class folder holds no files"))
            samples += [Sample(f"{prefix}{label}/{name}", label, split) for name in files]
        return samples, problems

    def open(self, key: str) -> Image.Image:
        """Open `root/key` lazily (Pillow sniffs the format; the extension is not trusted)."""
        return open_file(self.path(key))

    def path(self, key: str) -> str:
        """The file `root/key`."""
        return os.path.join(self.root, key)

    def with_root(self, root: str) -> ImageFolder:
        """Return a copy reading from `root`."""
        return dataclasses.replace(self, root=root)

    def describe(self) -> str:
        """Name the source with its absolute root."""
        return f"ImageFolder({os.path.abspath(self.root)!r}, split={self.split}, channels={self.channels})"

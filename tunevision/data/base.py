"""The data-source extension point: what a search's `data` must provide."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One labelled image as a source lists it, before any file is opened."""

    key: str  # stable id: a path relative to the source's root, or "<set>/<index>"
    label: str
    split: str | None = None  # "train", "val" or "test" when the source fixes the split


@dataclass(frozen=True)
class Problem:
    """A sample that cannot be used, and why (empty, unreadable, listed but missing, unlisted...)."""

    key: str
    reason: str


class DataSource(abc.ABC):
    """Where a search's images and labels come from.

    The driver calls `samples()` once, before any trial, then opens every sample with `open()`
    to validate it; trials open samples again only to fill the decode-once cache. A source must
    be picklable: it travels to every trial. A source read from files also says which file holds
    each sample (`path()`), so that a file replaced in place is never served from a cache.

    A complete custom source::

        class Squares(DataSource):
            channels = 1
            def __init__(self, n=40):
                self.n = n
            def samples(self):
                return [Sample(f"sq/{i}", "big" if i % 2 else "small") for i in range(self.n)], []
            def open(self, key):
                from PIL import Image, ImageDraw
                i = int(key.split("/")[1]); img = Image.new("L", (16, 16))
                ImageDraw.Draw(img).rectangle((2, 2, 12 if i % 2 else 5, 12 if i % 2 else 5), fill=255)
                return img
    """

    channels: int = 3  # 1 for grey data sets (digits, Fashion-MNIST); images are converted to this
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/val/test fractions when not fixed

    @abc.abstractmethod
    def samples(self) -> tuple[list[Sample], list[Problem]]:
        """List every sample with its label (no decoding) and the problems seen while listing."""

    @abc.abstractmethod
    def open(self, key: str) -> Image.Image:
        """Open one sample's image; raise on a damaged file (the validator records the reason)."""

    def path(self, key: str) -> str | None:
        """The file that holds sample `key`, or None for samples held in memory.

        Caches key on this file's size and modification time (validation verdicts, the decode
        cache), so a file replaced in place is decoded again; return None only for data that
        cannot change under the same description.
        """
        return None

    def with_root(self, root: str) -> DataSource:
        """Return a copy reading from `root` (the CLI's --data); sources without a path refuse."""
        from tunevision.errors import TunevisionError

        raise TunevisionError(f"--data: {type(self).__name__} has no root path to replace")

    def describe(self) -> str:
        """One line naming the source for reports and the MLflow run."""
        return repr(self)

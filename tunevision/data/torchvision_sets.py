"""TorchvisionSet: torchvision's built-in data sets (Fashion-MNIST, MNIST, CIFAR...) read from a local root.

A set is used if it is already under `root`; otherwise it is downloaded only when its server answers
within a few seconds, else a TunevisionError says which folder is missing and where to put it.
The official test set is the test split; the official train set is split into train/val by `split`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from PIL import Image

from tunevision.data.base import DataSource, Problem, Sample
from tunevision.errors import TunevisionError
from tunevision.online import reachable


@dataclass(frozen=True)
class SetSpec:
    """A torchvision set: its class name in torchvision.datasets, channels, expected files and download host."""

    dataset: str
    channels: int
    expected: str  # relative to root, as torchvision lays it out
    host: str
    file: Callable[[str, int], str]  # (part, index) -> the file under root holding that image


def _mnist(name: str, host: str) -> SetSpec:
    files = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
    return SetSpec(name, 1, f"{name}/raw/{{{files}}} (the .gz downloads, unpacked)", host,
                   lambda part, index: f"{name}/raw/{'train' if part == 'train' else 't10k'}-images-idx3-ubyte")


SETS: dict[str, SetSpec] = {
    "FashionMNIST": _mnist("FashionMNIST", "fashion-mnist.s3-website.eu-central-1.amazonaws.com"),
    "MNIST": _mnist("MNIST", "ossci-datasets.s3.amazonaws.com"),
    "KMNIST": _mnist("KMNIST", "codh.rois.ac.jp"),
    "CIFAR10": SetSpec("CIFAR10", 3, "cifar-10-batches-py/ (from cifar-10-python.tar.gz)", "www.cs.toronto.edu",
                       lambda part, index: f"cifar-10-batches-py/{f'data_batch_{index // 10000 + 1}' if part == 'train' else 'test_batch'}"),
    "CIFAR100": SetSpec("CIFAR100", 3, "cifar-100-python/ (from cifar-100-python.tar.gz)", "www.cs.toronto.edu",
                        lambda part, index: f"cifar-100-python/{part}"),
}


class TorchvisionSet(DataSource):
    """A torchvision built-in set under `root`; labels are its class names.

    Example::

        >>> source = TorchvisionSet("FashionMNIST", root="~/data")  # ~/data/FashionMNIST/raw/...
    """

    def __init__(self, name: str, root: str = "data", split: tuple[float, float, float] = (0.9, 0.1, 0.0)) -> None:
        if name not in SETS:
            raise TunevisionError(f"TorchvisionSet: unknown set {name!r} (known: {', '.join(SETS)})")
        # Trial processes run in other folders (and on other nodes): a relative root means the driver's folder.
        self.name, self.root, self.split = name, os.path.abspath(os.path.expanduser(root)), split
        self.channels = SETS[name].channels
        self._sets: dict[str, Any] = {}

    def _load(self, part: str) -> Any:
        if part not in self._sets:
            import torchvision.datasets

            spec, root = SETS[self.name], os.path.expanduser(self.root)
            build = getattr(torchvision.datasets, spec.dataset)
            try:
                self._sets[part] = build(root, train=part == "train", download=False)
            except RuntimeError:
                if not reachable(spec.host, 3.0):
                    raise TunevisionError(
                        f"TorchvisionSet({self.name!r}): not found under {os.path.abspath(root)} and {spec.host} is "
                        f"unreachable; put {spec.expected} in {os.path.abspath(root)}"
                    ) from None
                self._sets[part] = build(root, train=part == "train", download=True)
        return self._sets[part]

    def samples(self) -> tuple[list[Sample], list[Problem]]:
        """List the official train set (split None) and test set (split "test")."""
        samples = []
        for part, split in (("train", None), ("test", "test")):
            data = self._load(part)
            samples += [
                Sample(f"{self.name}/{part}/{i}", str(data.classes[int(t)]), split) for i, t in enumerate(data.targets)
            ]
        return samples, []

    def open(self, key: str) -> Image.Image:
        """Return sample `key` (`<set>/<train|test>/<index>`) as a PIL image."""
        _, part, index = key.rsplit("/", 2)
        return self._load(part)[int(index)][0]

    def path(self, key: str) -> str:
        """The set's file holding sample `key` (one file holds many samples)."""
        _, part, index = key.rsplit("/", 2)
        return os.path.join(self.root, SETS[self.name].file(part, int(index)))

    def with_root(self, root: str) -> TorchvisionSet:
        """Return a copy looking for the set under `root`."""
        return TorchvisionSet(self.name, root, self.split)

    def describe(self) -> str:
        """Name the set, its root and split."""
        return f"TorchvisionSet({self.name!r}, root={os.path.abspath(os.path.expanduser(self.root))!r}, split={self.split})"

    def __repr__(self) -> str:
        return self.describe()

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_sets": {}}  # trials reload the arrays themselves

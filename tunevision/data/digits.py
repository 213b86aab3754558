"""Digits: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes, no download)."""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from tunevision.data.base import DataSource, Problem, Sample


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # values 0..16 -> 0..255
    return images, bunch.target


class Digits(DataSource):
    """scikit-learn's digits as grey 8x8 images, labels "0".."9"; a quick data set for smoke tests.

    Example::

        >>> samples, problems = Digits().samples()
        >>> len(samples), len({s.label for s in samples})
        (1797, 10)
    """

    channels = 1

    def __init__(self, split: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> None:
        self.split = split

    def samples(self) -> tuple[list[Sample], list[Problem]]:
        """List every digit as `digits/<index>`."""
        _, target = _digits()
        return [Sample(f"digits/{i}", str(int(label))) for i, label in enumerate(target)], []

    def open(self, key: str) -> Image.Image:
        """Return digit `key` as an 8x8 "L" image."""
        images, _ = _digits()
        return Image.fromarray(images[int(key.split("/")[1])], "L")

    def describe(self) -> str:
        """Name the source."""
        return f"Digits(split={self.split})"

    def __repr__(self) -> str:
        return self.describe()

"""Splitting: a stratified train/val/test split that depends only on the seed, honouring fixed splits."""
from __future__ import annotations

import zlib
from collections import defaultdict

import numpy as np

from tunevision.data.base import SPLITS, Sample
from tunevision.errors import TunevisionError


def check_fractions(fractions: tuple[float, float, float], where: str) -> None:
    """Raise unless `fractions` are three non-negative train/val/test fractions with train and val > 0 summing to 1."""
    if (
        len(fractions) != 3
        or any(f < 0 for f in fractions)
        or fractions[0] <= 0
        or fractions[1] <= 0
        or abs(sum(fractions) - 1) > 1e-6
    ):
        raise TunevisionError(f"{where}: split={tuple(fractions)!r} must be (train, val, test) fractions summing to 1, train and val > 0")


def assign_splits(samples: list[Sample], fractions: tuple[float, float, float], seed: int, where: str) -> list[str]:
    """Return each sample's split: its fixed split if it has one, else a stratified draw from `seed`.

    Each class's free samples are sorted by key and shuffled by a generator seeded from (seed, class),
    so the result does not depend on listing order or on the other classes. Every split with a non-zero
    fraction gets at least one sample of each class; a class too small for that is an error.
    """
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        if sample.split is None:
            by_class[sample.label].append(i)
    splits = [s.split for s in samples]
    if by_class:
        check_fractions(fractions, where)
    needed = sum(1 for f in fractions if f > 0)
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda i: samples[i].key)
        if len(members) < needed:
            raise TunevisionError(
                f"{where}: class {label!r} has {len(members)} usable sample(s); a stratified "
                f"{'/'.join(s for s, f in zip(SPLITS, fractions) if f > 0)} split needs at least {needed}"
            )
        rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
        order = [members[j] for j in rng.permutation(len(members))]
        counts = _counts(len(members), fractions)
        start = 0
        for name, count in zip(SPLITS, counts):
            for i in order[start : start + count]:
                splits[i] = name
            start += count
    return splits  # type: ignore[return-value]


def _counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    # val and test get their rounded share (at least one when their fraction is non-zero); train the rest.
    val, test = (max(1, round(n * f)) if f > 0 else 0 for f in fractions[1:])
    while n - val - test < 1:
        if test > 1 and test >= val:
            test -= 1
        else:
            val -= 1
    return [n - val - test, val, test]

"""PreparedData: the validated, split data of a search, built once in the driver and shipped to every trial."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd
import torch

from tunevision.data.base import SPLITS, DataSource, Problem, Sample
from tunevision.data.split import assign_splits
from tunevision.data.validate import validate
from tunevision.data.verdicts import DECODER, Stamp, stamp
from tunevision.errors import TunevisionError

COLUMNS = ["key", "label", "split"]


@dataclass
class PreparedData:
    """A source's usable samples with their split (the manifest), its classes and the problems found."""

    source: DataSource
    classes: list[str]  # sorted label names; a class's index is its position
    manifest: pd.DataFrame  # columns key, label, split: usable samples only
    problems: list[Problem]
    seed: int

    def counts(self) -> dict[str, dict[str, int]]:
        """Samples per class in each split: split -> class -> count (every class listed, zeros included)."""
        table = self.manifest.groupby(["split", "label"]).size()
        return {split: {c: int(table.get((split, c), 0)) for c in self.classes} for split in SPLITS}

    def labels(self, split: str) -> torch.Tensor:
        """Class indices (int64) of `split`'s samples, in manifest order."""
        index = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([index[c] for c in self.manifest.loc[self.manifest.split == split, "label"]], dtype=torch.int64)

    def rows(self, split: str) -> list[int]:
        """Manifest row positions of `split`'s samples."""
        return [i for i, s in enumerate(self.manifest["split"]) if s == split]

    def report(self) -> str:
        """A short human report: source, samples, classes, class counts per split and every problem."""
        counts = self.counts()
        width = max(len(c) for c in self.classes + ["class"])
        lines = [
            f"source: {self.source.describe()}",
            f"samples: {len(self.manifest)} usable, {len(self.problems)} problem(s); seed {self.seed}",
            f"classes ({len(self.classes)}): {', '.join(self.classes)}",
            f"{'class':<{width}}  " + "  ".join(f"{s:>7}" for s in SPLITS),
        ]
        lines += [f"{c:<{width}}  " + "  ".join(f"{counts[s][c]:>7}" for s in SPLITS) for c in self.classes]
        lines.append(f"{'total':<{width}}  " + "  ".join(f"{sum(counts[s].values()):>7}" for s in SPLITS))
        if self.problems:
            lines.append(f"problems ({len(self.problems)}, skipped):")
            lines += [f"  {p.key}: {p.reason}" for p in self.problems]
        return "\n".join(lines) + "\n"

    def manifest_csv(self) -> str:
        """The manifest as CSV text (columns key, label, split), e.g. to save as a run artifact."""
        return self.manifest.to_csv(index=False)

    def class_weights(self) -> torch.Tensor:
        """Per-class loss weights: inverse train-split frequency, scaled to mean 1 (a class absent from train gets 0)."""
        counts = torch.tensor([self.counts()["train"][c] for c in self.classes], dtype=torch.float32)
        weights = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
        return weights * (len(weights) / weights.sum())

    def fingerprint(self) -> str:
        """The decode-once cache key: a hash of the source, the manifest, the decoder and every sample file's
        size and modification time on this node (a file replaced, added or removed gives a new key)."""
        digest = hashlib.sha256(self.source.describe().encode())
        digest.update(self.manifest_csv().encode())
        digest.update(DECODER.encode())
        stamps: dict[str, Stamp | None] = {}  # a file holding many samples (torchvision sets) is stat'ed once
        for key in self.manifest["key"]:
            path = self.source.path(key)
            if path is not None and path not in stamps:
                stamps[path] = stamp(path)
            digest.update(f"{key}\t{stamps[path] if path is not None else ''}\n".encode())
        return digest.hexdigest()[:16]


def prepare(source: DataSource, seed: int, manifest: pd.DataFrame | None = None, workers: int | None = None) -> PreparedData:
    """List, validate and split `source` once, before any trial.

    Every sample is opened and fully decoded; empty, unreadable and truncated files become problems and
    are skipped. Samples without a fixed split are split stratified, deterministically from `seed`.
    A resumed search passes its saved `manifest`, which is reused as it is.

    Example::

        >>> from tunevision.data import Digits
        >>> data = prepare(Digits(), seed=0)
        >>> data.counts()["test"]["0"]
        18
    """
    listed, problems = source.samples()
    usable, broken = validate(source, listed, workers)
    problems = list(problems) + broken
    where = source.describe()
    if manifest is None:
        splits = assign_splits(usable, source.split, seed, where)
        manifest = pd.DataFrame({"key": [s.key for s in usable], "label": [s.label for s in usable], "split": splits})
    else:
        manifest, extra = _reuse(manifest, usable, where)
        problems += extra
    manifest = manifest.sort_values("key", kind="stable").reset_index(drop=True)
    if manifest.empty:
        raise TunevisionError(f"{where}: no usable samples ({len(problems)} problem(s))")
    return PreparedData(source, sorted(set(manifest["label"])), manifest, problems, seed)


def _reuse(manifest: pd.DataFrame, usable: list[Sample], where: str) -> tuple[pd.DataFrame, list[Problem]]:
    missing = [c for c in COLUMNS if c not in manifest.columns]
    if missing:
        raise TunevisionError(f"manifest: missing column(s) {', '.join(missing)} (has: {', '.join(map(str, manifest.columns))})")
    manifest = manifest[COLUMNS].astype(str)
    bad = sorted(set(manifest["split"]) - set(SPLITS))
    if bad:
        raise TunevisionError(f"manifest: column split: unknown value(s) {bad} (known: {', '.join(SPLITS)})")
    labels = {s.key: s.label for s in usable}
    for key, label in zip(manifest["key"], manifest["label"]):
        if key not in labels:
            raise TunevisionError(f"manifest: sample {key!r} is no longer usable in {where}")
        if labels[key] != label:
            raise TunevisionError(f"manifest: sample {key!r} has label {label!r} but {where} now says {labels[key]!r}")
    kept = set(manifest["key"])
    extra = [Problem(s.key, "not in the resumed search's manifest") for s in usable if s.key not in kept]
    return manifest.reset_index(drop=True), extra

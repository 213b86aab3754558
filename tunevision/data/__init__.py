"""Data: sources, validation and split (`prepare`), the decode-once cache and a trial's ImageDataModule.

The sources import only Pillow and numpy; the rest (pandas, torch, Lightning) loads on first use, so a
search file's `import tunevision` stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

from tunevision.data.base import DataSource, Problem, Sample
from tunevision.data.digits import Digits
from tunevision.data.image_folder import ImageFolder
from tunevision.data.label_table import LabelTable
from tunevision.data.torchvision_sets import TorchvisionSet

_LAZY = {
    "PreparedData": "tunevision.data.prepared",
    "prepare": "tunevision.data.prepared",
    "ImageDataModule": "tunevision.data.datamodule",
}
__all__ = ["DataSource", "Sample", "Problem", "ImageFolder", "LabelTable", "Digits", "TorchvisionSet", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tunevision.data' has no attribute {name!r}")

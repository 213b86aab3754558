"""tunevision: hyperparameter search for image classifiers built by transfer learning.

A search file does `import tunevision` and defines `search = tunevision.Search(...)`; importing this
package must stay light (no ray, no mlflow), so only the description types are loaded here.
"""
from __future__ import annotations

from tunevision.data import Digits, ImageFolder, LabelTable, TorchvisionSet
from tunevision.data.base import DataSource, Problem, Sample
from tunevision.errors import TunevisionError
from tunevision.search import Search
from tunevision.space import progressive

__all__ = [
    "DataSource", "Digits", "ImageFolder", "LabelTable", "Problem", "Sample", "Search", "TorchvisionSet",
    "TunevisionError", "progressive", "register_backbone", "list_backbones",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The backbone registry pulls in torchvision; load it only when asked for.
    if name in ("register_backbone", "list_backbones"):
        from tunevision import models

        return getattr(models, name)
    raise AttributeError(name)

"""Classification figures of one stage (val or test), named as the MLflow contract says."""
from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)


def metric_name(label: str) -> str:
    """Return a class label as MLflow accepts it inside a metric name."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", str(label))


def positive_index(classes: Sequence[str], positive: str | None) -> int | None:
    """Index of the class whose FNR/FPR are reported: `positive`, else the second class; None unless two classes."""
    if len(classes) != 2:
        return None
    return list(classes).index(positive) if positive is not None else 1


class StageMetrics(nn.Module):
    """Accumulates one stage's predictions and turns them into the contract's named figures."""

    def __init__(self, classes: Sequence[str], prefix: str, positive: int | None = None) -> None:
        super().__init__()
        k = len(classes)
        self.classes = [metric_name(c) for c in classes]
        self.prefix = prefix
        self.positive = positive
        self.collection = MetricCollection(
            {
                "accuracy": MulticlassAccuracy(k, average="micro"),
                "balanced_accuracy": MulticlassAccuracy(k, average="macro"),  # mean per-class recall
                "macro_f1": MulticlassF1Score(k, average="macro"),
                "precision": MulticlassPrecision(k, average=None),
                "recall": MulticlassRecall(k, average=None),
                "f1": MulticlassF1Score(k, average=None),
                "cm": MulticlassConfusionMatrix(k),
            }
        )

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch."""
        self.collection.update(logits, target)

    def compute(self) -> dict[str, float]:
        """Return `<prefix>_accuracy`, per-class and `<prefix>_cm.<true>.<pred>` figures, then reset."""
        values = self.collection.compute()
        self.collection.reset()
        p = self.prefix
        out = {f"{p}_{name}": float(values[name]) for name in ("accuracy", "balanced_accuracy", "macro_f1")}
        for name in ("precision", "recall", "f1"):
            out.update({f"{p}_{name}.{c}": float(v) for c, v in zip(self.classes, values[name])})
        cm = values["cm"]
        out.update({f"{p}_cm.{t}.{q}": float(cm[i, j]) for i, t in enumerate(self.classes) for j, q in enumerate(self.classes)})
        if self.positive is not None:
            # Two classes: FNR = 1 - recall(positive); FPR = 1 - recall(negative) = FP / (FP + TN).
            recall = values["recall"]
            out[f"{p}_fnr"] = 1.0 - float(recall[self.positive])
            out[f"{p}_fpr"] = 1.0 - float(recall[1 - self.positive])
        return out


def confusion_matrix(figures: dict[str, float], prefix: str, classes: Sequence[str]) -> list[list[int]]:
    """Rebuild the confusion matrix (rows = true, columns = predicted) from named figures."""
    names = [metric_name(c) for c in classes]
    return [[int(figures[f"{prefix}_cm.{t}.{q}"]) for q in names] for t in names]

"""The LightningModule every trial trains: network, loss, optimizer, and the stage metrics."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from tunevision.metrics import StageMetrics, positive_index
from tunevision.space import TrialConfig


class Classifier(pl.LightningModule):
    """Wraps `create_network(config)` with cross-entropy training and torchmetrics validation/test figures."""

    def __init__(
        self,
        config: TrialConfig | Mapping[str, Any],
        classes: Sequence[str],
        channels: int,
        max_epochs: int,
        class_weights: Sequence[float] | None = None,
        positive_class: str | None = None,
    ) -> None:
        super().__init__()
        from tunevision.models.network import create_network

        # A checkpoint holds the config as plain data (Lightning passes it back here), so it loads weights_only.
        self.config = config if isinstance(config, TrialConfig) else TrialConfig.from_plain(config)
        self.save_hyperparameters({"config": self.config.to_plain(), "classes": list(classes), "channels": channels,
                                   "max_epochs": max_epochs, "class_weights": class_weights, "positive_class": positive_class})
        self.classes = list(classes)
        self.network = create_network(self.config, len(self.classes), channels)
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.loss = nn.CrossEntropyLoss(weight=weight, label_smoothing=float(self.config.label_smoothing))
        positive = positive_index(self.classes, positive_class)
        # The epoch's mean losses, logged with the validation figures: Lightning's self.log costs about 1.5 ms a call
        # on CPU, half a cached-feature step, so the per-step losses go to a torchmetrics mean instead.
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.val_metrics = StageMetrics(self.classes, "val", positive)
        self.test_metrics = StageMetrics(self.classes, "test", positive)
        self.test_figures: dict[str, float] = {}
        self.cut: int | None = None  # not None: batches hold the network's cached features at that cut, not images

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x) if self.cut is None else self.network.from_prefix(x, self.cut)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"train_loss is {loss.item()} at epoch {self.current_epoch}, batch {batch_idx}")
        self.train_loss.update(loss.detach(), len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_loss.update(self.loss(logits, y), len(y))
        self.val_metrics.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        figures = self.val_metrics.compute()
        for name, loss in (("train_loss", self.train_loss), ("val_loss", self.val_loss)):
            if loss.update_count:  # validation runs after the epoch's last training step
                figures[name] = float(loss.compute())
                loss.reset()
        figures["trainable_params"] = float(self.network.trainable_params)
        figures["total_params"] = float(self.network.total_params)
        self.log_dict(figures)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.test_metrics.update(self(x), y)

    def on_test_epoch_end(self) -> None:
        self.test_figures = self.test_metrics.compute()

    def configure_optimizers(self) -> Any:
        from tunevision.models.optim import build_optimizer, build_schedule

        optimizer = build_optimizer([p for p in self.parameters() if p.requires_grad], self.config)
        steps = max(1, int(self.trainer.estimated_stepping_batches // max(1, self.hparams.max_epochs)))
        schedule = build_schedule(optimizer, self.config, self.hparams.max_epochs, steps)
        return {"optimizer": optimizer, "lr_scheduler": schedule} if schedule else optimizer

    def trained_size(self) -> int:
        """The image side the network was trained at last (the final stage of a progressive size)."""
        return int(self.config.final().image_size or self.network.image_size)

"""ImageDataModule serves float batches from the cache, with progressive size and augment stages."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from tunevision.data import Digits, ImageDataModule, ImageFolder, prepare
from tunevision.errors import TunevisionError
from tunevision.space import TrialConfig, progressive


@pytest.fixture(scope="module")
def digits():
    return prepare(Digits(), seed=0)


def test_batches_are_float_in_unit_range_and_int64_labels(folder):
    dm = ImageDataModule(prepare(ImageFolder(str(folder)), seed=0), TrialConfig.from_dict({"batch_size": 4, "image_size": None}), 10)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 10, 10) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.dtype == torch.int64
    assert sum(len(b[1]) for b in dm.val_dataloader()) == 6 and sum(len(b[1]) for b in dm.test_dataloader()) == 6
    assert not dm.reload_every_epoch


def test_balance_changes_train_epoch_length(folder):
    data = prepare(ImageFolder(str(folder)), seed=0)  # train: a 8, b 16, c 24
    lengths = {b: len(ImageDataModule(data, TrialConfig.from_dict({"batch_size": 1, "balance": b}), 4).train_dataloader()) for b in ("none", "oversample", "undersample")}
    assert lengths == {"none": 48, "oversample": 72, "undersample": 24}


def test_unknown_augment_key_fails_when_the_module_is_built(digits):
    with pytest.raises(TunevisionError, match="unknown augment key"):
        ImageDataModule(digits, TrialConfig.from_dict({"augment": progressive({0: None, 3: {"hflipp": True}})}), 8)


class ShapeRecorder(pl.LightningModule):
    """A one-layer model that records the input shape of every training epoch."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 10)
        self.shapes: dict[int, tuple[int, ...]] = {}
        self.val_shapes: dict[int, tuple[int, ...]] = {}

    def training_step(self, batch, _):
        self.shapes[self.current_epoch] = tuple(batch[0].shape)
        return self.layer(batch[0].mean(dim=(1, 2, 3))[:, None]).logsumexp(1).mean()

    def validation_step(self, batch, _):
        self.val_shapes[self.current_epoch] = tuple(batch[0].shape)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_progressive_image_size_changes_batch_shape_by_epoch(digits):
    config = {"batch_size": 16, "image_size": progressive({0: 8, 2: 12}), "augment": progressive({0: None, 1: {"hflip": True}})}
    dm = ImageDataModule(digits, TrialConfig.from_dict(config), 224)
    assert dm.reload_every_epoch
    model = ShapeRecorder()
    trainer = pl.Trainer(
        max_epochs=3, limit_train_batches=2, limit_val_batches=1, reload_dataloaders_every_n_epochs=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, accelerator="cpu",
    )
    trainer.fit(model, datamodule=dm)
    assert model.shapes == {0: (16, 1, 8, 8), 1: (16, 1, 8, 8), 2: (16, 1, 12, 12)}
    assert model.val_shapes == model.shapes
    dm.epoch = 0
    assert next(iter(dm.test_dataloader()))[0].shape[-1] == 8

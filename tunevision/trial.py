"""One trial: build the data module and model from the trial's config, train, report every epoch to Tune."""
from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any, Mapping

from tunevision.data import ImageDataModule, PreparedData
from tunevision.search import Search
from tunevision.space import final, resolve

CHECKPOINT_FILE = "checkpoint.ckpt"


def build_trainer(search: Search, datamodule: ImageDataModule, callbacks: list, accelerator: str = "auto") -> Any:
    """Return the Lightning Trainer a trial uses: one device, no Lightning logger (Tune reports instead)."""
    import pytorch_lightning as pl
    import torch

    gpu = accelerator != "cpu" and torch.cuda.is_available()
    return pl.Trainer(
        max_epochs=search.max_epochs,
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        precision="16-mixed" if gpu else "32-true",
        logger=False,
        enable_checkpointing=False,  # Tune keeps the checkpoints (best + latest)
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        reload_dataloaders_every_n_epochs=1 if datamodule.reload_every_epoch else 0,
        callbacks=callbacks,
        deterministic=False,
    )


def run_trial(config: Mapping[str, Any], data: PreparedData, search: Search) -> None:
    """Ray Tune function trainable: train one configuration, reporting figures and a checkpoint every epoch."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import EarlyStopping
    from ray import tune
    from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback

    from tunevision.models.classifier import Classifier

    trial_id = tune.get_context().get_trial_id() or "local"
    pl.seed_everything(search.seed + zlib.crc32(trial_id.encode()) % 100_000, workers=True, verbose=False)
    torch.set_num_threads(max(1, int(search.cpus_per_trial)))
    cfg = resolve(config)
    model = Classifier(
        config=dict(config),
        classes=data.classes,
        channels=data.source.channels,
        max_epochs=search.max_epochs,
        class_weights=data.class_weights().tolist() if cfg["class_weights"] else None,
        positive_class=search.positive_class,
    )
    if torch.cuda.is_available():
        model = model.to(memory_format=torch.channels_last)
    datamodule = ImageDataModule(data, cfg, model.network.image_size)
    callbacks: list = [TuneReportCheckpointCallback(filename=CHECKPOINT_FILE, on="train_epoch_end")]
    if search.patience is not None:
        callbacks.append(EarlyStopping(monitor=search.metric, mode=search.mode, patience=search.patience))
    trainer = build_trainer(search, datamodule, callbacks)
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        trainer.fit(model, datamodule=datamodule)
        return
    with checkpoint.as_directory() as folder:  # restored after a crash or node loss: continue from the last epoch
        trainer.fit(model, datamodule=datamodule, ckpt_path=os.path.join(folder, CHECKPOINT_FILE))


def evaluate_checkpoint(path: str | Path, data: PreparedData, search: Search) -> tuple[Any, dict[str, float]]:
    """Load a trial checkpoint and evaluate it once on the test split; return (model, test figures)."""
    import logging

    import pytorch_lightning as pl

    from tunevision.models.classifier import Classifier

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # no device banner in the driver's summary
    model = Classifier.load_from_checkpoint(str(path), map_location="cpu", weights_only=False)
    datamodule = ImageDataModule(data, final(model.config), model.network.image_size)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.test(model, datamodule=datamodule, verbose=False)
    return model, model.test_figures

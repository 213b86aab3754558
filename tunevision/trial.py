"""One trial: build the data module and model from the trial's config, train, report every epoch to Tune."""
from __future__ import annotations

import json
import os
import time
import zlib
from typing import Any, Mapping

from tunevision.data import ImageDataModule, PreparedData
from tunevision.errors import TunevisionError
from tunevision.search import Search
from tunevision.space import TrialConfig

CHECKPOINT_FILE = "checkpoint.ckpt"


def placement(started: float) -> dict[str, Any]:
    """Where this trial process runs: Ray node id and IP, the GPU ids Ray gave it, when it started."""
    import ray

    context = ray.get_runtime_context()
    return {
        "node_id": context.get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
        "process_started": started,
    }


def choose_accelerator(gpu_ids: str, cpu_fallback: bool) -> str:
    """Return "gpu" when Ray gave this trial a GPU that CUDA can see, "cpu" when it gave none.

    A GPU given on a node where CUDA is unavailable is an error, unless `cpu_fallback` says to train
    on the CPU instead (how fake `--num-gpus` clusters are tested).
    """
    import ray
    import torch

    if not gpu_ids:
        return "cpu"
    if torch.cuda.is_available():
        return "gpu"
    if cpu_fallback:
        return "cpu"
    why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA driver or device is visible"
    raise TunevisionError(
        f"trial was given GPU {gpu_ids} on node {ray.util.get_node_ip_address()} but CUDA is unavailable there "
        f"({why}; torch {torch.__version__}): run GPU trials on CUDA nodes, or pass --cpu-fallback to train on the CPU"
    )


def build_trainer(search: Search, datamodule: ImageDataModule, callbacks: list, accelerator: str = "cpu") -> Any:
    """Return the Lightning Trainer a trial uses: one device, no Lightning logger (Tune reports instead)."""
    import pytorch_lightning as pl

    gpu = accelerator == "gpu"
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


def _epoch_report(where: Mapping[str, Any]) -> Any:
    """Tune's Lightning callback, with the trial's placement and feature cache use added to every epoch's report."""
    from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback

    class EpochReport(TuneReportCheckpointCallback):
        def _get_report_dict(self, trainer: Any, pl_module: Any) -> dict | None:
            report = super()._get_report_dict(trainer, pl_module)
            # reported_at: the worker's clock, like process_started, so a placement's interval is one clock's
            # epoch: Lightning's own count, the MLflow step; Ray's iteration count lags it after a repaired resume
            cache = {"feature_cache": getattr(trainer.datamodule, "feature_cache", "off"),
                     "feature_cache_bytes": getattr(trainer.datamodule, "feature_bytes", 0)}
            return {**report, **where, **cache, "reported_at": time.time(), "epoch": trainer.current_epoch + 1} if report else report

    return EpochReport(filename=CHECKPOINT_FILE, on="train_epoch_end")


def _objective(rule: Any) -> Any:
    """Lightning callback adding the rule's `val_objective` (choose.py) to each validation's figures.

    It runs at the end of validation, before EarlyStopping reads the figures and before Tune's report
    at the end of the training epoch, so patience, ASHA and the kept checkpoint all rank on it.
    """
    import pytorch_lightning as pl
    import torch

    from tunevision.choose import OBJECTIVE

    class Objective(pl.Callback):
        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            figures = trainer.callback_metrics
            if all(m in figures for m in rule.metrics()):
                figures[OBJECTIVE] = torch.tensor(rule.score({m: float(figures[m]) for m in rule.metrics()}))

    return Objective()


def trial_seed(seed: int, config: Mapping[str, Any]) -> int:
    """The seed a trial trains with: from the search's seed and the trial's config, never from Ray's random trial id.

    So a rerun of a search file (same seed, so the same TPE suggestions) trains every trial the same way.
    """
    text = json.dumps(dict(config), sort_keys=True, default=str)
    return seed + zlib.crc32(text.encode()) % 100_000


def run_trial(config: Mapping[str, Any], data: PreparedData, search: Search, cpu_fallback: bool = False,
              backbones: Mapping[str, Any] | None = None) -> None:
    """Ray Tune function trainable: train one configuration, reporting figures and a checkpoint every epoch.

    `backbones` are the specs of the search's candidate backbones, so that one registered by the search
    file itself (which trial processes never run) exists here too.
    """
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import EarlyStopping
    from ray import tune

    from tunevision.data.features import trial_datamodule
    from tunevision.models.classifier import Classifier
    from tunevision.models.registry import register_missing

    register_missing(backbones or {})

    where = placement(time.time())
    accelerator = choose_accelerator(where["gpu_ids"], cpu_fallback)
    pl.seed_everything(trial_seed(search.seed, config), workers=True, verbose=False)
    torch.set_num_threads(max(1, int(search.cpus_per_trial)))
    trial_config = TrialConfig.from_dict(config)
    model = Classifier(
        config=trial_config,
        classes=data.classes,
        channels=data.source.channels,
        max_epochs=search.max_epochs,
        class_weights=data.class_weights().tolist() if trial_config.class_weights else None,
        positive_class=search.positive_class,
    )
    if accelerator == "gpu":
        model = model.to(memory_format=torch.channels_last)
    datamodule = trial_datamodule(data, trial_config, model, search.feature_cache, search.max_epochs)
    rule = search.rule
    callbacks: list = [_epoch_report(where)]
    if rule.constraint is not None:
        callbacks.insert(0, _objective(rule))
    if search.patience is not None:
        callbacks.append(EarlyStopping(monitor=rule.rank_metric, mode=rule.mode, patience=search.patience))
    trainer = build_trainer(search, datamodule, callbacks, accelerator)
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        trainer.fit(model, datamodule=datamodule)
        return
    with checkpoint.as_directory() as folder:  # restored after a crash or node loss: continue from the last epoch
        trainer.fit(model, datamodule=datamodule, ckpt_path=os.path.join(folder, CHECKPOINT_FILE), weights_only=True)

"""Optimizers and learning-rate schedules by name, each a small function of the trial config."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch.optim import lr_scheduler

from tunevision.errors import TunevisionError
from tunevision.space import TrialConfig

OPTIMIZERS: dict[str, Callable[[Iterable[Any], TrialConfig], torch.optim.Optimizer]] = {
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay, eps=c.epsilon),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.lr, weight_decay=c.weight_decay, eps=c.epsilon),
    "sgd": lambda p, c: torch.optim.SGD(p, lr=c.lr, weight_decay=c.weight_decay, momentum=c.momentum,
                                        nesterov=c.nesterov),
    "rmsprop": lambda p, c: torch.optim.RMSprop(p, lr=c.lr, weight_decay=c.weight_decay, momentum=c.momentum,
                                                eps=c.epsilon),
    "adadelta": lambda p, c: torch.optim.Adadelta(p, lr=c.lr, weight_decay=c.weight_decay, eps=c.epsilon),
}

# Each returns Lightning's lr_scheduler config, or None for a constant rate.
SCHEDULES: dict[str, Callable[[torch.optim.Optimizer, TrialConfig, int, int], dict[str, Any] | None]] = {
    "constant": lambda o, c, epochs, steps: None,
    "step": lambda o, c, epochs, steps: {
        "scheduler": lr_scheduler.StepLR(o, step_size=c.schedule_step, gamma=c.schedule_gamma), "interval": "epoch"},
    "exponential": lambda o, c, epochs, steps: {
        "scheduler": lr_scheduler.ExponentialLR(o, gamma=c.schedule_gamma), "interval": "epoch"},
    "cosine": lambda o, c, epochs, steps: {
        "scheduler": lr_scheduler.CosineAnnealingLR(o, T_max=epochs), "interval": "epoch"},
    "one_cycle": lambda o, c, epochs, steps: {
        "scheduler": lr_scheduler.OneCycleLR(o, max_lr=c.lr, total_steps=epochs * steps), "interval": "step"},
    "plateau": lambda o, c, epochs, steps: {
        "scheduler": lr_scheduler.ReduceLROnPlateau(o, factor=c.schedule_gamma), "interval": "epoch",
        "monitor": "val_loss"},
}


def build_optimizer(params: Iterable[Any], config: TrialConfig) -> torch.optim.Optimizer:
    """Build config.optimizer over `params` with lr, weight_decay, momentum, nesterov and epsilon.

    Example::

        build_optimizer(torch.nn.Linear(2, 1).parameters(), TrialConfig.from_dict({"optimizer": "sgd", "nesterov": True}))
    """
    try:
        return OPTIMIZERS[config.optimizer](params, config)
    except ValueError as e:  # torch rejects combinations, e.g. nesterov with momentum 0
        raise TunevisionError(f'space["optimizer"]: {config.optimizer}: {e}') from None


def build_schedule(
    optimizer: torch.optim.Optimizer, config: TrialConfig, max_epochs: int, steps_per_epoch: int
) -> dict[str, Any] | None:
    """Build config.schedule as Lightning's lr_scheduler dict, or None for a constant rate.

    Example::

        opt = build_optimizer(torch.nn.Linear(2, 1).parameters(), TrialConfig.from_dict({}))
        build_schedule(opt, TrialConfig.from_dict({"schedule": "cosine"}), max_epochs=10, steps_per_epoch=5)["interval"]
    """
    try:
        return SCHEDULES[config.schedule](optimizer, config, max_epochs, steps_per_epoch)
    except ValueError as e:
        raise TunevisionError(f'space["schedule"]: {config.schedule}: {e}') from None

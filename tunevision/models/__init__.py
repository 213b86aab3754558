"""Backbones by name, the trial network built on them, and optimizers/schedules by name."""
from __future__ import annotations

from tunevision.models.registry import BackboneSpec, check_weights, get_backbone, list_backbones, register_backbone
from tunevision.models import backbones as _backbones  # noqa: F401  (registers the built-in backbones)
from tunevision.models.network import Network, create_network
from tunevision.models.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_schedule

__all__ = [
    "BackboneSpec", "register_backbone", "list_backbones", "get_backbone", "check_weights",
    "Network", "create_network", "build_optimizer", "build_schedule", "OPTIMIZERS", "SCHEDULES",
]

"""The vocabulary of a search space: every key a trial understands, its default and meaning."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Key:
    """One space key: its default (used when the space leaves it out) and a one-line meaning."""

    default: Any
    doc: str


KEYS: dict[str, Key] = {
    # model
    "backbone": Key("resnet18", "registered backbone name (tunevision backbones lists them), 'dense' or 'cnn'"),
    "weights": Key("imagenet", "'imagenet' (the backbone's pretrained weights), None (random init) or a local .pth file"),
    "trainable_layers": Key(None, "train the last N parameter-owning layers of the backbone; 0 = frozen backbone"),
    "trainable_fraction": Key(None, "train the last fraction (0..1) of the backbone's parameter-owning layers"),
    "hidden_units": Key(None, "hidden dense layers of the head: an int, a list of ints, or fractions of the input size"),
    "activation": Key("relu", "activation of hidden layers: none, relu, leaky_relu, prelu, elu"),
    "dropout": Key(0.0, "dropout before each dense layer of the head"),
    "cnn": Key(None, "settings of backbone 'cnn': {'channels': [32, 64], 'kernel_size': 3}"),
    # optimisation
    "optimizer": Key("adam", "adam, adamw, sgd, rmsprop, adadelta"),
    "lr": Key(1e-3, "learning rate"),
    "weight_decay": Key(0.0, "L2 penalty (decoupled for adamw)"),
    "momentum": Key(0.9, "momentum for sgd and rmsprop"),
    "nesterov": Key(False, "Nesterov momentum for sgd"),
    "epsilon": Key(1e-8, "optimizer epsilon (adam, adamw, rmsprop, adadelta)"),
    "schedule": Key("constant", "constant, step, exponential, cosine, one_cycle, plateau"),
    "schedule_step": Key(10, "epochs between decays of schedule 'step'"),
    "schedule_gamma": Key(0.1, "decay factor of 'step', 'exponential' and 'plateau'"),
    "batch_size": Key(32, "images per batch"),
    "label_smoothing": Key(0.0, "label smoothing of the cross-entropy loss"),
    # data
    "image_size": Key(None, "square input side in pixels, or {epoch: size} to grow it (progressive resizing); default: the backbone's"),
    "augment": Key(None, "augmentation dict (hflip, vflip, rotation, shift, shear, zoom, color_jitter), or {epoch: dict} stages"),
    "class_weights": Key(False, "weight the loss inversely to class frequency"),
    "balance": Key("none", "train-split resampling: none, oversample, undersample"),
}


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a trial's config with every key the space left out filled by its default."""
    return {name: config.get(name, key.default) for name, key in KEYS.items()} | dict(config)


@dataclass(frozen=True)
class Progressive:
    """A value that changes during training: `stages` maps a starting epoch to the value from then on."""

    stages: tuple[tuple[int, Any], ...]

    def at(self, epoch: int) -> Any:
        """Return the value in force at `epoch` (0-based)."""
        current = self.stages[0][1]
        for start, value in self.stages:
            if epoch >= start:
                current = value
        return current

    def __str__(self) -> str:
        return "progressive(" + ", ".join(f"{start}: {value}" for start, value in self.stages) + ")"


def progressive(stages: Mapping[int, Any]) -> Progressive:
    """Build a staged value, e.g. `progressive({0: 128, 5: 256})` grows images from 128 to 256 px at epoch 5."""
    from tunevision.errors import TunevisionError

    if not stages or 0 not in stages:
        raise TunevisionError(f"progressive({dict(stages)!r}): the stages must start at epoch 0")
    return Progressive(tuple(sorted((int(k), v) for k, v in stages.items())))


def value_at(value: Any, epoch: int) -> Any:
    """Return a config value at `epoch`: a Progressive's stage, or the value itself."""
    return value.at(epoch) if isinstance(value, Progressive) else value


def final(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return `config` with each Progressive replaced by its last stage: the model as training left it."""
    return {k: v.stages[-1][1] if isinstance(v, Progressive) else v for k, v in config.items()}

"""The vocabulary of a search space: every key a trial understands, with its default, meaning and check.

`TrialConfig` is that table: one field per space key, each carrying its default, a one-line meaning and
the check its values must pass. A trial builds one `TrialConfig` from the config Ray Tune sampled
(`TrialConfig.from_dict`), and every part of the trial (network, optimizer, schedule, augmentation, data
module) reads the typed fields from it. `tunevision check` and `search` run the same checks over every
value a space can produce before Ray starts (`tunevision.validate`).
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from tunevision.errors import TunevisionError

# A check returns None for a good value, else what is allowed ("a number from 0 to 1").
Check = Callable[[Any], "str | None"]


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
    if not stages or 0 not in stages:
        raise TunevisionError(f"progressive({dict(stages)!r}): the stages must start at epoch 0")
    return Progressive(tuple(sorted((int(k), v) for k, v in stages.items())))


def value_at(value: Any, epoch: int) -> Any:
    """Return a config value at `epoch`: a Progressive's stage, or the value itself."""
    return value.at(epoch) if isinstance(value, Progressive) else value


def stages(value: Any) -> tuple[tuple[int, Any], ...]:
    """The (start epoch, value) stages of a value: a Progressive's own, or one stage from epoch 0."""
    return value.stages if isinstance(value, Progressive) else ((0, value),)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def number(low: float, high: float, *, low_open: bool = False, high_open: bool = False, whole: bool = False,
           optional: bool = False) -> Check:
    """Check for a number (or a whole number) between `low` and `high`; open ends exclude the bound."""
    kind = "a whole number" if whole else "a number"
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    upper = "" if high == float("inf") else f"{high:g}"
    allowed = f"{kind} in {left}{low:g}, {upper or 'inf'}{right}" + (", or None" if optional else "")

    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if not (_is_int(value) if whole else _is_number(value)):
            return allowed
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        return allowed if too_low or too_high else None

    return check


def flag(value: Any) -> str | None:
    """Check for True or False."""
    return None if isinstance(value, bool) else "True or False"


def one_of(names: Callable[[], Iterable[str]]) -> Check:
    """Check for one of the names a table registers (looked up when checked, so tables import lazily)."""
    def check(value: Any) -> str | None:
        known = sorted(names())
        return None if isinstance(value, str) and value in known else f"one of {', '.join(known)}"

    return check


def _optimizers() -> Iterable[str]:
    from tunevision.models.optim import OPTIMIZERS

    return OPTIMIZERS


def _schedules() -> Iterable[str]:
    from tunevision.models.optim import SCHEDULES

    return SCHEDULES


def _activations() -> Iterable[str]:
    from tunevision.models.network import ACTIVATIONS

    return ACTIVATIONS


def _balances() -> Iterable[str]:
    from tunevision.data.balance import BALANCERS

    return BALANCERS


def _backbone(value: Any) -> str | None:
    from tunevision.models.registry import list_backbones

    return one_of(list_backbones)(value)


def _weights(value: Any) -> str | None:
    import os

    ok = value is None or value == "imagenet" or isinstance(value, (str, os.PathLike))
    return None if ok else "'imagenet', None or a local .pth path"


def _hidden_units(value: Any) -> str | None:
    allowed = "None, a positive int, a fraction in (0, 1], or a list of them"
    if value is None or (_is_int(value) and value == 0):
        return None
    for units in value if isinstance(value, (list, tuple)) else [value]:
        if not ((_is_int(units) and units > 0) or (_is_number(units) and 0 < units <= 1)):
            return allowed
    return None


def _cnn(value: Any) -> str | None:
    from tunevision.models.backbones import CNN_DEFAULTS

    allowed = f"None or a dict with keys {', '.join(CNN_DEFAULTS)}: channels a non-empty list of positive ints, kernel_size a positive odd int"
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - set(CNN_DEFAULTS):
        return allowed
    settings = CNN_DEFAULTS | dict(value)
    widths, kernel = settings["channels"], settings["kernel_size"]
    if not isinstance(widths, (list, tuple)) or not widths or not all(_is_int(w) and w > 0 for w in widths):
        return allowed
    return None if _is_int(kernel) and kernel > 0 and kernel % 2 == 1 else allowed


def _augment(value: Any) -> str | None:
    from tunevision.data.augment import problem

    return problem(value)


def key(default: Any, doc: str, check: Check, *, staged: bool = False) -> Any:
    """One space key of `TrialConfig`: its default, a one-line meaning, its check; `staged` allows progressive()."""
    return field(default=default, metadata={"doc": doc, "check": check, "staged": staged})


@dataclass(frozen=True)
class TrialConfig:
    """One trial's configuration: every space key, typed, defaults filled, every value checked.

    Example:
        >>> config = TrialConfig.from_dict({"backbone": "cnn", "lr": 0.01, "image_size": {0: 16, 2: 32}})
        >>> config.lr, config.optimizer, config.image_size.at(3)
        (0.01, 'adam', 32)
    """

    # model
    backbone: str = key("resnet18", "registered backbone (`tunevision backbones` lists them), `dense` or `cnn`",
                        _backbone)
    weights: Any = key("imagenet", "`imagenet` (the backbone's pretrained weights), `None` (random init) or a local `.pth` state dict",
                       _weights)
    trainable_layers: int | None = key(None, "train the last N layers of the backbone; 0 = frozen backbone, only the head trains",
                                       number(0, float("inf"), whole=True, optional=True))
    trainable_fraction: float | None = key(None, "train the last fraction (0..1) of the backbone's layers",
                                           number(0, 1, optional=True))
    hidden_units: Any = key(None, "hidden dense layers of the head: an int, a list, or fractions (0..1] of the input features",
                            _hidden_units)
    activation: str = key("relu", "of hidden layers: `none`, `relu`, `leaky_relu`, `prelu`, `elu`", one_of(_activations))
    dropout: float = key(0.0, "dropout before each dense layer of the head", number(0, 1, high_open=True))
    cnn: Mapping[str, Any] | None = key(None, "settings of backbone `cnn`: `{\"channels\": [32, 64, 128], \"kernel_size\": 3}`", _cnn)
    # optimisation
    optimizer: str = key("adam", "`adam`, `adamw`, `sgd`, `rmsprop`, `adadelta`", one_of(_optimizers))
    lr: float = key(1e-3, "learning rate", number(0, float("inf"), low_open=True))
    weight_decay: float = key(0.0, "L2 penalty (decoupled for adamw)", number(0, float("inf")))
    momentum: float = key(0.9, "sgd and rmsprop", number(0, 1))
    nesterov: bool = key(False, "Nesterov momentum for sgd", flag)
    epsilon: float = key(1e-8, "optimizer epsilon (adam, adamw, rmsprop, adadelta)", number(0, float("inf"), low_open=True))
    schedule: str = key("constant", "`constant`, `step`, `exponential`, `cosine`, `one_cycle`, `plateau`", one_of(_schedules))
    schedule_step: int = key(10, "epochs between decays of `step`", number(1, float("inf"), whole=True))
    schedule_gamma: float = key(0.1, "decay factor of `step`, `exponential`, `plateau`",
                                number(0, 1, low_open=True, high_open=True))
    batch_size: int = key(32, "images per batch", number(1, float("inf"), whole=True))
    label_smoothing: float = key(0.0, "of the cross-entropy loss", number(0, 1, high_open=True))
    # data
    image_size: Any = key(None, "square input side (default: the backbone's), or `tunevision.progressive({0: 128, 5: 256})` "
                                "to grow it during training", number(1, float("inf"), whole=True, optional=True), staged=True)
    augment: Any = key(None, "`{hflip, vflip, rotation, shift, shear, zoom, color_jitter}`, or "
                             "`progressive({0: {...}, 3: {...}})` stages", _augment, staged=True)
    class_weights: bool = key(False, "weight the loss inversely to class frequency (train split)", flag)
    balance: str = key("none", "train-split resampling: `none`, `oversample`, `undersample`", one_of(_balances))

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> TrialConfig:
        """Build the config of one trial from a sampled space; an unknown key or a bad value raises TunevisionError.

        Staged keys take `progressive({...})` or a plain {epoch: value} dict. The error names the key, the value
        and what is allowed: `space["optimizer"]: invalid 'adamm' (one of adadelta, adam, adamw, rmsprop, sgd)`.
        """
        unknown = sorted(set(config) - set(KEYS))
        if unknown:
            raise TunevisionError(f"space[{unknown[0]!r}]: unknown key (known: {', '.join(sorted(KEYS))})")
        values = {}
        for f in dataclasses.fields(cls):
            value = config.get(f.name, f.default)
            if f.metadata["staged"]:
                value = _staged(value, f.name)
            for _, stage in stages(value):
                allowed = f.metadata["check"](stage)
                if allowed is not None:
                    shown = repr(round(stage, 10) if isinstance(stage, float) else stage)  # a range's upper end, as written
                    raise TunevisionError(f'space["{f.name}"]: invalid {shown} ({allowed})')
            values[f.name] = value
        built = cls(**values)
        built._check_together()
        return built

    def _check_together(self) -> None:
        """Checks that span two keys."""
        if self.trainable_layers is not None and self.trainable_fraction is not None:
            raise TunevisionError('space["trainable_layers"], space["trainable_fraction"]: set one, not both '
                                  f"(got {self.trainable_layers} and {self.trainable_fraction})")
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise TunevisionError('space["nesterov"]: True needs momentum > 0 (got momentum 0)')
        if self.backbone == "dense" and isinstance(self.image_size, Progressive):
            raise TunevisionError(f'space["image_size"]: backbone dense needs one fixed image size '
                                  f"(one weight per pixel), got {self.image_size}")

    def to_plain(self) -> dict[str, Any]:
        """The config as JSON-able plain data (a progressive value as {"progressive": [[epoch, value], ...]})."""
        def plain(value: Any) -> Any:
            if isinstance(value, Progressive):
                return {"progressive": [[start, plain(v)] for start, v in value.stages]}
            if isinstance(value, Mapping):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            if hasattr(value, "__fspath__"):
                return str(value)
            return value

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> TrialConfig:
        """Rebuild a config from `to_plain()`'s data (as a checkpoint stores it)."""
        def value(v: Any) -> Any:
            if isinstance(v, Mapping) and set(v) == {"progressive"}:
                return Progressive(tuple((int(start), stage) for start, stage in v["progressive"]))
            return v

        return cls.from_dict({k: value(v) for k, v in plain.items()})

    def final(self) -> TrialConfig:
        """This config with each progressive value at its last stage: the model as training left it."""
        return dataclasses.replace(self, **{f.name: stages(getattr(self, f.name))[-1][1]
                                            for f in dataclasses.fields(self) if f.metadata["staged"]})


def _staged(value: Any, name: str) -> Any:
    # A plain {epoch: value} dict is a staged value too (an augment dict has str keys, so it is never mistaken).
    if isinstance(value, Mapping) and value and all(_is_int(k) for k in value):
        try:
            return progressive(value)
        except TunevisionError as e:
            raise TunevisionError(f'space["{name}"]: {e}') from None
    return value


@dataclass(frozen=True)
class Key:
    """One space key: its default (used when the space leaves it out), a one-line meaning, and its check."""

    default: Any
    doc: str
    check: Check
    staged: bool = False


KEYS: dict[str, Key] = {f.name: Key(f.default, f.metadata["doc"], f.metadata["check"], f.metadata["staged"])
                        for f in dataclasses.fields(TrialConfig)}


def markdown_table() -> str:
    """The README's table of space keys, generated from `KEYS` (`python -m tunevision.space` prints it)."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{name}` | `{k.default!r}` | {k.doc} |" for name, k in KEYS.items()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())

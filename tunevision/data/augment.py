"""Augmentation: the space's `augment` dict turned into torchvision.transforms.v2 on uint8 C x H x W tensors.

Known keys (a false or zero value switches one off):

- `hflip`, `vflip` (bool): flip left-right / upside-down with probability 0.5.
- `rotation` (degrees): rotate by a random angle in [-rotation, rotation].
- `shift` (fraction of the side): translate by up to that fraction horizontally and vertically.
- `shear`: below 1 it is a shear factor as in Keras' `RandomShear` (0.2 shears by up to atan(0.2) = 11.3
  degrees); from 1 up it is degrees, as in torchvision's `RandomAffine`.
- `zoom` (fraction): scale by a random factor in [1 - zoom, 1 + zoom] (0.2 -> 0.8..1.2).
- `color_jitter` (strength s): brightness, contrast and saturation each vary by up to +-s (hue is kept).

rotation, shift, shear and zoom make one bilinear `RandomAffine` (areas moved in from outside the image
are black).
Order: flips, affine, colour. Example::

    >>> [type(t).__name__ for t in transform({"hflip": True, "rotation": 10, "zoom": 0.2}).transforms]
    ['RandomHorizontalFlip', 'RandomAffine']
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torchvision.transforms import v2

from tunevision.errors import TunevisionError


@dataclass(frozen=True)
class AugmentKey:
    """One augment key: which values it accepts (in words, for errors) and what it builds."""

    accepts: Callable[[Any], bool]
    expects: str
    build: Callable[[Any], v2.Transform | dict[str, Any]]  # a transform, or RandomAffine arguments


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


def _number(low: float, high: float) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


AUGMENTS: dict[str, AugmentKey] = {
    "hflip": AugmentKey(_flag, "True or False", lambda on: v2.RandomHorizontalFlip()),
    "vflip": AugmentKey(_flag, "True or False", lambda on: v2.RandomVerticalFlip()),
    "rotation": AugmentKey(_number(0, 180), "degrees from 0 to 180", lambda d: {"degrees": float(d)}),
    "shift": AugmentKey(_number(0, 1), "a fraction from 0 to 1", lambda f: {"translate": (float(f), float(f))}),
    "shear": AugmentKey(
        _number(0, 89),
        "a Keras shear factor below 1 or degrees from 1 to 89",
        lambda s: {"shear": math.degrees(math.atan(s)) if s < 1 else float(s)},
    ),
    "zoom": AugmentKey(_number(0, 0.99), "a fraction from 0 to 0.99", lambda z: {"scale": (1 - z, 1 + z)}),
    "color_jitter": AugmentKey(
        _number(0, 1), "a strength from 0 to 1", lambda s: v2.ColorJitter(brightness=s, contrast=s, saturation=s)
    ),
}
_AFFINE_FIRST = ("hflip", "vflip")


def _off(value: Any) -> bool:
    return value is None or value is False or (value == 0 and not isinstance(value, bool))


def problem(spec: Any) -> str | None:
    """None when `spec` is an augment dict this module builds (or None), else what is allowed."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        return f"a dict of {', '.join(AUGMENTS)}, or None"
    unknown = sorted(set(spec) - set(AUGMENTS))
    if unknown:
        return f"unknown augment key(s) {', '.join(map(repr, unknown))} (known: {', '.join(AUGMENTS)})"
    for name, key in AUGMENTS.items():
        value = spec.get(name)
        if not _off(value) and not key.accepts(value):
            return f"{name}: {value!r} is not {key.expects}"
    return None


def transform(spec: Mapping[str, Any] | None, where: str = 'space["augment"]') -> v2.Compose | None:
    """Build the train-time transform of one augment dict; None (or all keys off) means no augmentation."""
    wrong = problem(spec)
    if wrong is not None:
        raise TunevisionError(f"{where}: invalid {spec!r} ({wrong})")
    if spec is None:
        return None
    flips, affine, colour = [], {}, []
    for name, key in AUGMENTS.items():
        value = spec.get(name)
        if _off(value):
            continue
        built = key.build(value)
        if isinstance(built, dict):
            affine.update(built)
        else:
            (flips if name in _AFFINE_FIRST else colour).append(built)
    if affine:
        degrees = affine.pop("degrees", 0.0)
        flips.append(v2.RandomAffine(degrees, interpolation=v2.InterpolationMode.BILINEAR, **affine))
    steps = flips + colour
    return v2.Compose(steps) if steps else None

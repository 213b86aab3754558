"""Short names of trials by what sets them apart, e.g. `t03 lite0 tl=12 lr=4.2e-4`, shared by MLflow and the terminal."""
from __future__ import annotations

from typing import Any, Mapping


def short_key(key: str) -> str:
    """A space key as a trial name shows it: `trainable_layers` -> `tl`, `augment/zoom` -> `zoom`, `lr` -> `lr`.

    Example:
        >>> short_key("batch_size"), short_key("augment.zoom"), short_key("dropout")
        ('bs', 'zoom', 'dropout')
    """
    leaf = key.replace("/", ".").rsplit(".", 1)[-1]
    words = [w for w in leaf.split("_") if w]
    return "".join(w[0] for w in words) if len(words) > 1 else leaf


def short_value(value: Any) -> str:
    """A sampled value in two significant digits: 0.000421 -> `4.2e-4`, 0.2583 -> `0.26`, [128, 64] -> `128-64`.

    Example:
        >>> short_value(0.000421), short_value(0.2583), short_value(12), short_value([128, 64])
        ('4.2e-4', '0.26', '12', '128-64')
    """
    if isinstance(value, float) and not isinstance(value, bool):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
            mantissa, exponent = f"{value:.1e}".split("e")
            return f"{mantissa}e{int(exponent)}"
        return f"{value:.2g}"
    if isinstance(value, (list, tuple)):
        return "-".join(short_value(v) for v in value)
    return str(value)


def trial_name(index: int, sampled: Mapping[str, Any]) -> str:
    """Name trial number `index` (from 1) by its sampled values; string choices (backbone, optimizer) first, as themselves.

    Args:
        index: the trial's place in the search, from 1.
        sampled: the values the searcher chose, by flattened space key (`lr`, `augment/zoom`); constants left out.

    Example:
        >>> trial_name(3, {"trainable_layers": 12, "backbone": "efficientnet_lite0", "lr": 0.000421})
        't03 efficientnet_lite0 tl=12 lr=4.2e-4'
    """
    words = [value for value in sampled.values() if isinstance(value, str)]  # the kind of model first: lite0 adamw
    numbers = [f"{short_key(key)}={short_value(value)}" for key, value in sampled.items() if not isinstance(value, str)]
    return " ".join([f"t{index:02d}", *words, *numbers])

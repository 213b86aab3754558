"""Every value a search space can produce, checked before Ray starts: the same checks a trial's TrialConfig runs."""
from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

from tunevision.errors import TunevisionError
from tunevision.search import Search, is_grid
from tunevision.space import Progressive, TrialConfig


def values(value: Any) -> list[Any]:
    """The values a space entry can take, as far as they can be listed.

    A constant is itself; a `tune.choice` gives its categories and a grid its values; a numeric range gives
    its endpoints (every value between them passes a check that both endpoints pass: the checks are
    intervals); a progressive value gives each stage's values, a nested dict one dict per value of each leaf
    (the other leaves at their first value). `tune.sample_from` functions cannot be listed and give nothing.

    Example:
        >>> from ray import tune
        >>> values(tune.choice([16, 32]))
        [16, 32]
        >>> values(tune.loguniform(1e-4, 1e-2))
        [0.0001, 0.01]
    """
    from ray.tune.search.sample import Categorical, Domain, Float, Integer, Quantized

    if is_grid(value):
        return [v for item in value["grid_search"] for v in values(item)]
    if isinstance(value, Categorical):
        return [v for item in value.categories for v in values(item)]
    if isinstance(value, Float):  # uniform draws stay below upper; quantized ones can round up to it
        quantized = isinstance(value.sampler, Quantized)
        return [value.lower, value.upper if quantized else math.nextafter(value.upper, value.lower)]
    if isinstance(value, Integer):  # tune.randint's upper bound is exclusive
        return [value.lower, value.upper - 1]
    if isinstance(value, Domain):
        return []
    if isinstance(value, Progressive):
        return [Progressive(((0, stage),)) for _, v in value.stages for stage in values(v)]
    if isinstance(value, Mapping) and value:
        options = {k: values(v) or [None] for k, v in value.items()}
        first = {k: v[0] for k, v in options.items()}
        return [first] + [first | {k: v} for k, vs in options.items() for v in vs[1:]]
    return [value]


def candidate_configs(space: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """One config per value of each key (every other key at its first value): each value is checked once."""
    options = {k: values(v) for k, v in space.items()}
    first = {k: v[0] for k, v in options.items() if v}
    yield first
    for k, vs in options.items():
        for v in vs[1:]:
            yield first | {k: v}


def check_space(search: Search) -> None:
    """Raise TunevisionError for the first value of `search.space` a trial would reject, naming key, value, rule."""
    from tunevision.models import check_weights, get_backbone
    from tunevision.models.network import layer_count

    for name, value in search.space.items():  # Ray's searchers flatten nested dicts and break on int keys
        if isinstance(value, Mapping) and any(isinstance(k, int) for k in value):
            raise TunevisionError(f'space["{name}"]: write staged values as tunevision.progressive({dict(value)!r})')
    for config in candidate_configs(search.space):
        TrialConfig.from_dict(config)
    for backbone in search.candidates("backbone"):
        for weights in search.candidates("weights"):
            check_weights(backbone, weights)
    most = max((v for v in values(search.space.get("trainable_layers")) if isinstance(v, int)), default=None)
    if most is None:
        return
    for backbone in search.candidates("backbone"):
        if get_backbone(backbone).weights is None:  # trained whole: trainable_layers does not apply
            continue
        total = layer_count(backbone, TrialConfig.from_dict({"backbone": backbone}), search.data.channels)
        if total < most:
            raise TunevisionError(f'space["trainable_layers"]: invalid {most} ({backbone} has {total} layers; '
                                  "a whole number up to that, or use trainable_fraction across backbones)")


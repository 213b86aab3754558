"""`tunevision check`: everything a search does before training, done once, so a cluster launch fails here instead."""
from __future__ import annotations

import time
from typing import Any, Mapping

from tunevision.search import Search, is_grid


def sample_config(space: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """Draw one config from a space: a sample of each domain, the first value of each grid."""
    import numpy as np
    from ray.tune.search.sample import Domain

    rng = np.random.default_rng(seed)

    def draw(value: Any) -> Any:
        if is_grid(value):
            return value["grid_search"][0]
        if isinstance(value, Domain):
            return value.sample(random_state=rng)
        if isinstance(value, dict):
            return {k: draw(v) for k, v in value.items()}
        return value

    return {k: draw(v) for k, v in space.items()}


def check(search: Search) -> str:
    """Validate data and weights, build one trial's model and loader, run one batch; return the report."""
    import torch

    from tunevision.data import ImageDataModule, prepare
    from tunevision.models.classifier import Classifier
    from tunevision.space import TrialConfig
    from tunevision.validate import check_space

    check_space(search)
    data = prepare(search.data, search.seed)
    config = sample_config(search.space, search.seed)
    model = Classifier(TrialConfig.from_dict(config), data.classes, data.source.channels, search.max_epochs)
    datamodule = ImageDataModule(data, model.config, model.network.image_size)
    started = time.monotonic()
    x, y = next(iter(datamodule.train_dataloader()))
    with torch.no_grad():
        logits = model(x)
    return "\n".join([
        data.report(),
        f"one trial's config: {config}",
        f"model: {model.network.trainable_params:,} trainable of {model.network.total_params:,} parameters",
        f"one batch: images {tuple(x.shape)}, labels {tuple(y.shape)}, logits {tuple(logits.shape)}"
        f" ({time.monotonic() - started:.1f} s with the cache fill)",
        "check passed: nothing was trained",
    ])

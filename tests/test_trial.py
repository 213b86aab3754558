"""A trial's model and data on real photographs: the offline ImageNet backbone learns graffiti frozen."""
from __future__ import annotations

import pytest

from real_data import GRAFFITI, needs_graffiti


@pytest.mark.slow
@needs_graffiti
def test_frozen_efficientnet_lite0_learns_the_graffiti_photographs_within_two_epochs(cache_dir):
    import pytorch_lightning as pl
    import torch

    from tunevision.data import ImageDataModule, ImageFolder, prepare
    from tunevision.models.classifier import Classifier
    from tunevision.space import TrialConfig

    pl.seed_everything(0, verbose=False)
    torch.set_num_threads(2)
    data = prepare(ImageFolder(str(GRAFFITI)), seed=0)
    config = {"backbone": "efficientnet_lite0", "weights": "imagenet", "trainable_layers": 0, "lr": 1e-2,
              "batch_size": 32, "image_size": 224}
    model = Classifier(TrialConfig.from_dict(config), data.classes, data.source.channels, max_epochs=2, positive_class="Graffiti")
    assert model.network.trainable_params == 1280 * 2 + 2  # only the new head learns
    datamodule = ImageDataModule(data, model.config, model.network.image_size)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=datamodule)
    # 58 % of the photographs are graffiti; a linear probe on these features converges near 84 %.
    assert trainer.callback_metrics["val_accuracy"] >= 0.78


def test_constrained_rule_adds_val_objective_to_the_figures_early_stopping_and_tune_read():
    from types import SimpleNamespace

    import torch

    from tunevision.choose import Rule
    from tunevision.trial import _objective

    figures = {"val_accuracy": torch.tensor(0.9), "val_fnr": torch.tensor(0.2), "val_loss": torch.tensor(0.3)}
    _objective(Rule.parse("max val_accuracy where val_fnr <= 0.05")).on_validation_end(SimpleNamespace(callback_metrics=figures), None)
    assert float(figures["val_objective"]) == pytest.approx(0.75)


def test_trial_seed_follows_the_search_seed_and_config_not_the_trial_id():
    from tunevision.trial import trial_seed

    config = {"backbone": "cnn", "lr": 0.003, "augment": {"hflip": True}}
    assert trial_seed(0, config) == trial_seed(0, dict(reversed(list(config.items()))))  # key order does not matter
    assert trial_seed(0, config) != trial_seed(0, {**config, "lr": 0.004})
    assert trial_seed(1, config) == trial_seed(0, config) + 1

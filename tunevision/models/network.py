"""A trial's network: a backbone (weights loaded, partly frozen) and a dense head; it normalises its own input."""
from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tunevision.errors import TunevisionError
from tunevision.models.registry import build_model, get_backbone
from tunevision.space import TrialConfig

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "none": nn.Identity,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
}


def parameter_layers(module: nn.Module) -> list[nn.Module]:
    """The "layers" that freezing counts: submodules that directly own parameters, in registration order."""
    return [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]


def trainable_layer_count(config: TrialConfig, total: int) -> int | None:
    """How many of the backbone's `total` layers train, from trainable_layers / trainable_fraction (None: all)."""
    if config.trainable_fraction is not None:
        return round(config.trainable_fraction * total)
    if config.trainable_layers is not None:
        if config.trainable_layers > total:
            raise TunevisionError(f'space["trainable_layers"]: {config.trainable_layers} exceeds {config.backbone}\'s '
                                  f"{total} layers (use trainable_fraction across backbones)")
        return int(config.trainable_layers)
    return None


def layer_count(backbone: str, config: TrialConfig, channels: int = 3) -> int:
    """How many layers `freeze` counts in `backbone`, found on the meta device (no memory, no weights)."""
    spec = get_backbone(backbone)
    with torch.device("meta"):
        return len(parameter_layers(spec.trunk(spec.build(config, channels))))


def freeze(backbone: nn.Module, trainable: int | None) -> None:
    """Train only the last `trainable` parameter-owning layers of `backbone` (None: all of them).

    A *layer* is a module that directly owns parameters (a Conv2d, Linear or BatchNorm, or a block
    with a parameter of its own such as ConvNeXt's layer scale), counted in registration order
    (`module.modules()`), which follows the forward pass in these models. `trainable_layers: N`
    trains the last N layers of the backbone (0: frozen backbone, only the head trains);
    `trainable_fraction: f` trains the last round(f * L) of its L layers; leaving both None trains
    the whole backbone; setting both is an error. BatchNorm layers in the frozen part stay in eval
    mode (running statistics frozen too) when the network trains. For example resnet18 has 40
    layers and its last is layer4.1.bn2. 'dense' and 'cnn' always train whole.
    """
    if trainable is None:
        return
    layers = parameter_layers(backbone)
    backbone.requires_grad_(False)
    for layer in layers[len(layers) - trainable:]:
        for p in layer.parameters(recurse=False):
            p.requires_grad_(True)


def hidden_sizes(hidden_units: Any, in_features: int) -> list[int]:
    """Widths of the head's hidden layers: ints as given, floats in (0, 1] as that fraction of `in_features`."""
    if hidden_units is None or (not isinstance(hidden_units, (list, tuple)) and hidden_units == 0):
        return []
    units = hidden_units if isinstance(hidden_units, (list, tuple)) else [hidden_units]
    return [int(u) if isinstance(u, numbers.Integral) else max(1, round(u * in_features)) for u in units]


def build_head(in_features: int, num_classes: int, config: TrialConfig) -> nn.Sequential:
    """Dense head: [dropout, linear, activation] per hidden layer, then dropout and the output linear."""
    layers: list[nn.Module] = []
    for units in hidden_sizes(config.hidden_units, in_features) + [num_classes]:
        if config.dropout > 0:
            layers.append(nn.Dropout(float(config.dropout)))
        layers += [nn.Linear(in_features, units), ACTIVATIONS[config.activation]()]
        in_features = units
    return nn.Sequential(*layers[:-1])  # no activation after the output layer


class Network(nn.Module):
    """Backbone + head for [0, 1] images: forward(N x C x H x W) -> N x num_classes logits.

    Normalisation with the backbone's own mean/std, and repeating 1-channel input to 3 channels
    when the backbone takes 3, happen inside forward, so the network predicts on its own.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, mean: Sequence[float], std: Sequence[float],
                 repeat_grey: bool, image_size: int, stages: Sequence[nn.Module] | None = None) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        # The backbone's forward as stages (BackboneSpec.stages), kept in a plain list: they are registered in backbone.
        self._stages = list(stages) if stages is not None else None
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.repeat_grey = repeat_grey
        self.image_size = image_size  # default input side when config["image_size"] is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled output, N x feature_dim: what the head reads."""
        return self._pool(self._run(self._normalise(x), 0))

    def prefix(self, x: torch.Tensor, cut: int) -> torch.Tensor:
        """What the feature cache stores: the activations after `cut` stages; after all of them, the pooled features."""
        if cut == self.stage_count:
            return self.features(x)
        return self._run(self._normalise(x), 0, cut)

    def advance(self, x: torch.Tensor, start: int, cut: int) -> torch.Tensor:
        """`prefix(images, cut)` from `prefix(images, start)`, for an earlier cut `start`: the stages between them."""
        x = self._run(x, start, cut)
        return self._pool(x) if cut == self.stage_count else x

    def from_prefix(self, x: torch.Tensor, cut: int) -> torch.Tensor:
        """Logits from `prefix(images, cut)`: the stages after `cut`, the pooling and the head."""
        if cut == self.stage_count:
            return self.head(x)
        return self.head(self._pool(self._run(x, cut)))

    def _run(self, x: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
        if self._stages is None:  # registered without stages: the backbone runs whole
            return self.backbone(x)
        for stage in self._stages[start:stop]:
            x = stage(x)
        return x

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.repeat_grey and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    @staticmethod
    def _pool(features: torch.Tensor) -> torch.Tensor:
        if features.ndim == 4:
            features = F.adaptive_avg_pool2d(features, 1)
        return features.flatten(1)

    @property
    def frozen(self) -> bool:
        """True when the backbone has parameters and none trains (trainable_layers 0): it is a fixed function."""
        params = list(self.backbone.parameters())
        return bool(params) and not any(p.requires_grad for p in params)

    @property
    def frozen_stages(self) -> int:
        """How many leading stages have no trainable parameter (0 for a backbone registered without stages)."""
        count = 0
        for stage in self._stages or []:
            if any(p.requires_grad for p in stage.parameters()):
                break
            count += 1
        return count

    @property
    def stage_count(self) -> int:
        """How many stages the backbone was registered with (0: none)."""
        return len(self._stages or [])

    @property
    def cut(self) -> int | None:
        """Where the feature cache cuts this network: after `cut` stages, all of them when the backbone is wholly
        frozen (then the pooled output is cached); None when its first stage trains."""
        if self.frozen:
            return self.stage_count
        return self.frozen_stages or None

    def train(self, mode: bool = True) -> Network:
        """Set training mode, keeping BatchNorm layers whose parameters are all frozen in eval mode.

        A wholly frozen backbone stays in eval mode entirely (its own dropout and stochastic depth off too,
        e.g. timm's EfficientNet drops 20 % of its pooled features in training): it computes the same
        features in every epoch, which is what lets the feature cache compute them once.
        """
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        for stage in (self._stages or [])[: self.frozen_stages]:  # a frozen prefix is a fixed function too
            stage.eval()
        for m in self.backbone.modules():
            own = list(m.parameters(recurse=False))
            if isinstance(m, _BatchNorm) and own and not any(p.requires_grad for p in own):
                m.eval()
        return self

    @property
    def trainable_params(self) -> int:
        """Number of parameters that train (head included)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def total_params(self) -> int:
        """Number of parameters, trained or frozen."""
        return sum(p.numel() for p in self.parameters())


def create_network(config: TrialConfig, num_classes: int, channels: int) -> Network:
    """Build a trial's network: backbone with its weights, frozen per `freeze`, then the head.

    Example::

        net = create_network(TrialConfig.from_dict({"backbone": "dense", "hidden_units": 0.1}), num_classes=10, channels=1)
        net(torch.rand(2, 1, 28, 28)).shape  # torch.Size([2, 10]); hidden layer of 78 units
    """
    name = config.backbone
    spec = get_backbone(name)
    if spec.in_channels is not None and channels not in (1, spec.in_channels):
        raise TunevisionError(f'space["backbone"]: {name} takes 1- or {spec.in_channels}-channel images, '
                              f"the data has {channels}")
    backbone = spec.trunk(build_model(name, config.weights, config, channels))
    if spec.weights is not None:  # 'dense' and 'cnn' have nothing pretrained to keep: they train whole
        freeze(backbone, trainable_layer_count(config, len(parameter_layers(backbone))))
    head = build_head(spec.feature_dim or backbone.feature_dim, num_classes, config)
    repeat_grey = spec.in_channels == 3 and channels == 1
    stages = spec.stages(backbone) if spec.stages is not None else None
    return Network(backbone, head, spec.mean, spec.std, repeat_grey, spec.image_size, stages).train()

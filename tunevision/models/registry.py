"""The backbone registry: names -> `BackboneSpec`, and where each backbone's weights come from."""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import urlparse

import torch
from torch import nn

from tunevision.errors import TunevisionError

if TYPE_CHECKING:
    from tunevision.space import TrialConfig

OFFLINE_HINT = "weights: None for random init, a local .pth path, or the offline backbone efficientnet_lite0"


@dataclass(frozen=True)
class PackagedWeights:
    """Weights shipped as a file inside an installed package; same fields as torchvision's `Weights`."""

    url: str  # where the weights were published (for the record; never fetched)
    path: str  # the .pth file inside the package
    transforms: Callable[..., Any]  # preprocessing preset constructor, like torchvision's
    meta: Mapping[str, Any] = field(default_factory=dict)


def _load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    reshaped = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if missing or unexpected or reshaped:
        raise ValueError(f"{len(missing)} missing keys {missing[:2]}, {len(unexpected)} unexpected keys "
                         f"{unexpected[:2]}, {len(reshaped)} of another shape {reshaped[:2]}")
    model.load_state_dict(state_dict, strict=True)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone, cut its classifier off, and preprocess its input.

    `build(config, channels)` returns the whole model (classifier included) with random init; the
    weights are loaded into that whole model (or `build_pretrained()` builds it with its weights, for
    builders that load their own), then `trunk(model)` keeps the part before the classifier, whose output is N x feature_dim or N x feature_dim x h x w (pooled by the network).
    Mean, std and the default image size come from `weights.transforms()`, so the weights decide
    the preprocessing.
    """

    build: Callable[[TrialConfig, int], nn.Module]
    trunk: Callable[[nn.Module], nn.Module]
    feature_dim: int | None  # None: the trunk's own `feature_dim` attribute (size depends on config)
    weights: Any = None  # torchvision Weights enum member, PackagedWeights, or None (no pretrained weights)
    load: Callable[[nn.Module, Mapping[str, torch.Tensor]], None] = _load_strict  # state dict -> whole model
    build_pretrained: Callable[[], nn.Module] | None = None  # the whole model with `weights` loaded by its own builder
    default_image_size: int | None = None  # None: the weights' crop size
    in_channels: int | None = 3  # channels the first layer takes (1-channel data is repeated); None: the data's
    # The trunk's forward as modules applied in turn (its output then pooled like the trunk's): where the feature
    # cache may cut a partly frozen backbone. None: only a wholly frozen backbone's pooled output is cached.
    stages: Callable[[nn.Module], list[nn.Module]] | None = None
    source: str = "torchvision"
    license: str = "BSD-3-Clause code; ImageNet-1k weights for non-commercial research"

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean the weights expect on [0, 1] inputs ((0.5,) without weights)."""
        return tuple(self.weights.transforms().mean) if self.weights is not None else (0.5,)

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel std the weights expect ((0.5,) without weights: maps [0, 1] to [-1, 1])."""
        return tuple(self.weights.transforms().std) if self.weights is not None else (0.5,)

    @property
    def image_size(self) -> int:
        """Default square input side: the weights' crop size unless the entry fixes it."""
        if self.default_image_size is not None:
            return self.default_image_size
        if self.weights is None:  # nothing to follow: ImageNet's usual side
            return 224
        return int(self.weights.transforms().crop_size[0])


_BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(name: str, spec: BackboneSpec | None = None) -> Any:
    """Register `spec` under `name`, or decorate a zero-argument function returning the spec.

    Example::

        register_backbone("resnet18_again", get_backbone("resnet18"))

        @register_backbone("resnet34_again")
        def _resnet34_again() -> BackboneSpec:
            return get_backbone("resnet34")
    """
    if spec is None:
        def decorate(fn: Callable[[], BackboneSpec]) -> Callable[[], BackboneSpec]:
            register_backbone(name, fn())
            return fn

        return decorate
    if name in _BACKBONES:
        raise ValueError(f"backbone {name!r} is already registered")
    _BACKBONES[name] = spec
    return spec


def register_missing(specs: Mapping[str, BackboneSpec]) -> None:
    """Register the specs this process lacks: a trial process gets the backbones its search file registered."""
    for name, spec in specs.items():
        _BACKBONES.setdefault(name, spec)


def list_backbones(pattern: str = "*") -> list[str]:
    """Return the sorted registered names matching the fnmatch `pattern`, e.g. `list_backbones("resnet*")`."""
    return sorted(n for n in _BACKBONES if fnmatch.fnmatch(n, pattern))


def get_backbone(name: str) -> BackboneSpec:
    """Return the spec registered as `name`; an unknown name raises TunevisionError listing the known ones."""
    if name not in _BACKBONES:
        raise TunevisionError(f'space["backbone"]: unknown backbone {name!r} (known: {", ".join(list_backbones())})')
    return _BACKBONES[name]


def hub_file(weights: Any) -> Path:
    """Where torch.hub keeps (or would download) a torchvision weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def offline(url: str, timeout: float = 2.0) -> bool:
    """True when TUNEVISION_OFFLINE=1 or the url's host does not answer on port 443 within `timeout` s."""
    from tunevision.online import reachable

    return not reachable(urlparse(url).hostname, timeout)


def check_weights(backbone: str, weights: Any) -> None:
    """Raise TunevisionError unless `weights` can be loaded for `backbone`; never downloads.

    'dense' and 'cnn' have no pretrained weights, so any `weights` is accepted (and ignored) for them.

    Example::

        check_weights("efficientnet_lite0", "imagenet")  # shipped in a package: always available
    """
    spec = get_backbone(backbone)
    if weights is None or spec.weights is None:
        return
    if weights == "imagenet":
        if isinstance(spec.weights, PackagedWeights):
            if not Path(spec.weights.path).is_file():
                raise TunevisionError(f'space["weights"]: {backbone} weights file {spec.weights.path} is missing; '
                                      "reinstall its package")
            return
        file = hub_file(spec.weights)
        if not file.is_file() and offline(spec.weights.url):
            raise TunevisionError(
                f'space["weights"]: imagenet weights of {backbone} are not available offline: {file.name} is not in '
                f"{file.parent}; fetch it from {spec.weights.url} into that folder, or use {OFFLINE_HINT}"
            )
        return
    expected = "expected 'imagenet', None or a local .pth path"
    if not isinstance(weights, (str, os.PathLike)):
        raise TunevisionError(f'space["weights"]: invalid {weights!r} ({expected})')
    if not Path(weights).expanduser().is_file():
        raise TunevisionError(f'space["weights"]: file {str(weights)!r} not found ({expected})')


def build_model(name: str, weights: Any = "imagenet", config: TrialConfig | None = None, channels: int = 3) -> nn.Module:
    """Build backbone `name` whole (its classifier included) and load `weights` into it.

    The spec builds itself with its own weights, so a backbone registered under another name (an alias,
    or a family of the user's) loads them exactly like the original.

    Args:
        name: a registered backbone.
        weights: 'imagenet', None (random init) or a local .pth state dict of the whole model.
        config: the trial config (only 'dense' and 'cnn' read it); None: the defaults.
        channels: input channels of the data (only 'dense' and 'cnn' use it).

    Returns:
        The model in eval mode, e.g. `build_model("efficientnet_lite0")` is a 1000-class ImageNet classifier.
    """
    from tunevision.space import TrialConfig

    spec = get_backbone(name)
    check_weights(name, weights)
    config = config or TrialConfig.from_dict({"backbone": name})
    if weights is None or spec.weights is None:
        return spec.build(config, channels).eval()
    if weights == "imagenet" and spec.build_pretrained is not None:
        return spec.build_pretrained().eval()
    path = Path(spec.weights.path if weights == "imagenet" else weights).expanduser()
    model = spec.build(config, channels)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"it holds a {type(state_dict).__name__}, not a state dict")
        spec.load(model, state_dict)
    except Exception as e:  # unpickling and loading errors of a user's file are user mistakes
        first = str(e).strip().splitlines()[0]
        raise TunevisionError(f'space["weights"]: {path} does not fit backbone {name}: {first}') from None
    return model.eval()

"""Frozen-backbone feature cache: a frozen backbone's pooled output computed once, reused by every epoch and trial.

When a trial's whole backbone is frozen (`trainable_layers: 0`), `Network.train` keeps the backbone in
eval mode, so its pooled output is a fixed function of the image. The first trial on a node to need it
computes it for every manifest image from the decode cache and stores it as `features/<key>.npy`
(N x feature_dim float32, a few MB) under the cache folder, built like the decode cache: under an
exclusive `fcntl.flock`, into a temporary file renamed into place, then memory-mapped read-only. Every
epoch of every trial with the same key, in this search and later ones, then trains only the head.

The key covers everything that changes the features: the backbone's name, a hash of its weights and
buffers as loaded (so another weights file, or another random init, is another key), its input
normalisation, the freeze boundary, the image size (a progressive size gets one file per stage), the
images (the decode cache's fingerprint of source and manifest) and their channels. Only plain views are
cached: a config with augmentation, or whose backbone trains, trains on images as before, and the trial's
MLflow tag `tunevision.feature_cache` says why (`off: augmentation`).
"""
from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch.utils.data import Dataset, default_collate

from tunevision.data.augment import transform
from tunevision.data.cache import cache_dir, cached_images
from tunevision.data.datamodule import ImageDataModule
from tunevision.data.disk import bound_features
from tunevision.space import TrialConfig, stages

if TYPE_CHECKING:
    from tunevision.data.prepared import PreparedData
    from tunevision.models.network import Network

FORMAT = 1  # bump when what a feature file holds changes, so old files are never read as new ones
BOUNDARY = "pooled"  # the whole backbone is frozen: its pooled output is cached


def uncacheable(config: TrialConfig, network: Network, enabled: bool = True) -> str | None:
    """Why a trial cannot train from cached features (None: it can)."""
    if not enabled:
        return "switched off (Search.feature_cache=False)"
    if not network.frozen:
        return "backbone trains"
    if any(transform(spec) is not None for _, spec in stages(config.augment)):
        return "augmentation"
    return None


def weights_hash(network: Network) -> str:
    """A hash of the backbone's weights and buffers as loaded, and of the input normalisation."""
    digest = hashlib.sha256()
    for name, tensor in network.backbone.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy())
    for tensor in (network.mean, network.std):
        digest.update(tensor.cpu().numpy().tobytes())
    digest.update(str(network.repeat_grey).encode())
    return digest.hexdigest()[:24]


def key_parts(data: PreparedData, network: Network, backbone: str, size: int, weights: str | None = None) -> dict[str, Any]:
    """What the features depend on: the key's parts, stored next to the file (`weights`: a known `weights_hash`)."""
    return {"format": FORMAT, "backbone": backbone, "weights": weights or weights_hash(network), "boundary": BOUNDARY,
            "image_size": int(size), "images": data.fingerprint(), "channels": data.source.channels, "views": "plain"}


def feature_key(parts: dict[str, Any]) -> str:
    """The file name stem of the features with these key parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def cached_features(data: PreparedData, network: Network, backbone: str, size: int,
                    directory: str | os.PathLike[str] | None = None, batch_size: int = 64,
                    weights: str | None = None) -> tuple[Path, bool]:
    """Return (path, built): the feature file of every manifest image at `size`, building it if needed.

    Example::

        >>> from tunevision.data import Digits, prepare
        >>> from tunevision.models.network import create_network
        >>> net = create_network(TrialConfig.from_dict({"backbone": "resnet18", "weights": None, "trainable_layers": 0}), 10, 1)
        >>> path, built = cached_features(prepare(Digits(), seed=0), net, "resnet18", 32)
        >>> np.load(path, mmap_mode="r").shape
        (1797, 512)
    """
    parts = key_parts(data, network, backbone, size, weights)
    path = cache_dir(directory) / "features" / f"{feature_key(parts)}.npy"
    built = False
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not path.exists():  # another trial may have built it while we waited
                    _build(data, network, size, directory, path, parts, batch_size)
                    built = True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    os.utime(path)  # the modification time says when it was last used: the disk bound evicts the oldest first
    bound_features(directory, keep=path)
    return path, built


def _build(data: PreparedData, network: Network, size: int, directory: str | os.PathLike[str] | None, path: Path,
           parts: dict[str, Any], batch_size: int) -> None:
    for stale in glob.glob(f"{glob.escape(str(path))}.tmp*"):  # left by a build that crashed
        os.remove(stale)
    images = cached_images(data, size, directory)
    device = next(network.parameters()).device
    tmp, out = f"{path}.tmp{os.getpid()}", None
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = torch.from_numpy(np.array(images[start : start + batch_size])).permute(0, 3, 1, 2).contiguous()
                features = network.features(batch.to(device).float().div_(255)).float().cpu().numpy()
                if out is None:
                    out = open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(images), features.shape[1]))
                out[start : start + len(features)] = features
    finally:
        network.train(was_training)
    out.flush()
    Path(f"{path}.json").write_text(json.dumps({**parts, "rows": len(images), "dim": int(out.shape[1])}, indent=1))
    os.replace(tmp, path)


class FeatureRows(Dataset):
    """Rows of a feature file as (float32 feature_dim, int64 label)."""

    def __init__(self, path: str, rows: list[int], labels: torch.Tensor) -> None:
        self.path, self.rows, self.labels = path, rows, labels
        self._features = np.load(path, mmap_mode="r")  # mapped now: a file evicted later stays readable

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.array(self._features[self.rows[i]])), self.labels[i]

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_features": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._features = np.load(self.path, mmap_mode="r")


class FeatureDataModule(ImageDataModule):
    """An ImageDataModule whose batches are the frozen `network`'s cached features instead of images.

    The trial's model must then read features (`Classifier.takes_features`). `feature_cache` is "built"
    once this trial built a feature file, else "hit".
    """

    collate = staticmethod(default_collate)

    def __init__(self, data: PreparedData, config: TrialConfig, network: Network,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__(data, config, network.image_size, cache_dir=cache_dir)
        self.network, self.backbone = network, config.backbone
        self.weights = weights_hash(network)  # frozen: the same for the whole trial
        self.feature_cache = "hit"
        self.feature_bytes = 0

    def _dataset(self, split: str, augment: Any = None) -> FeatureRows:
        path, built = cached_features(self.data, self.network, self.backbone, self.image_size_now(), self.cache_dir,
                                      weights=self.weights)
        if built:
            self.feature_cache = "built"
        self.feature_bytes = path.stat().st_size
        return FeatureRows(str(path), self.data.rows(split), self.data.labels(split))


def trial_datamodule(data: PreparedData, config: TrialConfig, model: Any, enabled: bool = True) -> ImageDataModule:
    """A trial's data module: cached features where the config allows (switching `model` to read them), else images."""
    off = uncacheable(config, model.network, enabled)
    if off is not None:
        datamodule = ImageDataModule(data, config, model.network.image_size)
        datamodule.feature_cache = f"off: {off}"
        return datamodule
    model.takes_features = True
    return FeatureDataModule(data, config, model.network)

"""Feature cache: a backbone's frozen first part computed once per image, reused by every epoch and trial.

A backbone registered with stages (`BackboneSpec.stages`: its forward as modules applied in turn) is cut
after its last wholly frozen stage; a wholly frozen backbone is cut after all of them and its pooled
output is cached (also for backbones registered without stages). The frozen part runs in eval mode
(`Network.train`), so it is a fixed function of the image: the first trial on a node to need it computes
it and stores it as `features/<key>.npy` (pooled: float32; activations after a stage: float16) under the
cache folder, built once under an exclusive `fcntl.flock`, into a temporary file renamed into place, then
memory-mapped read-only. Every epoch of every trial with the same key, in this search and later ones,
then runs only the trainable stages and the head.

Augmentation happens on images, before the frozen part, so an augmented trial trains on cached *views*:
view v holds every training image augmented once, with a seed drawn from the key, and epoch e reads view
e % K, K = min(max_epochs, MAX_VIEWS). Up to 8 epochs every epoch sees fresh augmentations, as without the
cache; views are built when an epoch first needs one, so a trial that ASHA stops after 2 epochs builds
at most 2 and the next trial with the same key reads them. Validation and test read the plain view.

The key covers everything that changes the features: the backbone's name, a hash of its weights and
buffers as loaded (so another weights file, or another random init, is another key), its input
normalisation, the cut, the image size (a progressive size gets one file per stage), the images (the
decode cache's fingerprint of source and manifest), their channels, and the view (plain, or the augment
dict and view number). A trial whose first stage trains, or whose files would not fit the cache's bound,
trains on images as before; the trial's MLflow tag `tunevision.feature_cache` says why.
"""
from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import socket
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch.utils.data import Dataset, default_collate

from tunevision.data.augment import transform
from tunevision.data.balance import BalancedSampler
from tunevision.data.cache import cache_dir, cached_images
from tunevision.data.datamodule import ImageDataModule
from tunevision.data.disk import bound_features, feature_limit
from tunevision.data.once import build_once
from tunevision.errors import TunevisionError
from tunevision.space import TrialConfig, stages, value_at

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from tunevision.data.prepared import PreparedData
    from tunevision.models.network import Network

FORMAT = 2  # bump when what a feature file holds changes, so old files are never read as new ones
MAX_VIEWS = 8  # augmented views per image at most: epochs beyond it reuse them in turn


def uncacheable(config: TrialConfig, network: Network, enabled: bool = True) -> str | None:
    """Why a trial cannot train from cached features (None: it can)."""
    if not enabled:
        return "switched off (Search.feature_cache=False)"
    if network.cut is None:
        if network.stage_count:
            return "backbone trains from its first stage"
        partly_frozen = any(not p.requires_grad for p in network.backbone.parameters())
        return "backbone trains" + (" (registered without stages: only a wholly frozen one is cached)" if partly_frozen else "")
    return None


def boundary_name(network: Network, cut: int) -> str:
    """How a cut reads in a key and in `tunevision cache list`: 'pooled' or 'stage 5 of 9'."""
    return "pooled" if cut == network.stage_count else f"stage {cut} of {network.stage_count}"


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


def key_parts(data: PreparedData, network: Network, backbone: str, size: int, weights: str | None = None,
              augment: Mapping[str, Any] | None = None, view: int = 0) -> dict[str, Any]:
    """What the features depend on: the key's parts, stored next to the file (`weights`: a known `weights_hash`)."""
    views = "plain" if transform(augment) is None else {"augment": dict(augment), "view": int(view)}
    return {"format": FORMAT, "backbone": backbone, "weights": weights or weights_hash(network),
            "boundary": boundary_name(network, network.cut), "image_size": int(size), "images": data.fingerprint(),
            "channels": data.source.channels, "views": views}


def feature_key(parts: dict[str, Any]) -> str:
    """The file name stem of the features with these key parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def cached_features(data: PreparedData, network: Network, backbone: str, size: int,
                    directory: str | os.PathLike[str] | None = None, batch_size: int = 64,
                    weights: str | None = None, augment: Mapping[str, Any] | None = None,
                    view: int = 0) -> tuple[Path, bool]:
    """Return (path, built): the cut `network`'s features of every image at `size`, building the file if needed.

    Plain features hold every manifest image in manifest order; an augmented view (`augment`, `view`) holds
    the training images in the order of `data.rows("train")`.

    Example::

        >>> from tunevision.data import Digits, prepare
        >>> from tunevision.models.network import create_network
        >>> net = create_network(TrialConfig.from_dict({"backbone": "resnet18", "weights": None, "trainable_layers": 0}), 10, 1)
        >>> path, built = cached_features(prepare(Digits(), seed=0), net, "resnet18", 32)
        >>> np.load(path, mmap_mode="r").shape
        (1797, 512)
    """
    parts = key_parts(data, network, backbone, size, weights, augment, view)
    path = cache_dir(directory) / "features" / f"{feature_key(parts)}.npy"
    built = build_once(path, lambda: _build(data, network, size, directory, path, parts, batch_size, augment))
    os.utime(path)  # the modification time says when it was last used: the disk bound evicts the oldest first
    bound_features(directory, keep=path)
    return path, built


def row_shape(network: Network, channels: int, size: int) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and storage type of one image's cached features (pooled: float32; a stage's activations: float16)."""
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            device = next(network.parameters()).device
            shape = tuple(network.prefix(torch.zeros(1, channels, size, size, device=device), network.cut).shape[1:])
    finally:
        network.train(was_training)
    return shape, np.dtype(np.float32 if len(shape) == 1 else np.float16)


def _build(data: PreparedData, network: Network, size: int, directory: str | os.PathLike[str] | None, path: Path,
           parts: dict[str, Any], batch_size: int, augment: Mapping[str, Any] | None) -> None:
    for stale in glob.glob(f"{glob.escape(str(path))}.tmp*"):  # left by a build that crashed
        os.remove(stale)
    augmentation = transform(augment)
    rows = data.rows("train") if augmentation is not None else list(range(len(data.manifest)))
    earlier, start = _earlier_cut(network, path.parent, parts)
    images = cached_images(data, size, directory) if earlier is None else None
    device = next(network.parameters()).device
    shape, dtype = row_shape(network, data.source.channels, size)
    tmp, cut = f"{path}.tmp{os.getpid()}", network.cut
    was_training = network.training
    network.eval()
    try:
        out = open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(rows), *shape))
        if hasattr(os, "posix_fallocate"):  # reserve every block now: a full disk fails here, never as a SIGBUS mid-write
            with open(tmp, "r+b") as file:
                os.posix_fallocate(file.fileno(), 0, out.offset + out.nbytes)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(zlib.crc32(path.stem.encode()))  # a view's augmentations follow from its key
            for first in range(0, len(rows), batch_size):
                if earlier is not None:  # the stages between an earlier cut's cached features and this cut
                    batch = torch.from_numpy(np.array(earlier[first : first + batch_size], dtype=np.float32))
                    features = network.advance(batch.to(device), start, cut)
                else:
                    batch = torch.from_numpy(np.array(images[rows[first : first + batch_size]])).permute(0, 3, 1, 2).contiguous()
                    if augmentation is not None:  # one draw per image: a v2 transform on a batch draws once for all
                        batch = torch.stack([augmentation(image) for image in batch])
                    features = network.prefix(batch.to(device).float().div_(255), cut)
                out[first : first + len(features)] = features.float().cpu().numpy().astype(dtype)
        out.flush()
        del out
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        why = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise TunevisionError(f"feature cache: cannot write {tmp} on node {socket.gethostname()}: {why}; free space "
                              f"there, or point TUNEVISION_CACHE at a larger local disk") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        network.train(was_training)
    Path(f"{path}.json").write_text(json.dumps({**parts, "rows": len(rows), "dim": "x".join(map(str, shape))}, indent=1))
    os.replace(tmp, path)


def _earlier_cut(network: Network, folder: Path, parts: dict[str, Any]) -> tuple[np.ndarray | None, int]:
    """The latest earlier cut of the same key already cached, mapped, and its cut (None, 0: none).

    From there only the stages in between run: a search whose trials freeze different depths of one
    backbone computes its expensive early stages once.
    """
    for start in range(network.cut - 1, 0, -1):
        path = folder / f"{feature_key({**parts, 'boundary': boundary_name(network, start)})}.npy"
        try:
            return np.load(path, mmap_mode="r"), start
        except FileNotFoundError:
            continue
    return None, 0


class FeatureRows(Dataset):
    """Rows of a feature file as (float32 features, int64 label)."""

    def __init__(self, path: str, rows: list[int], labels: torch.Tensor) -> None:
        self.path, self.rows, self.labels = path, rows, labels
        self._features = np.load(path, mmap_mode="r")  # mapped now: a file evicted later stays readable

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.array(self._features[self.rows[i]], dtype=np.float32)), self.labels[i]

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_features": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._features = np.load(self.path, mmap_mode="r")


class FeatureDataModule(ImageDataModule):
    """An ImageDataModule whose batches are the cut `network`'s cached features instead of images.

    The trial's model must then read features (`Classifier.cut`). `feature_cache` is "built" once this
    trial built a feature file, else "hit"; `views` is how many augmented views an epoch chooses from.
    """

    collate = staticmethod(default_collate)

    def __init__(self, data: PreparedData, config: TrialConfig, network: Network, max_epochs: int = MAX_VIEWS,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__(data, config, network.image_size, cache_dir=cache_dir)
        self.network, self.backbone = network, config.backbone
        self.weights = weights_hash(network)  # taken before training: the frozen part's key for the whole trial
        self.views = max(1, min(max_epochs, MAX_VIEWS))
        augmented = any(transform(spec) is not None for _, spec in stages(self.augment))
        self.reload_every_epoch = self.reload_every_epoch or augmented  # every epoch reads its own view
        self.feature_cache = "hit"
        self.feature_bytes = 0

    def _features(self, augment: Mapping[str, Any] | None = None, view: int = 0) -> Path:
        path, built = cached_features(self.data, self.network, self.backbone, self.image_size_now(), self.cache_dir,
                                      weights=self.weights, augment=augment, view=view)
        if built:
            self.feature_cache = "built"
        self.feature_bytes = max(self.feature_bytes, path.stat().st_size)
        return path

    def _dataset(self, split: str, augment: Any = None) -> FeatureRows:
        return FeatureRows(str(self._features()), self.data.rows(split), self.data.labels(split))

    def train_dataloader(self) -> DataLoader:
        """Shuffled (and balanced) train batches: the plain features, or the epoch's augmented view."""
        epoch = self.current_epoch()
        spec = value_at(self.augment, epoch)
        if transform(spec) is None:
            dataset = self._dataset("train")
        else:
            labels = self.data.labels("train")
            dataset = FeatureRows(str(self._features(spec, epoch % self.views)), list(range(len(labels))), labels)
        return self._loader(dataset, BalancedSampler(dataset.labels, self.balance))


def too_large(data: PreparedData, config: TrialConfig, network: Network, max_epochs: int) -> str | None:
    """Why this trial's feature files would not fit the feature cache's bound (None: they fit)."""
    sizes = {int(size or network.image_size) for _, size in stages(config.image_size)}
    augmented = any(transform(spec) is not None for _, spec in stages(config.augment))
    views = min(max_epochs, MAX_VIEWS) if augmented else 0
    needed = 0
    for size in sizes:
        shape, dtype = row_shape(network, data.source.channels, size)
        row = int(np.prod(shape)) * dtype.itemsize
        needed += row * (len(data.manifest) + views * len(data.rows("train")))
    if needed > feature_limit():
        return (f"its features ({needed / 1e9:.1f} GB at {boundary_name(network, network.cut)}) exceed "
                f"TUNEVISION_FEATURE_CACHE_GB ({feature_limit() / 1e9:g} GB)")
    return None


def trial_datamodule(data: PreparedData, config: TrialConfig, model: Any, enabled: bool = True,
                     max_epochs: int = MAX_VIEWS) -> ImageDataModule:
    """A trial's data module: cached features where the config allows (switching `model` to read them), else images."""
    off = uncacheable(config, model.network, enabled) or too_large(data, config, model.network, max_epochs)
    if off is not None:
        datamodule = ImageDataModule(data, config, model.network.image_size)
        datamodule.feature_cache = f"off: {off}"
        return datamodule
    model.cut = model.network.cut
    return FeatureDataModule(data, config, model.network, max_epochs)

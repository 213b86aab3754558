"""ImageDataModule: a trial's batches, read from the decode-once cache at the epoch's image size."""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from tunevision.data.augment import transform
from tunevision.data.balance import BalancedSampler
from tunevision.data.cache import cached_images
from tunevision.data.prepared import PreparedData
from tunevision.space import Progressive, TrialConfig, stages, value_at


class CachedImages(Dataset):
    """Rows of a cache file as (uint8 C x S x S, int64 label), optionally augmented; `to_float` makes batches float."""

    def __init__(self, path: str, rows: list[int], labels: torch.Tensor, augment: Callable | None = None) -> None:
        self.path, self.rows, self.labels, self.augment = path, rows, labels, augment
        # Mapped now: a mapped file stays readable even if the cache folder's eviction removes its name later.
        self._images: np.ndarray | None = np.load(path, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._images is None:  # a DataLoader worker given a pickled copy maps the file itself
            self._images = np.load(self.path, mmap_mode="r")
        # contiguous: batches with channels-last strides made CPU convolutions several times slower
        image = torch.from_numpy(np.array(self._images[self.rows[i]])).permute(2, 0, 1).contiguous()
        if self.augment is not None:
            image = self.augment(image)
        return image, self.labels[i]

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_images": None}


def to_float(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate uint8 samples into a float32 batch in [0, 1] (one conversion per batch, not per image)."""
    images, labels = default_collate(items)
    return images.float().div_(255), labels


class ImageDataModule(pl.LightningDataModule):
    """Train/val/test loaders of a PreparedData for one trial config.

    Uses the config's `batch_size`, `image_size` (int, None for `default_image_size`, or a Progressive),
    `augment` (dict, None, or a Progressive; train only) and `balance` (train only). When image_size or augment is staged, `reload_every_epoch` is True: the
    trial must build its Trainer with `reload_dataloaders_every_n_epochs=1` so each epoch gets its
    stage. The epoch is the attached trainer's `current_epoch` (0 when detached); set `epoch` to pin
    it, e.g. to test a checkpoint at the size it was trained with.

    Example::

        >>> from tunevision.data import Digits, prepare
        >>> from tunevision.space import TrialConfig
        >>> dm = ImageDataModule(prepare(Digits(), seed=0), TrialConfig.from_dict({"batch_size": 8, "image_size": 16}), 224)
        >>> x, y = next(iter(dm.train_dataloader())); tuple(x.shape), y.dtype
        ((8, 1, 16, 16), torch.int64)
    """

    def __init__(
        self,
        data: PreparedData,
        config: TrialConfig,
        default_image_size: int,
        num_workers: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.data, self.num_workers, self.cache_dir = data, num_workers, cache_dir
        self.batch_size = config.batch_size
        self.image_size = default_image_size if config.image_size is None else config.image_size
        self.augment = config.augment
        self.balance = config.balance
        self._transforms = {start: transform(spec) for start, spec in stages(self.augment)}
        self.reload_every_epoch = isinstance(self.image_size, Progressive) or isinstance(self.augment, Progressive)
        self.epoch: int | None = None

    def current_epoch(self) -> int:
        """The epoch whose stage applies: `epoch` if set, else the attached trainer's, else 0."""
        if self.epoch is not None:
            return self.epoch
        return self.trainer.current_epoch if self.trainer is not None else 0

    def image_size_now(self) -> int:
        """The image side in force at the current epoch."""
        return value_at(self.image_size, self.current_epoch())

    def prepare_data(self) -> None:
        """Build the cache of the first epoch's size (Lightning calls this once per node)."""
        cached_images(self.data, value_at(self.image_size, 0), self.cache_dir)

    def _dataset(self, split: str, augment: Callable | None = None) -> CachedImages:
        images = cached_images(self.data, self.image_size_now(), self.cache_dir)
        return CachedImages(images.filename, self.data.rows(split), self.data.labels(split), augment)

    def _loader(self, dataset: CachedImages, sampler: BalancedSampler | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=to_float,
            num_workers=self.num_workers,
            persistent_workers=False,
            # a last batch of one breaks BatchNorm in training, so drop it only then
            drop_last=sampler is not None and len(sampler) % self.batch_size == 1 and len(sampler) > 1,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (and balanced) train batches, augmented with the epoch's stage."""
        augment = value_at(Progressive(tuple(self._transforms.items())), self.current_epoch())
        dataset = self._dataset("train", augment)
        return self._loader(dataset, BalancedSampler(dataset.labels, self.balance))

    def val_dataloader(self) -> DataLoader:
        """Validation batches in manifest order, never augmented."""
        return self._loader(self._dataset("val"))

    def test_dataloader(self) -> DataLoader:
        """Test batches in manifest order, never augmented."""
        return self._loader(self._dataset("test"))


"""Epoch time with and without the decode-once cache, on the graffiti photographs (ImageFolder).

Both runs train the same model (torchvision mobilenet_v3_small, weights=None, 2 classes) for the
same number of epochs with the same batch size on the same train split; only where images come
from differs: decoded from their JPEG files every epoch, or read from the cache built once.

    python bench/cache_epoch.py [DATA] [--size 224] [--batch-size 32] [--epochs 3] [--workers 0]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, Dataset

from tunevision.data import ImageDataModule, ImageFolder, PreparedData, prepare
from tunevision.data.cache import cached_images
from tunevision.data.datamodule import to_float
from tunevision.data.decode import to_array


class DecodeEveryTime(Dataset):
    """The train split decoded from its files on every access: the baseline without the cache."""

    def __init__(self, data: PreparedData, size: int) -> None:
        self.data, self.size = data, size
        self.rows, self.labels = data.rows("train"), data.labels("train")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        source = self.data.source
        with source.open(self.data.manifest.key[self.rows[i]]) as image:
            array = to_array(image, self.size, source.channels)
        return torch.from_numpy(array).permute(2, 0, 1).contiguous(), self.labels[i]


def epoch_seconds(loader: DataLoader, model: torch.nn.Module | None) -> float:
    """Seconds for one pass over `loader`, training `model` on each batch (data loading only if None)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01) if model is not None else None
    started = time.perf_counter()
    for x, y in loader:
        if model is not None:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    """Measure and print data-only and training epoch times, uncached and cached."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "graffiti"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    if not os.path.isdir(args.data):
        print(f"skipped: {args.data} not found (pass the graffiti folder as the first argument)")
        return
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    data = prepare(ImageFolder(args.data), seed=0)
    print(f"prepare (list + validate + split): {time.perf_counter() - started:.1f} s; {sum(data.counts()['train'].values())} train images")
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        cached_images(data, args.size, cache)
        print(f"cache build at {args.size} px (once per node): {time.perf_counter() - started:.1f} s")
        loaders = {
            "uncached": DataLoader(
                DecodeEveryTime(data, args.size), args.batch_size, shuffle=True, num_workers=args.workers, collate_fn=to_float
            ),
            "cached": ImageDataModule(data, {"batch_size": args.batch_size, "image_size": args.size}, args.size, args.workers, cache).train_dataloader(),
        }
        for name, loader in loaders.items():
            times = [epoch_seconds(loader, None) for _ in range(args.epochs)]
            print(f"{name:>8}  data only:  " + "  ".join(f"{t:.2f} s" for t in times))
        for name, loader in loaders.items():
            model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=len(data.classes)).train()
            model(torch.zeros(2, data.source.channels, args.size, args.size)).sum().backward()  # warm-up, untimed
            times = [epoch_seconds(loader, model) for _ in range(args.epochs)]
            print(f"{name:>8}  train epoch (mobilenet_v3_small): " + "  ".join(f"{t:.2f} s" for t in times))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, workers {args.workers}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Epoch time with and without the decode-once cache, on the graffiti photographs (ImageFolder).

Both runs train the same model (torchvision mobilenet_v3_small, weights=None, 2 classes) for the
same number of epochs with the same batch size on the same train split; only where images come
from differs: decoded from their JPEG files every epoch, or read from the cache built once.

    python bench/cache_epoch.py [DATA] [--size 224] [--batch-size 32] [--epochs 3] [--workers 0]
    python bench/cache_epoch.py --tiny --results /tmp/results.md   # CI: 48 generated images at 32 px, 2 epochs

The figures are printed and appended to bench/RESULTS.md (--results) with the machine, date and command.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # the checkout's tunevision, run from anywhere
sys.path.insert(0, str(BENCH.parent / "tests"))  # fakes.py, for --tiny
sys.path.insert(0, str(BENCH))  # record.py, also when run with runpy

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from tunevision.data import ImageDataModule, ImageFolder, PreparedData, prepare  # noqa: E402
from tunevision.data.cache import cached_images  # noqa: E402
from tunevision.data.datamodule import to_float  # noqa: E402
from tunevision.data.decode import to_array  # noqa: E402
from tunevision.space import TrialConfig  # noqa: E402

from record import header, publish  # noqa: E402


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


def main(argv: list[str] | None = None) -> int:
    """Measure data-only and training epoch times, uncached and cached; print and append them; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(BENCH.parent.parent / "shared" / "datasets" / "graffiti"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="48 generated pattern images at 32 px, 2 epochs (keeps the script working)")
    parser.add_argument("--results", type=Path, default=BENCH / "RESULTS.md", help="Markdown file the results are appended to")
    args = parser.parse_args(argv)
    command = " ".join(["python bench/cache_epoch.py"] + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            from fakes import write_pattern_images

            args.data, args.size, args.epochs = str(write_pattern_images(Path(tmp) / "images")), 32, 2
        if not os.path.isdir(args.data):
            print(f"skipped: no data folder {args.data} (the graffiti photographs are not on this machine)")
            return 0
        data = prepare(ImageFolder(args.data), seed=0)
        cache = Path(tmp) / "cache"
        started = time.perf_counter()
        cached_images(data, args.size, cache)
        build_s = time.perf_counter() - started
        loaders = {
            "uncached": DataLoader(
                DecodeEveryTime(data, args.size), args.batch_size, shuffle=True, num_workers=args.workers, collate_fn=to_float
            ),
            "cached": ImageDataModule(data, TrialConfig.from_dict({"batch_size": args.batch_size, "image_size": args.size}), args.size,
                                      args.workers, cache).train_dataloader(),
        }
        rows = {f"{name}, data only": [epoch_seconds(loader, None) for _ in range(args.epochs)] for name, loader in loaders.items()}
        for name, loader in loaders.items():
            model = torchvision.models.mobilenet_v3_small(weights=None, num_classes=len(data.classes)).train()
            model(torch.zeros(2, data.source.channels, args.size, args.size)).sum().backward()  # warm-up, untimed
            rows[f"{name}, training epoch"] = [epoch_seconds(loader, model) for _ in range(args.epochs)]

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    train = len(data.rows("train"))
    epochs = range(1, args.epochs + 1)
    lines = header(f"cache_epoch.py: the decode-once cache, {args.size} px, mobilenet_v3_small, cpu", command,
                   f"{torch.get_num_threads()} threads; load average at the end {os.getloadavg()[0]:.1f}",
                   f"{args.data if not args.tiny else 'generated pattern images'}: {train} train images per epoch, batch "
                   f"{args.batch_size}, {args.workers} loader workers; cache built once in {build_s:.1f} s") + [
        "| epoch of the train split | " + " | ".join(f"epoch {e}" for e in epochs) + " | images/s (mean) |",
        "| --- | " + " | ".join("---" for _ in epochs) + " | --- |",
    ]
    lines += [f"| {name} | " + " | ".join(f"{s:.2f} s" for s in seconds) + f" | {train / mean(seconds):.0f} |"
              for name, seconds in rows.items()]
    data_x = mean(rows["uncached, data only"]) / mean(rows["cached, data only"])
    train_x = mean(rows["uncached, training epoch"]) / mean(rows["cached, training epoch"])
    lines += ["", f"Reading the images: **{data_x:.1f}x** faster from the cache; a training epoch: **{train_x:.2f}x** "
                  f"(the network's own work is the same on both sides). Building the cache took "
                  f"{build_s / mean(rows['uncached, data only']):.1f} uncached data-only epochs, once per node.", ""]
    publish(args.results, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

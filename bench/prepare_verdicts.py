"""Preparation time with remembered validation verdicts: the first `prepare()` decodes every image, the next skip it.

Writes a folder of generated JPEGs (two classes; smooth colour fields with noise, so they compress like
photographs) unless it is already there, then times `prepare()` on it three times with a fresh cache
folder: cold (every image decoded), warm (every verdict remembered), and after replacing a tenth of
the files in place (only those decoded again).

    python bench/prepare_verdicts.py [--folder /tmp/tunevision-bench-jpegs] [--images 300] [--width 1000] [--height 700]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A photograph-like RGB image: a smooth random colour field plus sensor-like noise."""
    coarse = rng.integers(0, 256, (height // 50 + 2, width // 50 + 2, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    noisy = field + rng.integers(-12, 13, field.shape, dtype=np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write_folder(folder: Path, images: int, width: int, height: int) -> None:
    """Write `images` JPEGs into folder/{a,b}/ (kept when already there)."""
    rng = np.random.default_rng(0)
    for i in range(images):
        path = folder / "ab"[i % 2] / f"{i:05d}.jpg"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            photo(rng, width, height).save(path, quality=90)


def timed_prepare(folder: Path) -> float:
    """Seconds for one `prepare()` of the folder (list, validate, split)."""
    from tunevision.data import ImageFolder, prepare

    started = time.perf_counter()
    prepare(ImageFolder(str(folder)), seed=0)
    return time.perf_counter() - started


def main() -> None:
    """Time cold, warm and partly changed preparation and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "tunevision-bench-jpegs")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=700)
    args = parser.parse_args()

    write_folder(args.folder, args.images, args.width, args.height)
    files = sorted(args.folder.glob("*/*.jpg"))[: args.images]
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TUNEVISION_CACHE"] = cache  # a cold verdict store
        cold = timed_prepare(args.folder)
        warm = timed_prepare(args.folder)
        changed = files[:: 10]
        rng = np.random.default_rng(1)
        for path in changed:  # replaced in place: same names, other pixels
            photo(rng, args.width, args.height).save(path, quality=90)
        partly = timed_prepare(args.folder)
    print(f"{len(files)} JPEGs of {args.width}x{args.height} ({megabytes:.1f} MB) in {args.folder}, "
          f"{os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print("| prepare() | seconds | per image |")
    print("| --- | --- | --- |")
    for name, seconds in (("first (every image decoded)", cold), ("second (verdicts remembered)", warm),
                          (f"after replacing {len(changed)} files (those decoded again)", partly)):
        print(f"| {name} | {seconds:.3f} | {seconds / len(files) * 1000:.2f} ms |")
    print(f"first / second: {cold / warm:.0f}x")


if __name__ == "__main__":
    main()

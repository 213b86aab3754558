"""Tiny image data sets written with Pillow into tmp_path; every test gets its own decode cache."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEVISION_CACHE", str(tmp_path / "cache"))


def noise(size: int = 12, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A random image (noise compresses badly, so truncating its file really cuts pixel data)."""
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


def encoded(image: Image.Image, fmt: str) -> bytes:
    """The bytes of `image` saved as `fmt`."""
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def write_folder(root: Path, counts: dict[str, int], ext: str = "png", seed: int = 0) -> Path:
    """Write `counts[label]` small PNG images into root/<label>/ and return root."""
    for c, (label, count) in enumerate(counts.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            noise(seed=seed + 1000 * c + i).save(root / label / f"{i}.{ext}", "PNG")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An image folder with 10 'a', 20 'b' and 30 'c' images."""
    return write_folder(tmp_path / "images", {"a": 10, "b": 20, "c": 30})

"""Data sets the tests write in each study's own format: image folders, label tables, torchvision raw files."""
from __future__ import annotations

from pathlib import Path
import subprocess
from typing import Sequence

import numpy as np


def pattern_image(label_index: int, classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB image whose bright band's position tells its class: learnable in one epoch."""
    pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    band = slice(label_index * size // classes, (label_index + 1) * size // classes)
    pixels[band, :, :] = rng.integers(180, 255, pixels[band].shape, dtype=np.uint8)
    return pixels


def write_pattern_images(root: Path, per_class: int = 24, size: int = 24, classes: Sequence[str] = ("cat", "dog"),
                         seed: int = 0, fmt: str = "png") -> Path:
    """Write an image folder (root/<class>/<file>) of learnable pattern images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(pattern_image(c, len(classes), size, rng)).save(root / name / f"{name}_{i:03d}.{fmt}")
    return root


def write_label_table(folder: Path, grades: int = 5, per_grade: int = 8, size: int = 32) -> Path:
    """Write a Kaggle-retinopathy-like trainLabels.csv (names without '.jpeg', grades) and train/<name>.jpeg."""
    from PIL import Image

    rng = np.random.default_rng(2)
    (folder / "train").mkdir(parents=True)
    rows = []
    for i in range(grades * per_grade):
        grade, name = i % grades, f"{10 + i}_{'left' if i % 2 else 'right'}"
        Image.fromarray(pattern_image(grade, grades, size, rng)).save(folder / "train" / f"{name}.jpeg", format="JPEG")
        rows.append(f"{name},{grade}\n")
    table = folder / "trainLabels.csv"
    table.write_text("image,level\n" + "".join(rows))
    return table


def write_mnist_raw(root: Path, name: str = "FashionMNIST", per_class: int = 6) -> Path:
    """Write torchvision's raw idx files for an MNIST-like set (10 classes of 28x28 grey images) under root/name/raw."""
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(10), per_class)
    images = np.stack([pattern_image(int(y), 10, 28, rng)[:, :, 0] for y in labels])
    for part in ("train", "t10k"):
        for kind, array, magic in (("images-idx3", images, 0x803), ("labels-idx1", labels, 0x801)):
            header = np.array([magic, *array.shape], dtype=">i4").tobytes()
            (raw / f"{part}-{kind}-ubyte").write_bytes(header + array.astype(np.uint8).tobytes())
    return root


def wait_until_answering(url: str, server: "subprocess.Popen", log: Path, timeout: float, what: str) -> None:
    """Poll `url` until it answers 200; raise with the end of `log` if `server` exits or `timeout` s pass."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"{what} exited {server.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer {url} in {timeout:g} s: {log.read_text()[-3000:]}")
        time.sleep(0.3)


def stop_process_group(server: "subprocess.Popen") -> None:
    """SIGTERM a server started with start_new_session=True and its children; SIGKILL after 20 s."""
    import os
    import signal

    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)

"""`tunevision predict`: class and probability per image file, from a registered model (export.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

BATCH = 32


def predict_files(model: Any, paths: Sequence[str | Path]) -> list[tuple[str, str, float]]:
    """Return (path, class, probability) for each image file, decoded as training decoded it.

    `model` is the MLflow pyfunc of a registered model; its metadata gives the channels and the
    side to decode at, and the model itself applies its temperature and threshold.
    """
    import numpy as np

    from tunevision.data.decode import DecodeError, open_file, to_array
    from tunevision.errors import TunevisionError

    meta = model.metadata.metadata or {}
    if "image_sizes" not in meta or "channels" not in meta:
        raise TunevisionError(f"{model.metadata.model_uuid}: not a model registered by this tunevision (no image_sizes "
                              "and channels in its metadata)")
    size, channels = max(meta["image_sizes"]), int(meta["channels"])
    rows = []
    for start in range(0, len(paths), BATCH):
        chunk = [str(p) for p in paths[start : start + BATCH]]
        arrays = []
        for path in chunk:
            try:
                arrays.append(to_array(open_file(path), size, channels))
            except DecodeError as e:
                raise TunevisionError(f"{path}: {e}") from None
        answer = model.predict(np.stack(arrays))
        rows += [(path, str(c), float(p)) for path, c, p in zip(chunk, answer["class"], answer["probability"])]
    return rows

"""The registered model's predictor, and `tunevision predict`: class and probability per image."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn


class Predictor(nn.Module):
    """A trained network that takes images in [0, 1] (N x C x S x S) and returns class probabilities."""

    def __init__(self, network: nn.Module, classes: Sequence[str], image_size: int, channels: int) -> None:
        super().__init__()
        self.network = network
        self.classes = list(classes)
        self.image_size = int(image_size)
        self.channels = int(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(x), dim=1)


def predict_files(predictor: Predictor, paths: Sequence[str | Path]) -> list[tuple[str, str, float]]:
    """Return (path, class, probability) for each image file, decoded as training decoded it."""
    from tunevision.data.decode import DecodeError, open_file, to_array
    from tunevision.errors import TunevisionError

    predictor.eval()
    rows = []
    with torch.no_grad():
        for path in paths:
            try:
                array = to_array(open_file(path), predictor.image_size, predictor.channels)
            except DecodeError as e:
                raise TunevisionError(f"{path}: {e}") from None
            x = torch.from_numpy(array).permute(2, 0, 1).float().div(255).unsqueeze(0)
            probs = predictor(x)[0]
            index = int(probs.argmax())
            rows.append((str(path), predictor.classes[index], float(probs[index])))
    return rows

"""The registered model: trained networks as one torch.export program that takes raw images, and what MLflow says of it.

The program takes uint8 images N x H x W x C of any size (C = the channels the model was trained on) and
returns calibrated class probabilities N x K: resizing to each network's trained side (bilinear,
antialiased, as the training cache resized), scaling to [0, 1], the backbone's normalisation,
averaging an ensemble's probabilities and the temperature all happen inside it. It is saved with
`torch.export` (no pickled Python), and MLflow loads it through `served_model.py`, so serving needs
torch, numpy, pandas and mlflow, never tunevision.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tunevision.calibrate import combine

SERVED_MODEL_CODE = Path(__file__).with_name("served_model.py")  # MLflow's models-from-code file
PROGRAM_FILE = "model.pt2"


class ServedClassifier(nn.Module):
    """uint8 images N x H x W x C -> class probabilities N x K, from one network or the average of several."""

    def __init__(self, networks: Sequence[nn.Module], image_sizes: Sequence[int], temperature: float = 1.0) -> None:
        super().__init__()
        self.networks = nn.ModuleList(networks)
        self.image_sizes = [int(s) for s in image_sizes]
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        logits = [net(F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
                  for net, size in zip(self.networks, self.image_sizes)]
        return torch.softmax(combine(logits) / self.temperature, dim=1)


def export_program(module: ServedClassifier, channels: int, path: Path) -> Path:
    """Export `module` for any batch size and image size with torch.export; save it to `path` and return it."""
    from torch.export import Dim

    module = module.eval().requires_grad_(False)
    side = max(module.image_sizes)
    # Distinct example sizes, so that torch.export does not assume batch, height and width are equal.
    example = torch.randint(0, 256, (2, side + 3, side + 5, channels), dtype=torch.uint8)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: Dim.AUTO, 1: Dim.AUTO, 2: Dim.AUTO},))
    torch.export.save(program, str(path))
    return path


@dataclass(frozen=True)
class ModelCard:
    """What the registered model is: its classes and input, its operating point, where it came from."""

    classes: list[str]
    channels: int
    image_sizes: list[int]  # the side each network was trained at; any input size is resized inside
    temperature: float = 1.0
    threshold: float | None = None  # two classes: positive_class when its probability >= threshold; None: argmax
    positive_class: str | None = None
    trial_ids: list[str] | None = None  # the trials whose networks it holds (several: an ensemble)
    kind: str = "single"  # "single" or "ensemble"

    def model_config(self) -> dict[str, Any]:
        """What served_model.py needs to turn probabilities into a class; overridable at load time."""
        return {"classes": self.classes, "threshold": self.threshold, "positive_class": self.positive_class}

    def metadata(self) -> dict[str, Any]:
        """The MLmodel metadata: everything above plus a sentence on the input and output."""
        side = max(self.image_sizes)
        return {
            **asdict(self),
            "input": f"uint8 images N x H x W x {self.channels} (RGB order for 3), any H and W; resized inside to "
                     f"{side} x {side}",
            "output": "class, probability (of that class), probabilities (per class, calibrated)",
        }


def signature(card: ModelCard) -> Any:
    """The MLflow signature: an unnamed uint8 tensor N x H x W x C in, class and probabilities out."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Map, Schema, TensorSpec

    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, card.channels))])
    outputs = Schema([ColSpec("string", "class"), ColSpec("double", "probability"),
                      ColSpec(Map("double"), "probabilities")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def register(search_run: Any, module: ServedClassifier, card: ModelCard, name: str) -> str:
    """Export `module`, log it with `card` on the search run and register it as `name`; return the model URI."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        program = export_program(module, card.channels, Path(tmp) / PROGRAM_FILE)
        return search_run.log_model(program, card, name)

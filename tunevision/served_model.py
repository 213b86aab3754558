"""The registered model as MLflow loads it (models from code): torch, numpy, pandas and mlflow only, never tunevision.

MLflow copies this file into the logged model and runs it on `mlflow.pyfunc.load_model` and in
`mlflow models serve`; tunevision never imports it. `predict` takes uint8 images N x H x W x C (any
H and W) and returns one row per image: `class`, `probability` (of that class) and `probabilities`
(class -> calibrated probability). With two classes and a threshold, the positive class is chosen
when its probability reaches the threshold; otherwise the most probable class. The threshold and
classes come from the model's config: `mlflow.pyfunc.load_model(uri, model_config={"threshold": 0.3})`
moves the operating point without logging the model again.
"""
from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """The exported program (artifact `program`) plus the decision rule of its config."""

    def load_context(self, context: Any) -> None:
        config = context.model_config
        self.classes = [str(c) for c in config["classes"]]
        self.threshold = config.get("threshold")
        positive = config.get("positive_class")
        self.positive = self.classes.index(positive) if positive is not None else len(self.classes) - 1
        self.program = torch.export.load(context.artifacts["program"]).module()

    def predict(self, context, model_input, params=None):  # no hints: MLflow would read them as a schema
        images = torch.from_numpy(np.ascontiguousarray(model_input, dtype=np.uint8))
        with torch.no_grad():
            probs = self.program(images)
        if self.threshold is not None and len(self.classes) == 2:
            chosen = torch.where(probs[:, self.positive] >= self.threshold, self.positive, 1 - self.positive)
        else:
            chosen = probs.argmax(dim=1)
        rows = probs.double().numpy()
        return pd.DataFrame({
            "class": [self.classes[i] for i in chosen.tolist()],
            "probability": [float(rows[n, i]) for n, i in enumerate(chosen.tolist())],
            "probabilities": [dict(zip(self.classes, map(float, row))) for row in rows],
        })


mlflow.models.set_model(ImageClassifier())

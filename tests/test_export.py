"""The exported program: raw uint8 images of any size in, the networks' calibrated probabilities out.

Loading and serving the registered model where tunevision cannot be imported: tests/test_winner.py,
on the model a real search registers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tunevision.export import ModelCard, ServedClassifier, export_program, signature
from tunevision.models.network import create_network
from tunevision.space import TrialConfig


def test_exported_program_takes_uint8_images_of_any_size_and_batch_and_returns_the_ensembles_calibrated_probabilities(tmp_path):
    torch.manual_seed(0)
    networks = [create_network(TrialConfig.from_dict({"backbone": "cnn", "image_size": 16}), 3, 3).eval() for _ in range(2)]
    program = torch.export.load(str(export_program(ServedClassifier(networks, [16, 20], 2.0), 3, tmp_path / "m.pt2"))).module()
    for shape in [(1, 31, 17, 3), (4, 16, 16, 3)]:
        images = torch.randint(0, 256, shape, dtype=torch.uint8)
        x = images.permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            averaged = torch.stack([torch.softmax(net(F.interpolate(x, size=(s, s), mode="bilinear", antialias=True)), 1)
                                    for net, s in zip(networks, [16, 20])]).mean(0)
            probs = program(images)
        assert probs.shape == (shape[0], 3)
        assert torch.allclose(probs, torch.softmax(torch.log(averaged) / 2.0, 1), atol=1e-5)


def test_signature_says_uint8_images_of_any_size_with_the_training_channels():
    card = ModelCard(["a", "b"], 1, [28])
    assert signature(card).inputs.to_dict() == [{"type": "tensor", "tensor-spec": {"dtype": "uint8", "shape": (-1, -1, -1, 1)}}]
    assert [c["name"] for c in signature(card).outputs.to_dict()] == ["class", "probability", "probabilities"]
    assert "28 x 28" in card.metadata()["input"] and card.model_config() == {"classes": ["a", "b"], "threshold": None,
                                                                           "positive_class": None}

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_image

from tunevision.space import TrialConfig
from tunevision.models import create_network
from tunevision.models.registry import build_model

BELL_COTE, DOME, PALACE = 442, 538, 698


def _china_224() -> torch.Tensor:
    """scikit-learn's bundled 427x640 photo of a Chinese palace: shorter side to 224, centre crop, in [0, 1]."""
    image = torch.from_numpy(load_sample_image("china.jpg").copy()).permute(2, 0, 1).float() / 255
    image = F.interpolate(image[None], size=(224, round(224 * 640 / 427)), mode="bilinear", antialias=True)
    left = (image.shape[-1] - 224) // 2
    return image[..., left:left + 224]


def test_efficientnet_lite0_packaged_weights_recognise_a_palace():
    # The network with a frozen backbone gets the pretrained classifier as its head, so the check
    # covers the in-order weight loading, the classifier cut, pooling and the in-forward normalisation.
    full = build_model("efficientnet_lite0", "imagenet")
    net = create_network(TrialConfig.from_dict({"backbone": "efficientnet_lite0", "trainable_layers": 0}), num_classes=1000, channels=3)
    net.head[-1].load_state_dict(full.classifier.state_dict())
    with torch.no_grad():
        top3 = net.eval()(_china_224()).topk(3).indices[0].tolist()
    assert {BELL_COTE, DOME, PALACE} & set(top3), top3
    assert top3[0] == PALACE

"""The augment dict becomes v2 transforms; unknown keys and bad values are one-line errors."""
from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from tunevision.data.augment import transform
from tunevision.errors import TunevisionError


def test_unknown_key_lists_known_keys():
    with pytest.raises(TunevisionError, match=r"unknown augment key\(s\) 'flip' \(known: hflip, vflip, rotation, shift, shear, zoom, color_jitter\)"):
        transform({"flip": True})


def test_bad_value_names_the_key():
    with pytest.raises(TunevisionError, match=r"zoom: 2 is not a fraction"):
        transform({"zoom": 2})


def test_affine_keys_make_one_random_affine():
    steps = transform({"hflip": True, "rotation": 15, "shift": 0.1, "shear": 0.2, "zoom": 0.2, "color_jitter": 0.3}).transforms
    assert [type(s) for s in steps] == [v2.RandomHorizontalFlip, v2.RandomAffine, v2.ColorJitter]
    affine = steps[1]
    assert affine.degrees == [-15.0, 15.0] and affine.scale == (0.8, 1.2) and affine.translate == (0.1, 0.1)
    assert affine.shear[1] == pytest.approx(11.31, abs=0.01)  # Keras factor 0.2 = atan(0.2) degrees


@pytest.mark.parametrize("spec", [None, {}, {"hflip": False, "rotation": 0}])
def test_nothing_switched_on_means_no_transform(spec):
    assert transform(spec) is None


@pytest.mark.parametrize("channels", [1, 3])
def test_transform_keeps_uint8_shape(channels):
    image = torch.randint(0, 256, (channels, 16, 16), dtype=torch.uint8)
    out = transform({"vflip": True, "rotation": 30, "zoom": 0.1, "color_jitter": 0.5})(image)
    assert out.shape == image.shape and out.dtype == torch.uint8

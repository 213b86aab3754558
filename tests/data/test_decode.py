"""Decoding converts every pixel mode the same way and names what is wrong with a bad file."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import encoded, noise
from PIL import Image

from tunevision.data.decode import DecodeError, load, open_file, to_array, to_channels


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_reported_as_truncated(tmp_path, fmt):
    data = encoded(noise(64), fmt)
    (tmp_path / "x.img").write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="truncated"):
        load(open_file(tmp_path / "x.img"))


def test_empty_file_and_random_bytes_are_named(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(DecodeError, match="empty file"):
        open_file(tmp_path / "empty.jpg")
    with pytest.raises(DecodeError, match="not an image"):
        open_file(tmp_path / "noise.jpg")


def test_png_data_in_a_jpeg_named_file_decodes(tmp_path):
    (tmp_path / "x.jpeg").write_bytes(encoded(noise(8), "PNG"))
    assert to_channels(open_file(tmp_path / "x.jpeg"), 3).size == (8, 8)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("L", (2, 2), 200), (200, 200, 200)),
        (Image.new("1", (2, 2), 1), (255, 255, 255)),
        (Image.new("RGBA", (2, 2), (255, 0, 0, 0)), (255, 255, 255)),  # fully transparent -> white
        (Image.new("RGBA", (2, 2), (255, 0, 0, 255)), (255, 0, 0)),
        (Image.new("LA", (2, 2), (0, 0)), (255, 255, 255)),
        (Image.new("I;16", (2, 2), 65535), (255, 255, 255)),
        (Image.new("I;16", (2, 2), 257 * 100), (100, 100, 100)),
        (Image.new("I", (2, 2), 257 * 10), (10, 10, 10)),
        (Image.new("CMYK", (2, 2), (0, 0, 0, 0)), (255, 255, 255)),
    ],
    ids=["L", "1", "RGBA-clear", "RGBA-opaque", "LA", "I;16-max", "I;16-mid", "I", "CMYK"],
)
def test_every_mode_becomes_rgb(image, expected):
    assert to_channels(image, 3).getpixel((0, 0)) == expected


def test_palette_transparency_is_white_and_grey_output_has_one_channel():
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.info["transparency"] = 0
    assert to_channels(palette, 3).getpixel((0, 0)) == (255, 255, 255)
    assert to_channels(Image.new("RGB", (2, 2), (255, 0, 0)), 1).mode == "L"


def test_sixteen_bit_png_file_is_scaled_to_eight_bits(tmp_path):
    Image.fromarray(np.full((3, 3), 65535, np.uint16)).save(tmp_path / "deep.png")
    assert to_array(open_file(tmp_path / "deep.png"), 3, 1).max() == 255


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (4, 2))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "turned.jpg", exif=exif)
    assert to_channels(open_file(tmp_path / "turned.jpg"), 3).size == (2, 4)


def test_to_array_squashes_to_square_uint8():
    array = to_array(Image.new("RGB", (30, 10), (10, 20, 30)), 8, 3)
    assert array.shape == (8, 8, 3) and array.dtype == np.uint8 and tuple(array[0, 0]) == (10, 20, 30)

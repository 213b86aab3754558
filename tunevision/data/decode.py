"""Decoding: turn any image file Pillow can read into an 8-bit grey or RGB image, the same way every time.

The file extension is never trusted: Pillow sniffs the format from the bytes, so a `.jpeg` holding PNG
data decodes fine. Every pixel mode is first normalised to "L", "RGB" or "RGBA" by the converter
registered for it (`MODES`), transparency is composited on white, and the result is converted to the
source's channel count (1 -> "L", 3 -> "RGB").

Example::

    >>> from PIL import Image
    >>> to_channels(Image.new("I;16", (4, 4), 65535), 3).getpixel((0, 0))
    (255, 255, 255)
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class DecodeError(Exception):
    """A sample's file cannot be used; the message is the short reason shown in the data report."""


def open_file(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file lazily, raising DecodeError for a missing, empty or non-image file."""
    try:
        if os.path.getsize(path) == 0:
            raise DecodeError("empty file")
        return Image.open(path)
    except FileNotFoundError:
        raise DecodeError("missing file") from None
    except UnidentifiedImageError:
        raise DecodeError("not an image (Pillow cannot identify the data)") from None


def load(image: Image.Image) -> Image.Image:
    """Fully decode an opened image, raising DecodeError with a short reason when the data is damaged."""
    try:
        image.load()
    except DecodeError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, EOFError, ValueError... for bad data
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = "truncated file" if "truncated" in message.lower() or isinstance(exc, EOFError) else "corrupt data"
        raise DecodeError(f"{reason} ({message[:120]})") from None
    return image


def _on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _sixteen_bit(image: Image.Image) -> Image.Image:
    # 16-bit samples (I;16*, and I as Pillow opens 16-bit PNG/TIFF) are scaled 0..65535 -> 0..255.
    values = np.asarray(image.convert("I") if image.mode != "I" else image, dtype=np.int64)
    return Image.fromarray((np.clip(values, 0, 65535) / 257.0).round().astype(np.uint8), "L")


def _float(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(values, 0, 255).round().astype(np.uint8), "L")


def _palette(image: Image.Image) -> Image.Image:
    return _on_white(image) if "transparency" in image.info else image.convert("RGB")


MODES: dict[str, Callable[[Image.Image], Image.Image]] = {
    "1": lambda image: image.convert("L"),
    "L": lambda image: image,
    "RGB": lambda image: image,
    "P": _palette,
    "PA": _on_white,
    "LA": _on_white,
    "La": _on_white,
    "RGBA": _on_white,
    "RGBa": _on_white,
    "RGBX": lambda image: image.convert("RGB"),
    "CMYK": lambda image: image.convert("RGB"),
    "YCbCr": lambda image: image.convert("RGB"),
    "LAB": lambda image: image.convert("RGB"),
    "HSV": lambda image: image.convert("RGB"),
    "I": _sixteen_bit,
    "I;16": _sixteen_bit,
    "I;16L": _sixteen_bit,
    "I;16B": _sixteen_bit,
    "I;16N": _sixteen_bit,
    "F": _float,
}
CHANNEL_MODES = {1: "L", 3: "RGB"}


def to_channels(image: Image.Image, channels: int) -> Image.Image:
    """Decode `image` (EXIF orientation applied) and convert it to `channels` (1 or 3) 8-bit channels."""
    load(image)
    try:
        convert = MODES[image.mode]
    except KeyError:
        raise DecodeError(f"unsupported pixel mode {image.mode!r}") from None
    image = convert(ImageOps.exif_transpose(image) or image)
    return image.convert(CHANNEL_MODES[channels])


def to_array(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """Decode, convert and squash `image` to size x size (bilinear, antialiased): uint8 array H x W x C."""
    if image.format == "JPEG":
        image.draft(None, (size, size))  # libjpeg decodes at a reduced scale still >= size; no-op once loaded
    image = to_channels(image, channels).resize((size, size), Image.Resampling.BILINEAR)
    array = np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on read-only arrays
    return array[:, :, None] if array.ndim == 2 else array

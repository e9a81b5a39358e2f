"""Images are sent as stored unless the user asks otherwise; bad bytes raise ImageError."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from harness.data.images import ImageError, encode_image


def _bytes(fmt: str, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), np.uint8)).save(
        buf, format=fmt)
    return buf.getvalue()


def _sent(enc) -> bytes:
    """The image bytes a request carries, from its data URL."""
    return base64.b64decode(enc.data_url.split(",", 1)[1])


def test_png_and_jpeg_pass_through_untouched():
    for fmt, mime in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
        raw = _bytes(fmt)
        enc = encode_image(raw)
        assert enc.mime == mime and _sent(enc) == raw and not enc.resized
        assert enc.data_url.startswith(f"data:{mime};base64,")
        assert (enc.width, enc.height) == (40, 30)


def test_other_formats_become_png_and_format_can_be_forced():
    enc = encode_image(_bytes("TIFF"))
    assert enc.mime == "image/png" and Image.open(io.BytesIO(_sent(enc))).format == "PNG"
    assert encode_image(_bytes("PNG"), image_format="jpeg").mime == "image/jpeg"


def test_max_pixels_downscales_only_when_asked():
    enc = encode_image(_bytes("PNG", (400, 300)), max_pixels=100 * 75)
    assert enc.resized and enc.width * enc.height <= 100 * 75 and enc.width == 100


@pytest.mark.parametrize("raw", [b"", None, b"\x89PNG\r\n\x1a\n garbage", b"hello"])
def test_corrupt_images_raise(raw):
    with pytest.raises(ImageError):
        encode_image(raw)

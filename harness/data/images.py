"""Encode an image once into the data URL every question about it reuses.

PNG and JPEG bytes are sent as stored; other formats are converted to PNG. Images whose long
side is above `max_side` (default 2048 px, the most any supported provider looks at: OpenAI's
`detail=high`) are downscaled to it, as the provider would do anyway; `max_pixels` downscales
further only when the user asks. The record says when an image was resized, and from what size.
A decompression bomb (Pillow's limit, ~179 megapixels) is refused like any unreadable image.
"""
from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass

from PIL import Image as PILImage

FORMATS = ("auto", "png", "jpeg")
MAX_SIDE = 2048
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg"}


class ImageError(ValueError):
    """The image bytes are missing, corrupt or cannot be converted."""


@dataclass(frozen=True)
class EncodedImage:
    """An image as sent (after any resize or re-encode), with what the manifest records of it."""
    data_url: str
    mime: str
    sha256: str  # of the bytes sent
    width: int
    height: int
    resized: bool
    url_sha256: str  # of `data_url`: what the response cache's key holds for the image
    original_size: tuple[int, int] | None = None  # (width, height) as stored, when resized

    def describe(self) -> dict:
        """What the per-sample log records about the image (never the base64 payload)."""
        out = {"mime": self.mime, "sha256": self.sha256, "width": self.width,
               "height": self.height, "resized": self.resized}
        if self.original_size:
            out["original_size"] = list(self.original_size)
        return out


def sent_size(width: int, height: int, max_pixels: int | None,
              max_side: int | None = MAX_SIDE) -> tuple[int, int]:
    """The size an image is sent at: as stored, or shrunk to fit `max_pixels` (when the user
    asked) and the long-side ceiling `max_side`."""
    scale = 1.0
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
    if max_pixels is not None and width * height * scale * scale > max_pixels:
        scale = (max_pixels / (width * height)) ** 0.5
    if scale >= 1.0:
        return width, height
    return max(1, int(width * scale)), max(1, int(height * scale))


def image_size(raw: bytes | None) -> tuple[int, int]:
    """Width and height from the image's header alone (no pixels decoded), for cost estimates."""
    if not raw:
        raise ImageError("image bytes are missing or empty")
    try:
        with PILImage.open(io.BytesIO(raw)) as img:
            return img.size
    except Exception as exc:  # PIL raises many types for corrupt data
        raise ImageError(f"cannot read image: {exc}") from exc


def encode_image(raw: bytes | None, *, image_format: str = "auto",
                 max_pixels: int | None = None, max_side: int | None = MAX_SIDE) -> EncodedImage:
    """Validate and encode image bytes as a base64 data URL."""
    if not raw:
        raise ImageError("image bytes are missing or empty")
    if image_format not in FORMATS:
        raise ImageError(f"unknown image format {image_format!r}; choose from {FORMATS}")
    try:
        with PILImage.open(io.BytesIO(raw)) as probe:
            probe.verify()  # checks structure without a full decode
        img: PILImage.Image = PILImage.open(io.BytesIO(raw))
        src_format = img.format or ""
        width, height = img.size
        target = src_format if image_format == "auto" else image_format.upper()
        if target not in _MIME:
            target = "PNG"
        stored = (width, height)
        size = sent_size(width, height, max_pixels, max_side)
        too_big = size != stored
        if target == src_format and not too_big:
            payload = raw
        else:
            img.load()
            if too_big:
                img = img.resize(size, PILImage.Resampling.LANCZOS, reducing_gap=3.0)
            if target == "JPEG" and img.mode not in ("RGB", "L"):
                img = img.convert("RGB")
            buf = io.BytesIO()
            img.save(buf, format=target, **({"quality": 95} if target == "JPEG" else {}))
            payload = buf.getvalue()
            width, height = img.size
    except ImageError:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data
        raise ImageError(f"cannot read image: {exc}") from exc
    mime = _MIME[target]
    data_url = f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"
    return EncodedImage(
        data_url=data_url,
        mime=mime,
        sha256=hashlib.sha256(payload).hexdigest(),
        width=width,
        height=height,
        resized=too_big,
        url_sha256=hashlib.sha256(data_url.encode("ascii")).hexdigest(),
        original_size=stored if too_big else None,
    )

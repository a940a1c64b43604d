"""Classic image codecs through Pillow: JPEG, WebP, AVIF and JPEG XL, as bytes in and 8-bit RGB out.

Each codec is a quality-controlled encoder (``quality`` in the codec's own scale, 0..100 for all four) and a
decoder back to an RGB float tensor in [0, 1] (3 x H x W, 8-bit levels). The default sweeps span about
0.05..1 bpp on Kodak (768 x 512 photographs).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import features

from ..errors import LatentkitError
from .sweeps import CLASSIC_QUALITIES


@dataclass(frozen=True)
class ClassicCodec:
    """A Pillow format with fixed encoder options; ``qualities`` is the default sweep (low to high rate)."""

    name: str
    pillow_format: str
    qualities: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def encode(self, rgb: torch.Tensor, quality: int) -> bytes:
        """Encode a 3 x H x W image in [0, 1] (rounded to 8 bits) at `quality`; returns the whole file."""
        _require(self)
        buf = io.BytesIO()
        to_pil_rgb(rgb).save(buf, format=self.pillow_format, quality=int(quality), **self.options)
        return buf.getvalue()

    def decode(self, data: bytes) -> torch.Tensor:
        """Decode a file made by :meth:`encode` to a 3 x H x W float tensor in [0, 1]."""
        _require(self)
        with PILImage.open(io.BytesIO(data)) as im:
            a = np.asarray(im.convert("RGB"))
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float() / 255.0


CLASSIC: dict[str, ClassicCodec] = {
    c.name: c for c in (
        ClassicCodec("jpeg", "JPEG", CLASSIC_QUALITIES["jpeg"], {"optimize": True}),
        ClassicCodec("webp", "WEBP", CLASSIC_QUALITIES["webp"], {"method": 6}),
        ClassicCodec("avif", "AVIF", CLASSIC_QUALITIES["avif"], {"speed": 6}),
        ClassicCodec("jxl", "JXL", CLASSIC_QUALITIES["jxl"], {"effort": 7}),
    )
}


def to_pil_rgb(rgb: torch.Tensor) -> PILImage.Image:
    """A 3 x H x W float tensor in [0, 1] as an 8-bit RGB Pillow image (rounded)."""
    a = (rgb.detach().float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0) * 255.0).round().astype(np.uint8)
    return PILImage.fromarray(a, mode="RGB")


def _require(codec: ClassicCodec) -> None:
    if codec.pillow_format == "JXL":
        try:
            import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)
        except ImportError:
            raise LatentkitError("the jxl codec needs pillow-jxl-plugin: pip install pillow-jxl-plugin") from None
    elif codec.pillow_format in ("WEBP", "AVIF") and not features.check(codec.pillow_format.lower()):
        raise LatentkitError(f"this Pillow build has no {codec.name} support: install Pillow >= 11.3 wheels")

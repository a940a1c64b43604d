"""Reading one source image at the size it is encoded at, in DataLoader workers (off the main thread).

Decoding is the usual bottleneck of a dataset encode, so each file is decoded no larger than it needs to be:
JPEGs are decoded at 1/2, 1/4 or 1/8 scale when the output is that much smaller (libjpeg's DCT scaling, as
Pillow's ``thumbnail`` does, keeping at least twice the output's pixels), and the crop and resize are one Pillow
resample (Lanczos) straight from the source box. Modes, EXIF orientation, ICC, 16-bit grayscale and CMYK are
handled as :func:`latentkit.io.from_pil` does; alpha is dropped (the colour is encoded, as elsewhere in latentkit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from PIL import Image as PILImage
from PIL import ImageOps

from ..io import _open_unguarded, from_pil
from .geometry import Box, Resize, Size

#: EXIF orientations that swap width and height
_TRANSPOSED = (5, 6, 7, 8)
#: decode JPEGs at a reduced scale only down to this many times the output size (Pillow's thumbnail default)
REDUCING_GAP = 2.0


@dataclass
class Loaded:
    """One item as a worker hands it over: ``pixels`` float32 3 x H x W in [0, 1] (None when it failed, then
    ``error`` says why); ``size``: the source's width x height (pixels, after EXIF orientation); ``crop``: the box
    (left, top, right, bottom, source pixels) that was scaled to ``out`` (width x height)."""

    shard: int
    index: int
    path: str
    pixels: torch.Tensor | None = None
    size: Size | None = None
    crop: Box | None = None
    out: Size | None = None
    error: str | None = field(default=None)


def load_resized(path: str, resize: Resize, max_pixels: int | None = None) -> tuple[torch.Tensor, Size, Box, Size]:
    """The image at `path` cropped and resized as `resize` plans: (pixels 3 x H x W float32 in [0, 1], source
    size, crop box, output size). Raises on unreadable files (any exception: the caller records it)."""
    with _open_unguarded(path) as im:
        if max_pixels is not None and im.width * im.height > max_pixels:
            raise ValueError(f"{im.width}x{im.height} = {im.width * im.height} pixels, more than --max-pixels "
                             f"{max_pixels}")
        transposed = im.getexif().get(0x0112, 1) in _TRANSPOSED
        w0, h0 = (im.height, im.width) if transposed else im.size
        out, box = resize.plan(w0, h0)
        k = max(out[0] / (box[2] - box[0]), out[1] / (box[3] - box[1]))  # output pixels per source pixel
        s = 1.0  # the decoder's scale-down (1 unless drafted), the same on both axes
        if k * REDUCING_GAP < 1:
            stored = im.size
            drafted = im.draft(None, (math.ceil(stored[0] * k * REDUCING_GAP), math.ceil(stored[1] * k * REDUCING_GAP)))
            if drafted is not None:
                s = stored[0] / drafted[1][2]
        im.load()
        im = ImageOps.exif_transpose(im)
        im = _resizable(im)
        scaled = im.resize(out, PILImage.Resampling.LANCZOS, box=tuple(c / s for c in box))
    return from_pil(scaled).rgb, (w0, h0), box, out


def _resizable(im: PILImage.Image) -> PILImage.Image:
    """`im` in a mode Pillow resamples with every filter, keeping what :func:`latentkit.io.from_pil` reads."""
    if im.mode in ("P", "PA"):
        return im.convert("RGBA" if im.has_transparency_data else "RGB")
    if im.mode == "1":
        return im.convert("L")
    if im.mode.startswith("I;16"):
        return im.convert("I")
    return im


class SourceImages(torch.utils.data.Dataset):
    """The items a process encodes, as a Dataset for a :class:`torch.utils.data.DataLoader` (workers decode);
    ``items``: (shard, item number, path). Items that cannot be read come back with ``error`` set."""

    def __init__(self, items: list[tuple[int, int, str]], resize: Resize, max_pixels: int | None = None):
        self.items, self.resize, self.max_pixels = items, resize, max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Loaded:
        shard, index, path = self.items[i]
        try:
            pixels, size, crop, out = load_resized(path, self.resize, self.max_pixels)
        except FileNotFoundError:
            return Loaded(shard, index, path, error="file does not exist")
        except Exception as e:  # noqa: BLE001 - an unreadable file is listed in failed.txt, the job goes on
            text = str(e).splitlines()[0] if str(e).strip() else ""
            return Loaded(shard, index, path, error=f"{type(e).__name__}: {text}" if text else type(e).__name__)
        return Loaded(shard, index, path, pixels, size, crop, out)


def collate(batch: list[Loaded]) -> list[Loaded]:
    """The DataLoader's collate: items stay a list (sizes may differ; the encoder groups them)."""
    return batch

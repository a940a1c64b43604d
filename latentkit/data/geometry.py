"""The size every image is encoded at, and the crop that gets it there (``--size``/``--resize``/``--buckets``).

Three modes; each gives an output size in pixels (sides multiples of the model's downsampling factor, so latents
are never padded) and a crop box in the source's pixels (after EXIF orientation):

- ``center-crop`` (``--size WxH``): scale the image to cover W x H, cut the centre. One size for all.
- ``short-side`` (``--size S --resize short-side``): scale the short side to S, keep the aspect ratio, and cut
  the long side's centre down to a multiple of the downsampling factor. As many sizes as aspect ratios.
- ``buckets`` (``--buckets S`` or ``--buckets WxH,WxH,...``): the bucket whose aspect ratio is nearest the
  image's (in log ratio), then as ``center-crop`` to it. ``--buckets S`` makes the sizes of about S x S pixels
  with sides in steps of S / 8 and aspect ratios up to 4:1.

Images smaller than the output are scaled up. Nothing here imports torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import LatentkitError

#: resize modes of --resize (buckets are chosen with --buckets)
RESIZE_MODES = ("center-crop", "short-side")
#: the output size when neither --size nor --buckets is given (pixels)
DEFAULT_SIZE = 256
#: the widest aspect ratio (long side / short side) of generated buckets
MAX_BUCKET_ASPECT = 4.0

Size = tuple[int, int]  # (width, height) in pixels
Box = tuple[float, float, float, float]  # (left, top, right, bottom) in source pixels


def parse_size(text: str, what: str = "--size") -> Size:
    """``"256"`` -> (256, 256), ``"512x384"`` -> (512, 384) (width x height, pixels, each >= 1)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if not m or int(m[1]) < 1 or (m[2] is not None and int(m[2]) < 1):
        raise LatentkitError(f"{what} wants S or WxH in pixels (e.g. 256 or 512x384), got '{text}'")
    w = int(m[1])
    return w, int(m[2]) if m[2] is not None else w


def make_buckets(side: int, multiple: int = 8, max_aspect: float = MAX_BUCKET_ASPECT) -> list[Size]:
    """Bucket sizes of at most `side` x `side` pixels each, sides in steps of about side / 8 (a multiple of
    `multiple`), aspect ratios up to `max_aspect`; both orientations, sorted by aspect ratio (w / h)."""
    step = max(multiple, round(side / 8 / multiple) * multiple)
    area, found = side * side, set()
    for w in range(step, int(side * math.sqrt(max_aspect)) + step, step):
        h = area // w // step * step
        if h >= step and max(w / h, h / w) <= max_aspect:
            found |= {(w, h), (h, w)}
    return sorted(found, key=lambda s: (s[0] / s[1], s[0]))


def cover_box(width: int, height: int, out: Size) -> Box:
    """The centred source box (pixels) that, scaled to `out`, covers it exactly: the largest box of `out`'s
    aspect ratio inside the width x height image."""
    scale = max(out[0] / width, out[1] / height)
    bw, bh = out[0] / scale, out[1] / scale
    left, top = (width - bw) / 2, (height - bh) / 2
    return left, top, left + bw, top + bh


@dataclass(frozen=True)
class Resize:
    """How every image is brought to the size it is encoded at. ``mode``: ``center-crop``, ``short-side`` or
    ``buckets``; ``sizes``: the output size (center-crop), the short side as (S, S) (short-side), or the buckets;
    ``multiple``: output sides are multiples of it (the model's downsampling factor)."""

    mode: str
    sizes: tuple[Size, ...]
    multiple: int = 8

    def plan(self, width: int, height: int) -> tuple[Size, Box]:
        """For a width x height source (pixels, >= 1): the output size and the crop box in source pixels."""
        if self.mode == "center-crop":
            out = self.sizes[0]
        elif self.mode == "short-side":
            s, f = self.sizes[0][0], self.multiple
            long = max(s, int(max(width, height) * s / min(width, height)) // f * f)
            out = (long, s) if width >= height else (s, long)
        else:
            aspect = math.log(width / height)
            out = min(self.sizes, key=lambda b: abs(math.log(b[0] / b[1]) - aspect))
        return out, cover_box(width, height, out)

    def to_json(self) -> dict:
        """The settings as index.json records them."""
        return {"mode": self.mode, "sizes": [list(s) for s in self.sizes], "multiple": self.multiple}


def make_resize(size: str | None, resize: str = "center-crop", buckets: str | None = None,
                multiple: int = 1) -> Resize:
    """The :class:`Resize` that --size, --resize and --buckets ask for, checked (sides multiples of `multiple`;
    call with 1 to check the syntax before the model is known). Raises :class:`LatentkitError`."""
    if resize not in RESIZE_MODES:
        raise LatentkitError(f"--resize must be one of {', '.join(RESIZE_MODES)}, got '{resize}'")
    if buckets is not None:
        if size is not None or resize != "center-crop":
            raise LatentkitError("--buckets chooses the sizes itself: give it without --size and --resize")
        if re.fullmatch(r"\s*\d+\s*", buckets):
            side = parse_size(buckets, "--buckets")[0]
            _check_multiple((side, side), multiple, "--buckets")
            sizes = make_buckets(side, max(multiple, 1))
        else:
            sizes = [parse_size(b, "--buckets") for b in buckets.split(",")]
            if not all("x" in b.lower() for b in buckets.split(",")):
                raise LatentkitError(f"--buckets wants S or a list WxH,WxH,..., got '{buckets}'")
            for s in sizes:
                _check_multiple(s, multiple, "--buckets")
        return Resize("buckets", tuple(dict.fromkeys(sizes)), multiple)
    out = parse_size(size if size is not None else str(DEFAULT_SIZE))
    if resize == "short-side":
        if out[0] != out[1]:
            raise LatentkitError(f"--resize short-side takes one side length (--size S), got '{size}'")
        _check_multiple(out, multiple, "--size")
        return Resize("short-side", (out,), multiple)
    _check_multiple(out, multiple, "--size")
    return Resize("center-crop", (out,), multiple)


def _check_multiple(size: Size, multiple: int, what: str) -> None:
    if size[0] % multiple or size[1] % multiple:
        raise LatentkitError(f"{what} {size[0]}x{size[1]}: sides must be multiples of the model's downsampling "
                             f"factor {multiple}")

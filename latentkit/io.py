"""Reading and writing image files.

What comes in: any file Pillow reads (RGB, RGBA, L, LA, P, I;16 / 16-bit PNG, CMYK, ...), with EXIF
orientation applied. In memory an :class:`Image` holds the colour as a float tensor 3 x H x W in [0, 1]
(grayscale replicated to 3 channels, palette and CMYK converted to RGB), plus what is needed to write the
image back the way it came:

- alpha: kept exactly as integers (uint8, or uint16 for 16-bit sources), H x W, reattached on write;
- grayscale sources (L, LA, I;16) are written back as grayscale: the mean of the 3 decoded channels;
- 16-bit sources keep 16-bit precision in [0, 1] and are written back as 16-bit PNG;
- palette (P) images come back as RGB or RGBA; CMYK comes back as RGB;
- an ICC profile is carried through unchanged.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from .errors import LatentkitError

#: Pillow's own decompression-bomb limit, overridable with --max-pixels.
DEFAULT_MAX_PIXELS = PILImage.MAX_IMAGE_PIXELS


@dataclass
class Image:
    """An image in memory. ``rgb``: float32 3 x H x W in [0, 1]."""

    rgb: torch.Tensor
    alpha: np.ndarray | None = None  # H x W, uint8 or uint16, exact
    grayscale: bool = False
    bit_depth: int = 8  # 8 or 16
    icc_profile: bytes | None = None

    @property
    def height(self) -> int:
        return int(self.rgb.shape[-2])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[-1])

    def batch(self) -> torch.Tensor:
        """The colour as a 1 x 3 x H x W batch in [0, 1]."""
        return self.rgb.unsqueeze(0)


def from_pil(im: PILImage.Image) -> Image:
    """Convert a Pillow image (any mode) to an :class:`Image`; EXIF orientation is applied."""
    im = ImageOps.exif_transpose(im)
    icc = im.info.get("icc_profile") or None
    mode = im.mode
    alpha = None
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        a = np.asarray(im, dtype=np.float64)
        a = np.clip(a, 0, 65535) / 65535.0
        rgb = torch.from_numpy(np.repeat(a[None], 3, 0).astype(np.float32))
        return Image(rgb, None, grayscale=True, bit_depth=16, icc_profile=icc)
    if mode in ("L", "LA", "1"):
        a = np.asarray(im.convert("LA"))
        alpha = a[..., 1].copy() if mode == "LA" else None
        g = a[..., 0].astype(np.float32) / 255.0
        return Image(torch.from_numpy(np.repeat(g[None], 3, 0)), alpha, grayscale=True, icc_profile=icc)
    if mode in ("RGBA", "RGBa", "PA"):
        a = np.asarray(im.convert("RGBA"))
        alpha = a[..., 3].copy()
        rgb = a[..., :3]
    elif mode in ("RGB;16", "RGBA;16"):
        raise LatentkitError(f"unsupported image mode {mode}")
    else:  # RGB, CMYK, YCbCr, LAB, HSV, F, ...
        if mode == "CMYK":
            icc = None  # the CMYK profile does not describe the RGB we produce
        rgb = np.asarray(im.convert("RGB"))
    t = torch.from_numpy(np.ascontiguousarray(rgb).transpose(2, 0, 1).astype(np.float32) / 255.0)
    return Image(t, alpha, grayscale=False, icc_profile=icc)


def read_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image:
    """Read an image file. Raises :class:`LatentkitError` for missing, unreadable or oversized files."""
    p = Path(path)
    if not p.is_file():
        raise LatentkitError(f"input file {p} does not exist")
    old = PILImage.MAX_IMAGE_PIXELS
    PILImage.MAX_IMAGE_PIXELS = max_pixels
    try:
        with PILImage.open(p) as im:
            im.load()
            return from_pil(im)
    except PILImage.DecompressionBombError:
        raise LatentkitError(f"{p} has more pixels than the limit of {max_pixels} (a decompression-bomb guard); "
                             "pass --max-pixels N to allow it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise LatentkitError(f"cannot read image {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None
    finally:
        PILImage.MAX_IMAGE_PIXELS = old


def to_pil(image: Image) -> PILImage.Image:
    """Convert back to a Pillow image, restoring grayscale, 16-bit and alpha as documented above."""
    rgb = image.rgb.detach().float().clamp(0, 1).cpu()
    if image.grayscale and image.bit_depth == 16:
        g = (rgb.mean(0).numpy() * 65535.0).round().astype(np.uint16)
        im = PILImage.fromarray(g, mode="I;16")
    elif image.grayscale:
        g = (rgb.mean(0).numpy() * 255.0).round().astype(np.uint8)
        im = PILImage.fromarray(g, mode="L")
        if image.alpha is not None:
            im = PILImage.merge("LA", [im, PILImage.fromarray(image.alpha.astype(np.uint8), mode="L")])
    else:
        a = (rgb.numpy().transpose(1, 2, 0) * 255.0).round().astype(np.uint8)
        im = PILImage.fromarray(a, mode="RGB")
        if image.alpha is not None:
            im.putalpha(PILImage.fromarray(image.alpha.astype(np.uint8), mode="L"))
    if image.icc_profile:
        im.info["icc_profile"] = image.icc_profile
    return im


def atomic_write(path: str | os.PathLike, write, inputs: tuple = ()) -> Path:
    """Call ``write(tmp_path)`` then rename tmp_path onto `path`. Refuses to overwrite any of `inputs`."""
    out = Path(path)
    for i in inputs:
        if Path(i).exists() and out.exists() and os.path.samefile(i, out):
            raise LatentkitError(f"refusing to overwrite the input file {out}; choose another output path")
    if out.parent and not out.parent.is_dir():
        raise LatentkitError(f"output folder {out.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp" + out.suffix, dir=out.parent or ".")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def write_image(image: Image, path: str | os.PathLike, inputs: tuple = ()) -> Path:
    """Write atomically; format from the suffix (PNG keeps alpha, 16-bit and ICC). Never overwrites `inputs`."""
    out = Path(path)
    fmt = PILImage.registered_extensions().get(out.suffix.lower())
    if fmt is None:
        raise LatentkitError(f"unknown output image type '{out.suffix}' for {out}: use .png, .jpg, .webp, ...")
    im = to_pil(image)

    def write(tmp: Path) -> None:
        kw = {"icc_profile": image.icc_profile} if image.icc_profile else {}
        pim = im
        if fmt == "JPEG" and im.mode in ("RGBA", "LA", "I;16"):
            pim = im.convert("RGB" if im.mode == "RGBA" else "L")
        pim.save(tmp, format=fmt, **kw)

    return atomic_write(out, write, inputs)

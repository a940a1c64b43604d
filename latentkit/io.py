"""Reading and writing image files.

What comes in: any file Pillow reads (RGB, RGBA, L, LA, P, I;16 / 16-bit PNG, CMYK, ...), with EXIF
orientation applied. In memory an :class:`Image` holds the colour as a float32 tensor 3 x H x W in [0, 1]
(grayscale replicated to 3 channels, palette and CMYK converted to RGB), plus what is needed to write the
image back the way it came:

- alpha (RGBA, LA, PA, P with transparency): kept exactly as uint8 H x W, never sent through the model,
  reattached on write (dropped only by formats without alpha, e.g. JPEG);
- grayscale sources (1, L, LA, I;16) are written back as grayscale: the mean of the 3 decoded channels;
- 16-bit grayscale sources (I;16, 16-bit grayscale PNG/TIFF) keep 16-bit precision in [0, 1] and are written
  back as 16-bit to PNG/TIFF (8-bit to other formats). 16-bit *colour* PNGs are read by Pillow at 8 bits;
- palette (P) images come back as RGB, or RGBA when the palette has transparency;
- CMYK is converted to sRGB through its embedded ICC profile when there is one, and comes back as RGB;
- any other ICC profile is carried through unchanged.

Sizes are kept as they are (1 x 1 upwards); padding to the model's multiple of 8 happens in
:func:`latentkit.model.encode` and the crop back in :func:`latentkit.model.reconstruct`.
"""

from __future__ import annotations

import io as _io
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps, UnidentifiedImageError

from .errors import LatentkitError

if TYPE_CHECKING:  # torch is imported where tensors are made, so that error paths and --help stay light
    import torch

#: Pillow's own decompression-bomb limit (pixels), overridable with --max-pixels.
DEFAULT_MAX_PIXELS = PILImage.MAX_IMAGE_PIXELS
#: output formats that store 16-bit grayscale
SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass
class Image:
    """An image in memory.

    ``rgb``: float32 3 x H x W in [0, 1]; ``alpha``: uint8 H x W or None (exact, 0..255);
    ``grayscale``: written back as one channel; ``bit_depth``: 8 or 16 (the precision written back to
    formats that have it); ``icc_profile``: the source's ICC profile bytes, written back unchanged.
    """

    rgb: torch.Tensor
    alpha: np.ndarray | None = None
    grayscale: bool = False
    bit_depth: int = 8
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


def _gray(g: np.ndarray) -> torch.Tensor:
    """H x W float array in [0, 1] -> 3 x H x W float32 tensor."""
    import torch

    return torch.from_numpy(np.repeat(g[None].astype(np.float32), 3, 0))


def _cmyk_to_rgb(im: PILImage.Image, icc: bytes | None) -> PILImage.Image:
    """CMYK -> sRGB through the embedded profile when it is usable, else Pillow's naive conversion."""
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(_io.BytesIO(icc))
            return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    return im.convert("RGB")


def from_pil(im: PILImage.Image) -> Image:
    """Convert a Pillow image (any mode) to an :class:`Image`; EXIF orientation is applied."""
    im = ImageOps.exif_transpose(im)
    icc = im.info.get("icc_profile") or None
    if im.mode == "P":
        im = im.convert("RGBA" if im.has_transparency_data else "RGB")
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:
        g = np.clip(np.asarray(im, dtype=np.float64), 0, 65535) / 65535.0
        return Image(_gray(g), None, grayscale=True, bit_depth=16, icc_profile=icc)
    if mode in ("1", "L", "LA"):
        a = np.asarray(im.convert("LA"))
        alpha = a[..., 1].copy() if mode == "LA" else None
        return Image(_gray(a[..., 0] / 255.0), alpha, grayscale=True, icc_profile=icc)
    alpha = None
    if mode in ("RGBA", "RGBa", "PA"):
        a = np.asarray(im.convert("RGBA"))
        alpha, rgb = a[..., 3].copy(), a[..., :3]
    elif mode == "CMYK":
        rgb = np.asarray(_cmyk_to_rgb(im, icc))
        icc = None  # the CMYK profile does not describe the (s)RGB we produce
    else:  # RGB, YCbCr, LAB, HSV, F, ...
        rgb = np.asarray(im.convert("RGB"))
    import torch

    t = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32) / 255.0)
    return Image(t, alpha, grayscale=False, icc_profile=icc)


#: the file suffixes taken as images when a folder is listed (training, evaluation, benchmarks, metrics)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".avif", ".jxl", ".bmp", ".gif", ".tif", ".tiff",
                            ".ppm", ".pgm"})


def list_images(folder: str | os.PathLike, recursive: bool = False, limit: int | None = None) -> list[Path]:
    """The image files (by suffix, :data:`IMAGE_SUFFIXES`, any case) in `folder`, or below it with
    `recursive`, sorted by path; the first `limit` if given. Raises :class:`LatentkitError` when the folder is
    missing or holds no image."""
    root = Path(folder)
    if not root.is_dir():
        raise LatentkitError(f"image folder {root} does not exist" if not root.exists() else
                             f"{root} is a file, not a folder of images")
    found = root.rglob("*") if recursive else root.iterdir()
    files = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())[:limit]
    if not files:
        raise LatentkitError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) {'under' if recursive else 'in'} "
                             f"{root}")
    return files


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e).strip() else type(e).__name__


def read_image(path: str | os.PathLike | bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image:
    """Read an image file (any Pillow-readable format and mode, EXIF orientation applied), or an image file's
    bytes (e.g. from standard input).

    ``max_pixels``: refuse images with more pixels (width x height) than this, a guard against
    decompression bombs; ``None`` disables it. Raises :class:`LatentkitError` for missing, unreadable or
    oversized files.
    """
    if isinstance(path, (bytes, bytearray)):
        p, source = "standard input", _io.BytesIO(path)
    else:
        p = source = Path(path)
        if p.is_dir():
            raise LatentkitError(f"input {p} is a folder, not an image file")
        if not p.is_file():
            raise LatentkitError(f"input file {p} does not exist")
    try:
        with _open_unguarded(source) as im:
            if max_pixels is not None and im.width * im.height > max_pixels:
                raise LatentkitError(
                    f"{p} has {im.width}x{im.height} = {im.width * im.height} pixels, more than the limit of "
                    f"{max_pixels} (a decompression-bomb guard); pass --max-pixels N to allow it")
            im.load()
            return from_pil(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise LatentkitError(f"cannot read image {p}: {_first_line(e)}") from None


_PIL_GUARD = threading.Lock()


def _open_unguarded(source) -> PILImage.Image:
    """``PILImage.open`` without Pillow's own decompression-bomb check (it errors only at twice its limit;
    :func:`read_image` checks exactly at ``max_pixels``). Pillow's limit is a process global, so it is lifted and
    restored under a lock: threads reading images at once (``--jobs``) never leave it changed. Pillow checks it
    in ``open`` only, which reads just the header."""
    with _PIL_GUARD:
        old, PILImage.MAX_IMAGE_PIXELS = PILImage.MAX_IMAGE_PIXELS, None
        try:
            return PILImage.open(source)
        finally:
            PILImage.MAX_IMAGE_PIXELS = old


def to_pil(image: Image, bit_depth: int | None = None) -> PILImage.Image:
    """Convert back to a Pillow image, restoring grayscale, 16-bit and alpha as documented above.

    ``bit_depth`` overrides ``image.bit_depth`` (8 for formats without 16-bit grayscale).
    """
    rgb = image.rgb.detach().float().clamp(0, 1).cpu().numpy()
    depth = image.bit_depth if bit_depth is None else bit_depth
    if image.grayscale and depth == 16:  # Pillow has no 16-bit gray + alpha mode; 16-bit sources have no alpha
        return _with_icc(PILImage.fromarray((rgb.mean(0) * 65535.0).round().astype(np.uint16)), image)
    if image.grayscale:
        im = PILImage.fromarray((rgb.mean(0) * 255.0).round().astype(np.uint8))
        if image.alpha is not None:
            im = PILImage.merge("LA", [im, PILImage.fromarray(image.alpha.astype(np.uint8))])
    else:
        im = PILImage.fromarray((rgb.transpose(1, 2, 0) * 255.0).round().astype(np.uint8))
        if image.alpha is not None:
            im.putalpha(PILImage.fromarray(image.alpha.astype(np.uint8)))
    return _with_icc(im, image)


def _with_icc(im: PILImage.Image, image: Image) -> PILImage.Image:
    if image.icc_profile:
        im.info["icc_profile"] = image.icc_profile
    return im


def current_umask() -> int:
    """The process umask (the permission bits new files do not get)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output(path: str | os.PathLike, inputs: tuple = ()) -> Path:
    """Raise :class:`LatentkitError` unless `path` can be written: its folder exists and is writable, and it is
    none of `inputs`. Commands call it before long work; :func:`atomic_write` calls it again."""
    out = Path(path)
    for i in inputs:
        if Path(i).exists() and out.exists() and os.path.samefile(i, out):
            raise LatentkitError(f"refusing to overwrite the input file {out}; choose another output path")
    if not out.parent.is_dir():
        raise LatentkitError(f"output folder {out.parent} is a file, not a folder" if out.parent.exists() else
                             f"output folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise LatentkitError(f"output folder {out.parent} is not writable")
    return out


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], inputs: tuple = ()) -> Path:
    """Call ``write(tmp_path)`` for a temporary file next to `path`, then rename it onto `path`.

    A crash never leaves a half-written `path`; the file gets the usual permissions (0666 minus umask).
    Refuses (:class:`LatentkitError`) to overwrite any of `inputs` or to write into a missing folder.
    """
    out = check_output(path, inputs)
    try:  # e.g. a read-only file system, or a folder that even root may not write (os.access said yes)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp" + out.suffix, dir=out.parent)
    except OSError as e:
        raise LatentkitError(f"cannot write into output folder {out.parent}: {e.strerror or e}") from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
        write(Path(tmp))
        try:
            os.replace(tmp, out)
        except OSError as e:  # e.g. OUT is a folder
            raise LatentkitError(f"cannot write {out}: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def image_format(path: str | os.PathLike) -> str:
    """The Pillow format name (e.g. ``"PNG"``) that a file name's suffix asks for; raises
    :class:`LatentkitError` when Pillow cannot write it."""
    suffix = Path(path).suffix.lower()
    PILImage.preinit()  # the common formats (PNG, JPEG, BMP, GIF, PPM): registering every plugin costs ~0.1 s
    fmt = PILImage.EXTENSION.get(suffix) or PILImage.registered_extensions().get(suffix)
    if fmt is None or fmt not in PILImage.SAVE:
        raise LatentkitError(f"unknown output image type '{suffix}' for {path}: use .png, .jpg, .webp, ...")
    return fmt


#: zlib level of the PNGs latentkit writes. Pillow's default, 6, took 115-553 ms for Kodak and val photos (768x512
#: to 1404x936, fastest of 5, idle) where 4 took 63-233 ms (1.5-2.7x faster, median 2.2x) for files 0.7-3.6% larger
#: (session 18); a 768x512 decode then spends much less on writing its PNG than on the decoder. OpenCV's default is
#: 1, for speed.
PNG_COMPRESS_LEVEL = 4


def image_bytes(image: Image, fmt: str) -> bytes:
    """The image as a file of Pillow format `fmt` (e.g. ``"PNG"``, written at zlib level PNG_COMPRESS_LEVEL).
    PNG keeps alpha, 16-bit grayscale and ICC; JPEG drops alpha."""
    im = to_pil(image, bit_depth=None if fmt in SIXTEEN_BIT_FORMATS else 8)
    if fmt == "JPEG" and im.mode in ("RGBA", "LA"):
        im = im.convert(im.mode[:-1])
    kw = {"icc_profile": image.icc_profile} if image.icc_profile else {}
    if fmt == "PNG":
        kw["compress_level"] = PNG_COMPRESS_LEVEL
    buf = _io.BytesIO()
    try:
        im.save(buf, format=fmt, **kw)
    except (OSError, ValueError, KeyError) as e:
        raise LatentkitError(f"cannot write a {im.mode} image as {fmt}: {_first_line(e)}") from None
    return buf.getvalue()


def write_image(image: Image, path: str | os.PathLike, inputs: tuple = ()) -> Path:
    """Write atomically; the format comes from the suffix (see :func:`image_bytes`). Never overwrites any
    of `inputs`."""
    out = Path(path)
    data = image_bytes(image, image_format(out))
    return atomic_write(out, lambda tmp: tmp.write_bytes(data), inputs)

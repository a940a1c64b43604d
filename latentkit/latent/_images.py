"""Input rules the latent-space tools share: RGB images of at least one latent position, read once."""

from __future__ import annotations

import os

import torch

from ..errors import LatentkitError
from ..io import DEFAULT_MAX_PIXELS, Image, read_image

#: the smallest image side the tools take (one latent position of an 8x downsampling model)
MIN_SIDE = 8


def check_rgb(image: Image, name: str, min_side: int = MIN_SIDE) -> Image:
    """`image` if it is an RGB image (no alpha, not grayscale) of at least `min_side` px a side; else a one-line
    :class:`LatentkitError` naming `name`. The latent tools compare colour images with their reconstructions and
    move between latents, which alpha planes (never sent through the model) and grayscale sources do not have."""
    if image.grayscale:
        raise LatentkitError(f"{name} is a grayscale image: the latent tools take RGB images (convert it to RGB)")
    if image.alpha is not None:
        raise LatentkitError(f"{name} has an alpha channel: the latent tools take RGB images (flatten it onto a "
                             "background first)")
    if min(image.width, image.height) < min_side:
        raise LatentkitError(f"{name} is {image.width}x{image.height} px: the latent tools need at least "
                             f"{min_side}x{min_side} px")
    return image


def read_rgb(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS,
             min_side: int = MIN_SIDE) -> Image:
    """Read an image file and check it with :func:`check_rgb` (one-line errors)."""
    return check_rgb(read_image(path, max_pixels), str(path), min_side)


def one_image(x: torch.Tensor | Image) -> torch.Tensor:
    """An :class:`~latentkit.io.Image`, a 3 x H x W or a 1 x 3 x H x W tensor in [0, 1] -> 1 x 3 x H x W float
    (:func:`latentkit.model.as_batch`, holding exactly one image)."""
    from ..model import as_batch

    t = as_batch(x)
    if t.shape[0] != 1:
        raise LatentkitError(f"expected one RGB image (3 x H x W), got a tensor of shape {tuple(t.shape)}")
    return t.float()



def grid(images: torch.Tensor, columns: int | None = None, gap: int = 2, background: float = 1.0) -> torch.Tensor:
    """N x 3 x H x W images laid out in rows of `columns` (default: all in one row), `gap` px apart on a
    `background` grey level: one 3 x H' x W' image."""
    n, c, h, w = images.shape
    cols = n if columns is None else max(1, min(columns, n))
    rows = -(-n // cols)
    out = torch.full((c, rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap), background, dtype=images.dtype)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        out[:, r * (h + gap):r * (h + gap) + h, k * (w + gap):k * (w + gap) + w] = im
    return out


def png_bytes(rgb: torch.Tensor, fmt: str = "PNG") -> bytes:
    """A 3 x H x W image in [0, 1] as the bytes of an 8-bit RGB file of Pillow format `fmt`."""
    from ..io import image_bytes

    return image_bytes(Image(rgb.detach().float().cpu().contiguous()), fmt)


def gif_bytes(frames: torch.Tensor, duration_ms: int = 120, bounce: bool = True) -> bytes:
    """N x 3 x H x W images in [0, 1] as a looping animated GIF (each frame `duration_ms`); with `bounce` the
    frames play forwards then backwards, so the loop has no jump."""
    import io as _io

    from ..io import to_pil

    order = list(range(len(frames))) + (list(range(len(frames) - 2, 0, -1)) if bounce else [])
    ims = [to_pil(Image(frames[i].detach().float().cpu().contiguous())) for i in order]
    buf = _io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=int(duration_ms), loop=0)
    return buf.getvalue()


def write_folder(folder: str | os.PathLike, files: dict[str, bytes], overwrite: bool = False) -> list[str]:
    """Write `files` (name -> bytes) into `folder` with no partial result: a new folder is filled under a
    temporary name and renamed into place; into an existing one each file is written atomically (existing files
    are replaced only with `overwrite`, checked for all of them before any is written). Returns the paths."""
    import shutil
    import tempfile
    from pathlib import Path

    from ..io import atomic_write, check_output, current_umask

    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise LatentkitError(f"output {out} exists and is not a folder")
    check_output(out)  # its parent folder exists
    paths = [out / name for name in files]
    if out.exists():
        clash = [p for p in paths if p.exists()]
        if clash and not overwrite:
            raise LatentkitError(f"output {clash[0]} already exists; pass --overwrite to replace it")
        for p, data in zip(paths, files.values()):
            atomic_write(p, lambda tmp, data=data: tmp.write_bytes(data))
        return [str(p) for p in paths]
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o777 & ~current_umask())
        for name, data in files.items():
            (tmp / name).write_bytes(data)
            (tmp / name).chmod(0o666 & ~current_umask())
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return [str(p) for p in paths]

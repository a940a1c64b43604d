"""Butteraugli distance through libjxl's command-line tool ``butteraugli_main``.

Butteraugli (Google / the JPEG XL project) estimates the psychovisual difference between two images. It is
>= 0, **lower is better**, 0 for identical images; around 1 is "just noticeable", above ~3 clearly visible.
Two summaries are returned: the maximum of the per-pixel distance map (what the tool prints first) and its
3-norm (``(mean of d^3)^(1/3)``, printed as ``3-norm: X`` for ``--pnorm 3``), a more stable average.

This wrapper does not re-implement the metric: it runs the external binary from the Debian package
``libjxl-devtools``, as ``butteraugli_main REF DIST --pnorm 3`` (default intensity target, 80 nits;
inputs without a colour profile are read as sRGB). Tensors are first written to temporary 8-bit PNGs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

from ..errors import LatentkitError

TOOL = "butteraugli_main"
MISSING = ("butteraugli needs libjxl's butteraugli_main (Debian package libjxl-devtools: "
           "apt-get install libjxl-devtools)")
PNORM = 3
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:inf|nan)"

ImageLike = str | os.PathLike | torch.Tensor


def butteraugli_available() -> bool:
    """Whether ``butteraugli_main`` is on PATH."""
    return shutil.which(TOOL) is not None


def _write_png(x: torch.Tensor, path: Path) -> None:
    """Save a 3 x H x W (or 1 x 3 x H x W) tensor in [0, 1] as an 8-bit RGB PNG (clipped and rounded)."""
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3 or x.shape[0] != 3:
        raise LatentkitError(f"butteraugli takes one RGB image per side, 3 x H x W or 1 x 3 x H x W, got "
                             f"{tuple(x.shape)}")
    a = (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    PILImage.fromarray(np.ascontiguousarray(a), "RGB").save(path)


def parse_output(text: str) -> dict[str, float]:
    """Parse ``butteraugli_main ... --pnorm 3`` stdout: the first line is the max distance, then ``3-norm: X``."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    m = re.fullmatch(_FLOAT, lines[0]) if lines else None
    p = re.search(rf"^{PNORM}-norm:\s*({_FLOAT})\s*$", text, re.MULTILINE)
    if m is None or p is None:
        raise LatentkitError(f"could not read butteraugli_main's output: {text.strip()[:200]!r}")
    return {"max": float(m.group(0)), f"pnorm{PNORM}": float(p.group(1))}


def butteraugli(ref: ImageLike, dist: ImageLike) -> dict[str, float]:
    """Butteraugli distance of `dist` against `ref`: ``{"max": float, "pnorm3": float}``, both >= 0, lower is
    better, 0 for identical images.

    Each side is an image file path (anything ``butteraugli_main`` reads: PNG, JPEG, PPM...) or a tensor
    3 x H x W / 1 x 3 x H x W of sRGB values in [0, 1], which is saved as a temporary 8-bit PNG. Raises
    :class:`~latentkit.errors.LatentkitError` when the tool is missing or it fails (e.g. sizes differ).
    """
    exe = shutil.which(TOOL)
    if exe is None:
        raise LatentkitError(MISSING)
    if isinstance(ref, torch.Tensor) and isinstance(dist, torch.Tensor) and ref.shape[-2:] != dist.shape[-2:]:
        raise LatentkitError(f"butteraugli needs images of the same size, got {tuple(ref.shape)} and "
                             f"{tuple(dist.shape)}")
    with tempfile.TemporaryDirectory(prefix="latentkit-butteraugli-") as tmp:
        paths = []
        for name, side in (("ref", ref), ("dist", dist)):
            if isinstance(side, torch.Tensor):
                path = Path(tmp) / f"{name}.png"
                _write_png(side, path)
            else:
                path = Path(side)
                if not path.is_file():
                    raise LatentkitError(f"butteraugli: no such image file: {path}")
            paths.append(str(path))
        proc = subprocess.run([exe, *paths, "--pnorm", str(PNORM)], check=False, capture_output=True,
                              text=True)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no message"])[-1]
        raise LatentkitError(f"butteraugli_main failed (exit {proc.returncode}): {why}")
    return parse_output(proc.stdout)


__all__ = ["butteraugli", "butteraugli_available", "parse_output"]

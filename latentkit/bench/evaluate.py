"""Evaluate an autoencoder on a folder of images: posterior-mean reconstruction at full resolution, no
quantization of the latents; PSNR (8-bit, dB), SSIM (0..1) and LPIPS-squeeze (0 = identical) per image and
their means. What ``latentkit eval-model`` and ``scripts/eval_model.py`` report, and what the model card quotes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from ..io import list_images, read_image
from ..model import reconstruct

if TYPE_CHECKING:  # type hints only: commands run the model without importing diffusers
    from diffusers import AutoencoderKL

#: what an evaluation reports (names of :func:`latentkit.metrics.compare.compare`)
METRICS = ("psnr", "ssim", "ms_ssim", "ssimulacra2", "lpips_squeeze")


def reconstructions(vae: AutoencoderKL, data: str | os.PathLike,
                    progress: bool = True) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """For every image under `data` (recursive, :func:`latentkit.io.list_images`): (file name relative to `data`, the image
    1 x 3 x H x W in [0, 1], its posterior-mean reconstruction rounded to 8-bit levels), on the model's device."""
    from ..metrics import to_8bit_levels

    root = Path(data)
    for f in tqdm(list_images(root, recursive=True), desc="eval", unit="img", disable=not progress):
        x = read_image(f).batch().to(next(vae.parameters()).device).float()
        yield str(f.relative_to(root)), x, to_8bit_levels(reconstruct(vae, x))


def evaluate_folder(vae: AutoencoderKL, data: str | os.PathLike, progress: bool = True) -> dict:
    """Reconstruct every image under `data` (recursive) through the posterior mean.

    The reconstruction is rounded to 8-bit levels (what a saved PNG holds) before the metrics.
    Returns ``{"data": str, "images": [{"file", "width", "height", "psnr", "ssim", "ms_ssim", "ssimulacra2",
    "lpips_squeeze"},
    ...], "mean": {metric: mean}}``; file names are relative to `data`; ``ms_ssim`` is None for images with a side
    under 161 px (and then its mean is None).
    """
    from ..metrics.compare import compare

    rows = [{"file": name, "width": x.shape[-1], "height": x.shape[-2], **compare(x, y, METRICS)[0]}
            for name, x, y in reconstructions(vae, data, progress)]
    mean = {k: (None if any(r[k] is None for r in rows) else sum(r[k] for r in rows) / len(rows)) for k in METRICS}
    return {"data": str(Path(data)), "images": rows, "mean": mean}


def format_table(result: dict) -> str:
    """The per-image figures and their mean as a fixed-width text table."""
    width = max(len("mean"), *(len(r["file"]) for r in result["images"]))
    fmt = lambda v, f: "n/a".rjust(len(format(0.0, f))) if v is None else format(v, f)  # noqa: E731
    lines = [f"{'image':<{width}}  {'PSNR dB':>8}  {'SSIM':>6}  {'MS-SSIM':>7}  {'SSIMU2':>6}  {'LPIPS-squeeze':>13}"]
    for r in result["images"] + [{"file": "mean", **result["mean"]}]:
        lines.append(f"{r['file']:<{width}}  {fmt(r['psnr'], '8.2f')}  {fmt(r['ssim'], '6.4f')}  "
                     f"{fmt(r['ms_ssim'], '7.4f')}  {fmt(r['ssimulacra2'], '6.2f')}  {fmt(r['lpips_squeeze'], '13.4f')}")
    return "\n".join(lines)

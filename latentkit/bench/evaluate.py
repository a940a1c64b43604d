"""Evaluate an autoencoder on a folder of images: posterior-mean reconstruction at full resolution, no
quantization of the latents; PSNR (8-bit, dB), SSIM and MS-SSIM (0..1), SSIMULACRA2 (up to 100), optionally
Butteraugli, and LPIPS-squeeze (0 = identical) per image and their means, and how one model stands against another
on the same images. What ``latentkit eval-model`` and ``scripts/eval_model.py`` report, and what the model card
quotes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from ..io import list_images, read_image
from ..model import reconstruct

if TYPE_CHECKING:  # type hints only: commands run the model without importing diffusers
    from diffusers import AutoencoderKL

def reconstructions(vae: AutoencoderKL, data: str | os.PathLike,
                    progress: bool = True) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """For every image under `data` (recursive, :func:`latentkit.io.list_images`): (file name relative to `data`, the image
    1 x 3 x H x W in [0, 1], its posterior-mean reconstruction rounded to 8-bit levels), on the model's device."""
    from ..metrics import to_8bit_levels

    root = Path(data)
    for f in tqdm(list_images(root, recursive=True), desc="eval", unit="img", disable=not progress):
        x = read_image(f).batch().to(next(vae.parameters()).device).float()
        yield str(f.relative_to(root)), x, to_8bit_levels(reconstruct(vae, x))


def evaluate_folder(vae: AutoencoderKL, data: str | os.PathLike, progress: bool = True,
                    metrics: Sequence[str] | None = None) -> dict:
    """Reconstruct every image under `data` (recursive) through the posterior mean.

    The reconstruction is rounded to 8-bit levels (what a saved PNG holds) before the metrics (names of
    :func:`latentkit.metrics.compare.compare`, default :func:`~latentkit.metrics.compare.reported_metrics`;
    ``butteraugli_*`` need libjxl's ``butteraugli_main``).
    Returns ``{"data": str, "metrics": [...], "images": [{"file", "width", "height", <metric>: value, ...}, ...],
    "mean": {metric: mean}}``; file names are relative to `data`; ``ms_ssim`` is None for images with a side
    under 161 px (and then its mean is None).
    """
    from ..metrics.compare import check_metrics, compare, mean_of, reported_metrics

    metrics = check_metrics(reported_metrics() if metrics is None else metrics)
    rows = [{"file": name, "width": x.shape[-1], "height": x.shape[-2], **compare(x, y, metrics)[0]}
            for name, x, y in reconstructions(vae, data, progress)]
    return {"data": str(Path(data)), "metrics": metrics, "images": rows, "mean": mean_of(rows, metrics)}


def compare_results(result: dict, baseline: dict) -> dict[str, dict]:
    """How `result` stands against `baseline` (both from :func:`evaluate_folder` on the same folder), per metric:
    ``{metric: {"mean": its mean, "baseline": the baseline's, "diff": mean - baseline, "better": images where it
    is better, "worse": where it is worse, "n": images with both values}}`` ("better" by the metric's direction,
    :data:`latentkit.metrics.compare.HIGHER_IS_BETTER`; a tie counts as neither)."""
    from ..metrics.compare import HIGHER_IS_BETTER

    base = {r["file"]: r for r in baseline["images"]}
    out = {}
    for k in result["metrics"]:
        if k not in baseline["metrics"]:
            continue
        sign = 1 if HIGHER_IS_BETTER[k] else -1
        deltas = [sign * (r[k] - base[r["file"]][k]) for r in result["images"]
                  if r["file"] in base and r[k] is not None and base[r["file"]][k] is not None]
        m, b = result["mean"][k], baseline["mean"][k]
        out[k] = {"mean": m, "baseline": b, "diff": None if m is None or b is None else m - b,
                  "better": sum(d > 0 for d in deltas), "worse": sum(d < 0 for d in deltas), "n": len(deltas)}
    return out


def format_table(result: dict) -> str:
    """The per-image figures and their mean as a fixed-width text table."""
    from ..metrics.compare import format_value, label

    metrics = result["metrics"]
    width = max(len("mean"), *(len(r["file"]) for r in result["images"]))
    cols = [max(len(label(k)), 7) for k in metrics]
    lines = [f"{'image':<{width}}  " + "  ".join(f"{label(k):>{c}}" for k, c in zip(metrics, cols))]
    for r in result["images"] + [{"file": "mean", **result["mean"]}]:
        lines.append(f"{r['file']:<{width}}  " + "  ".join(f"{format_value(r[k], k):>{c}}"
                                                             for k, c in zip(metrics, cols)))
    return "\n".join(lines)


def format_comparison(comparison: dict[str, dict], model: str, baseline: str) -> str:
    """:func:`compare_results` as a table: one row per metric, both means, the difference and the image count."""
    from ..metrics.compare import TRAINED_ON, format_value, label

    w = max(len(model), len(baseline), 8)
    lines = [f"{'metric':<14}  {baseline:>{w}}  {model:>{w}}  {'diff':>8}  images better / worse"]
    for k, c in comparison.items():
        diff = format_value(c["diff"], k, sign="+")
        note = "  (the default model's training loss)" if k in TRAINED_ON else ""
        base, mean = format_value(c["baseline"], k), format_value(c["mean"], k)
        lines.append(f"{label(k):<14}  {base:>{w}}  {mean:>{w}}  {diff:>8}  "
                     f"{c['better']} / {c['worse']} of {c['n']}{note}")
    return "\n".join(lines)

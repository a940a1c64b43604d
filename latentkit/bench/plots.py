"""Rate-distortion plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from pathlib import Path

from ..io import atomic_write

#: axis labels per metric key; LPIPS keys are ``lpips_<net>``
LABELS = {"psnr": "PSNR (dB, higher is better)", "ms_ssim": "MS-SSIM (higher is better)",
          "ssimulacra2": "SSIMULACRA2 (higher is better)", "butteraugli_3norm": "Butteraugli 3-norm (lower is better)",
          "butteraugli_max": "Butteraugli max (lower is better)"}


def metric_label(metric: str) -> str:
    if metric.startswith("lpips_"):
        return f"LPIPS-{metric[len('lpips_'):]} (lower is better)"
    return LABELS.get(metric, metric)


def plot_rd(curves: dict[str, dict[str, list[float]]], metric: str, path: str | os.PathLike,
            title: str | None = None) -> Path:
    """Write a PNG of bpp (x) vs `metric` (y), one line with markers per codec; returns the path.

    `curves` maps codec -> {"bpp": [...], metric: [...]} (as :func:`latentkit.bench.rd.mean_curves` gives).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=120)
    try:
        for codec, c in curves.items():
            pts = sorted(zip(c["bpp"], c[metric]))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3.5,
                    linewidth=2.2 if codec == "latent" else 1.4, label=codec)
        ax.set_xlabel("bits per pixel (whole file)")
        ax.set_ylabel(metric_label(metric))
        ax.set_title(title or f"Rate-distortion: {metric_label(metric).split(' (')[0]}")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)

"""Benchmarks: model evaluation, rate-distortion sweeps against classic codecs (JPEG, WebP, AVIF, JPEG XL),
BD-rate, plots.

    >>> from latentkit.bench import run_rd
    >>> result = run_rd("kodak/", "results/rd", codecs=["jpeg", "webp"])   # writes CSV, JSON, markdown, PNGs
    >>> result.bdrates["jpeg"]["webp"]["psnr"]                               # percent; negative saves bits

The names below are imported on first use, so ``latentkit.bench.sweeps`` (what the CLI's help reads) needs no
torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"bd_rate": "bdrate", "CLASSIC": "classic", "ClassicCodec": "classic", "CODECS": "sweeps",
          "RDResult": "rd", "run_rd": "rd"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'latentkit.bench' has no attribute {name!r}")

"""Benchmarks: rate-distortion sweeps against classic codecs (JPEG, WebP, AVIF, JPEG XL), BD-rate, plots.

    >>> from latentkit.bench import run_rd
    >>> result = run_rd("kodak/", "results/rd", codecs=["jpeg", "webp"])   # writes CSV, JSON, markdown, PNGs
    >>> result.bdrates["jpeg"]["webp"]["psnr"]                               # percent; negative saves bits
"""

from .bdrate import bd_rate
from .classic import CLASSIC, ClassicCodec
from .rd import CODECS, RDResult, run_rd

__all__ = ["CLASSIC", "CODECS", "ClassicCodec", "RDResult", "bd_rate", "run_rd"]

"""Reproduce the README's rate-distortion benchmark: `latentkit bench rd` on Kodak with every codec.

    python scripts/bench_rd.py                                  # ../shared/data/kodak, weights/default, results/rd
    python scripts/bench_rd.py --model runs/default --limit 4   # any `latentkit bench rd` option overrides

Arguments given here come after the defaults, so they win.
"""

from __future__ import annotations

import sys
from pathlib import Path

from latentkit.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = ["bench", "rd", "--data", str(ROOT.parent / "shared" / "data" / "kodak"),
            "--codecs", "latent,jpeg,webp,avif,jxl", "--out", str(ROOT / "results" / "rd")]

if __name__ == "__main__":
    sys.exit(main(DEFAULTS + sys.argv[1:]))

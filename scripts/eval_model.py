"""Evaluate a model on Kodak (or --data): posterior-mean PSNR / SSIM / LPIPS-squeeze, printed or as JSON.

    python scripts/eval_model.py [--model M] [--data DIR] [--json > result.json]

`latentkit eval-model` with the workspace's Kodak folder (../shared/data/kodak) as the default --data.
"""

import sys
from pathlib import Path

from latentkit.cli import main

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"

if __name__ == "__main__":
    sys.exit(main(["eval-model", "--data", str(KODAK), *sys.argv[1:]]))

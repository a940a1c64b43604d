"""Evaluate a model on Kodak (or --data): posterior-mean PSNR / SSIM / LPIPS-squeeze, printed and as JSON.

    python scripts/eval_model.py [--model M] [--data DIR] [--json OUT]

The same as `latentkit eval-model`.
"""

import sys

from latentkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval-model", *sys.argv[1:]]))

"""``latentkit eval-model``: posterior-mean reconstruction quality of a model on a folder (Kodak by default)."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    from ..train.evaluate import KODAK

    p = subparsers.add_parser(
        "eval-model", help="PSNR / SSIM / LPIPS of a model's reconstructions (Kodak by default)",
        description="Reconstruct every image of a folder (recursive) through the posterior mean at full "
                    "resolution, without quantizing the latents; print per-image and mean PSNR (8-bit, dB), "
                    "SSIM (0..1) and LPIPS-squeeze (0 = identical), optionally as JSON.")
    p.add_argument("--model", default=None,
                   help="model: a diffusers folder, a latentkit run or checkpoint folder, or a .safetensors "
                        "file (default: the shipped weights/default)")
    p.add_argument("--data", default=str(KODAK), help="folder of images (default: %(default)s)")
    p.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..io import atomic_write
    from ..model import load_vae
    from ..train.evaluate import evaluate_folder, format_table

    vae = load_vae(args.model, device="cuda" if torch.cuda.is_available() else None)
    result = {"model": args.model or "default", **evaluate_folder(vae, args.data)}
    print(format_table(result))
    if args.json:
        atomic_write(args.json, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"),
                     inputs=(args.data,))
    return 0

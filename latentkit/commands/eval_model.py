"""``latentkit eval-model --data DIR``: posterior-mean reconstruction quality of a model on a folder."""

from __future__ import annotations

import argparse
import json

from . import _args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval-model", help="PSNR / SSIM / LPIPS of a model's reconstructions on a folder of images",
        description="Reconstruct every image of a folder (recursive) through the posterior mean at full "
                    "resolution, without quantizing the latents; print per-image and mean PSNR (8-bit, dB), "
                    "SSIM (0..1) and LPIPS-squeeze (0 = identical; the default model's training loss).")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="folder of images, searched recursively (the README's figures: the 24 Kodak images)")
    _args.add_model(p)
    _args.add_json(p, "the per-image and mean figures")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench.evaluate import evaluate_folder, format_table

    vae = _args.load_model(args, device="cuda" if torch.cuda.is_available() else None)
    result = {"model": args.model or "default", **evaluate_folder(vae, args.data)}
    print(json.dumps(result) if args.json else format_table(result))
    return 0

"""``latentkit eval-model --data DIR``: posterior-mean reconstruction quality of a model on a folder, optionally
against a baseline model on the same images."""

from __future__ import annotations

import argparse
import json

from . import _args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval-model", help="PSNR / MS-SSIM / SSIMULACRA2 / LPIPS of a model's reconstructions on a folder",
        description="Reconstruct every image of a folder (recursive) through the posterior mean at full "
                    "resolution, without quantizing the latents; print per-image and mean PSNR (8-bit, dB), "
                    "SSIM and MS-SSIM (0..1), SSIMULACRA2 (up to 100, higher is better), with --butteraugli "
                    "Butteraugli max and 3-norm (lower is better), and LPIPS-squeeze (0 = identical; the default "
                    "model's training loss, so no independent evidence for it). With --baseline, the same for a "
                    "second model and, per metric, both means and on how many images the model is better.")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="folder of images, searched recursively (the README's figures: the 24 Kodak images)")
    _args.add_model(p)
    p.add_argument("--baseline", default=None, metavar="M",
                   help="a second model (same forms as --model) to compare with on the same images, e.g. the "
                        "shipped 'default' against a training run")
    p.add_argument("--butteraugli", action="store_true",
                   help="also Butteraugli max and 3-norm (libjxl's butteraugli_main, Debian package libjxl-devtools)")
    _args.add_json(p, "the per-image and mean figures (and the comparison)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench.evaluate import compare_results, evaluate_folder, format_comparison, format_table
    from ..metrics.compare import reported_metrics
    from ..model import load_vae

    metrics = reported_metrics(butteraugli=args.butteraugli)
    device = "cuda" if torch.cuda.is_available() else None
    vae = _args.load_model(args, device=device)
    result = {"model": args.model or "default", **evaluate_folder(vae, args.data, metrics=metrics)}
    if args.baseline is not None:
        del vae
        base_vae = load_vae(args.baseline, device=device, allow_pickle=args.allow_pickle, standalone=True)
        result["baseline"] = {"model": args.baseline, **evaluate_folder(base_vae, args.data, metrics=metrics)}
        result["comparison"] = compare_results(result, result["baseline"])
    if args.json:
        print(json.dumps(result))
        return 0
    print(format_table(result))
    if args.baseline is not None:
        print(f"\n{result['model']} against {args.baseline} ({len(result['images'])} images):")
        print(format_comparison(result["comparison"], result["model"], args.baseline))
    return 0

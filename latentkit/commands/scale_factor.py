"""``latentkit scale-factor``: estimate a VAE's diffusers ``scaling_factor`` (and ``shift_factor``) from data."""

from __future__ import annotations

import argparse
import json

from . import _args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "scale-factor", help="estimate scaling_factor (and shift_factor) so scaled latents have unit variance",
        description="Encode the images of --data and print scaling_factor = 1 / std of the latents (all values "
                    "pooled, posterior samples as SD's 0.18215 was derived) and, with --shift, shift_factor = "
                    "their mean (SD3/FLUX-style VAEs: the pipeline feeds (z - shift) * scale). With --write, "
                    "export the model with these factors in its config.")
    _args.add_model(p)
    p.add_argument("--data", required=True, help="folder of images (png/jpg/webp, searched recursively)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="use at most N images (sorted by name)")
    p.add_argument("--crop", type=int, default=None, metavar="PX",
                   help="centre-crop each image to at most PX x PX pixels first (faster on large images)")
    p.add_argument("--mean", action="store_true",
                   help="use posterior means instead of posterior samples (slightly larger factor)")
    p.add_argument("--shift", action="store_true", help="also estimate shift_factor (the latent mean)")
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior samples (default: 0)")
    p.add_argument("--write", metavar="OUT_DIR", default=None,
                   help="export the model to OUT_DIR with the estimated factors in config.json")
    _args.add_dtype(p)
    _args.add_json(p, "the result")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import LatentkitError
    from ..model import move
    from ..pipeline import estimate_scale_factor, export

    if args.limit is not None and args.limit < 1:
        raise LatentkitError("--limit must be at least 1")
    # --write saves diffusers' model (export); measuring alone needs only the network
    vae = _args.load_model(args, device="cuda" if torch.cuda.is_available() else None, standalone=not args.write)
    scale, shift = estimate_scale_factor(vae, args.data, limit=args.limit, sample=not args.mean,
                                         shift=args.shift, crop=args.crop, seed=args.seed)
    result = {"model": args.model or "default", "data": args.data, "statistic": "mean" if args.mean else "sample",
              "scaling_factor": scale, "shift_factor": shift}
    if args.write:
        export(move(vae, device="cpu"), args.write, dtype=_args.torch_dtype(args.dtype), scaling_factor=scale,
               shift_factor=shift, inputs=(_args.model_path(args.model), args.data))
        result["written"] = args.write
    if args.json:
        print(json.dumps(result))
    else:
        print(f"scaling_factor = {scale:.6g}")
        if shift is not None:
            print(f"shift_factor = {shift:.6g}")
        if args.write:
            print(f"wrote {args.write}")
    return 0

"""``latentkit export OUT_DIR [--model M]``: write any model latentkit loads as a stock diffusers folder."""

from __future__ import annotations

import argparse

from . import _args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write a model as a diffusers folder for AutoencoderKL.from_pretrained",
        description="Load --model and write OUT_DIR (config.json + diffusion_pytorch_model.safetensors) that "
                    "stock diffusers loads with AutoencoderKL.from_pretrained(OUT_DIR), latentkit not needed. "
                    "Other files already in OUT_DIR (e.g. MODEL_CARD.md) are kept; the write is atomic. Pass the "
                    "folder to a pipeline as vae=..., or use latentkit.pipeline.swap_vae.")
    p.add_argument("out_dir", metavar="OUT_DIR",
                   help="output folder; files already there other than the model's (e.g. MODEL_CARD.md) are kept")
    _args.add_model(p)
    _args.add_dtype(p)
    p.add_argument("--scaling-factor", type=float, default=None, metavar="F",
                   help="write this scaling_factor into the config (see `latentkit scale-factor`)")
    p.add_argument("--shift-factor", type=float, default=None, metavar="F",
                   help="write this shift_factor into the config (SD3/FLUX-style VAEs)")
    _args.add_json(p, "what was written")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipeline import export

    vae = _args.load_model(args)
    out = export(vae, args.out_dir, dtype=_args.torch_dtype(args.dtype), scaling_factor=args.scaling_factor,
                 shift_factor=args.shift_factor, inputs=(_args.model_path(args.model),))
    cfg = vae.config
    figures = {"output": str(out), "model": args.model or "default", "scaling_factor": cfg.scaling_factor,
               "shift_factor": cfg.shift_factor, "dtype": args.dtype or "as loaded"}
    _args.report(args, figures, f"wrote {out} (scaling_factor={cfg.scaling_factor}, shift_factor="
                                f"{cfg.shift_factor}, dtype={args.dtype or 'as loaded'})")
    return 0

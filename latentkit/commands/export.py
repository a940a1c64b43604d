"""``latentkit export``: write any model latentkit loads as a stock diffusers ``AutoencoderKL`` folder."""

from __future__ import annotations

import argparse

#: --dtype choices -> torch dtype names
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """MODEL positional and --allow-pickle, shared with ``scale-factor``."""
    p.add_argument("model", metavar="MODEL",
                   help="a diffusers folder, a pipeline folder (its vae/ is used), a latentkit training run or "
                        "checkpoint folder (EMA weights), a .safetensors file, or 'default'")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow loading .ckpt/.pt pickles (they can run code: only for files you trust)")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """--dtype, shared with ``scale-factor --write``."""
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="weights dtype of the written files (default: as loaded, normally fp32)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write a model as a diffusers folder for AutoencoderKL.from_pretrained",
        description="Load MODEL and write OUT_DIR (config.json + diffusion_pytorch_model.safetensors) that stock "
                    "diffusers loads with AutoencoderKL.from_pretrained(OUT_DIR), latentkit not needed. Other "
                    "files already in OUT_DIR (e.g. MODEL_CARD.md) are kept; the write is atomic. Pass the "
                    "folder to a pipeline as vae=..., or use latentkit.pipeline.swap_vae.")
    add_model_arguments(p)
    p.add_argument("out_dir", metavar="OUT_DIR",
                   help="output folder; files already there other than the model's (e.g. MODEL_CARD.md) are kept")
    add_export_arguments(p)
    p.add_argument("--scaling-factor", type=float, default=None, metavar="F",
                   help="write this scaling_factor into the config (see `latentkit scale-factor`)")
    p.add_argument("--shift-factor", type=float, default=None, metavar="F",
                   help="write this shift_factor into the config (SD3/FLUX-style VAEs)")
    p.set_defaults(func=run)


def model_path(model: str):
    """The path a MODEL argument names ('default' -> the shipped weights folder), to never overwrite it."""
    from ..model import DEFAULT_MODEL_DIR

    return DEFAULT_MODEL_DIR if model == "default" else model


def torch_dtype(name: str | None):
    """--dtype value -> torch.dtype, or None."""
    import torch

    return None if name is None else getattr(torch, DTYPES[name])


def run(args: argparse.Namespace) -> int:
    from ..model import load_vae
    from ..pipeline import export

    vae = load_vae(args.model, allow_pickle=args.allow_pickle)
    out = export(vae, args.out_dir, dtype=torch_dtype(args.dtype), scaling_factor=args.scaling_factor,
                 shift_factor=args.shift_factor, inputs=(model_path(args.model),))
    cfg = vae.config
    print(f"wrote {out} (scaling_factor={cfg.scaling_factor}, shift_factor={cfg.shift_factor}, "
          f"dtype={args.dtype or 'as loaded'})")
    return 0

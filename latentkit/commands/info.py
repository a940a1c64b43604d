"""``latentkit info M``: what a model is (config, size, dtype, weights hash)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import _args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "info", help="print a model's config, parameter count, dtype and weights sha256",
        description="Load a model the way every command does and describe it. The sha256 is over the weights "
                    "as float32 with sorted keys (the same for fp16 and fp32 copies of fp16 weights); its first "
                    "8 bytes are the model id that .latent files carry.")
    _args.add_model(p)
    _args.add_json(p, "everything")
    p.set_defaults(func=run)


def stored_dtypes(path: Path) -> list[str]:
    """The dtypes in the model's safetensors weights file, if it has one (empty list otherwise)."""
    from safetensors import safe_open

    from ..model import WEIGHTS_FILE
    from ..train import checkpoint

    if path.is_dir():
        ckpt = checkpoint.find(path) or path
        found = [f for f in (path / "vae" / WEIGHTS_FILE, path / WEIGHTS_FILE, ckpt / checkpoint.EMA_FILE)
                 if f.is_file()]
        if not found:
            return []
        path = found[0]
    if path.suffix != ".safetensors":
        return []
    with safe_open(path, framework="pt") as f:
        return sorted({str(f.get_slice(k).get_dtype()) for k in f.keys()})


def run(args: argparse.Namespace) -> int:
    from ..model import downsampling_factor, model_id, num_parameters, weights_sha256

    vae = _args.load_model(args)
    cfg = dict(vae.config)
    info = dict(
        model=str(args.model or "default"),
        block_out_channels=list(cfg["block_out_channels"]),
        layers_per_block=cfg["layers_per_block"],
        latent_channels=cfg["latent_channels"],
        norm_num_groups=cfg["norm_num_groups"],
        downsampling=downsampling_factor(vae),
        scaling_factor=cfg["scaling_factor"],
        parameters=num_parameters(vae),
        encoder_parameters=num_parameters(vae.encoder),
        decoder_parameters=num_parameters(vae.decoder),
        dtype=str(next(vae.parameters()).dtype).removeprefix("torch."),
        stored_dtypes=stored_dtypes(_args.model_path(args.model)),
        sha256=weights_sha256(vae),
        model_id=model_id(vae).hex(),
        config={k: v for k, v in cfg.items() if not k.startswith("_")},
    )
    if args.json:
        print(json.dumps(info, default=list))
        return 0
    for k, v in info.items():
        if k != "config":
            print(f"{k:>18}: {v}")
    print("config.json:")
    for k, v in info["config"].items():
        print(f"  {k:>24}: {v}")
    return 0

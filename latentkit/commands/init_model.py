"""``latentkit init-model --config NAME OUT``: a randomly initialised model, saved as a diffusers folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import LatentkitError
from . import _args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "init-model", help="save a randomly initialised VAE of a named config as a diffusers folder",
        description="Create an untrained AutoencoderKL and save it to OUT (config.json + "
                    "diffusion_pytorch_model.safetensors, loadable by stock diffusers). Useful to try the "
                    "commands before trained weights exist, and as a starting point for training.")
    p.add_argument("--config", required=True, metavar="NAME|PATH",
                   help=f"a named config ({', '.join(_args.CONFIG_NAMES)}: tiny ~3.9M, small ~15M, sd ~84M parameters), "
                        "a config.json, or a model folder whose architecture to copy")
    p.add_argument("out", metavar="OUT", help="output folder (must not exist yet, unless --overwrite)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace the weights of an existing model folder")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..model import make_vae, num_parameters, save_vae, weights_sha256

    out = Path(args.out)
    if out.exists() and any(out.iterdir() if out.is_dir() else [out]) and not args.overwrite:
        raise LatentkitError(f"{out} already exists; choose a new folder or pass --overwrite")
    vae = make_vae(args.config, seed=args.seed)
    save_vae(vae, out)
    info = dict(config=str(args.config), out=str(out), seed=args.seed, parameters=num_parameters(vae),
                sha256=weights_sha256(vae))
    if args.json:
        print(json.dumps(info))
    else:
        print(f"wrote a random {args.config} model ({info['parameters']:,} parameters, seed {args.seed}) to {out}")
    return 0

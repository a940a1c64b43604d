"""``latentkit train``: train (or resume, or fine-tune) a KL autoencoder with the latent-diffusion recipe.

Every :class:`latentkit.train.args.TrainArgs` knob is a flag, with the help text of its field. Runs on one CPU
or GPU as it is, and on several GPUs or machines under ``accelerate launch -m latentkit.cli train ...``.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..train.args import TrainArgs

#: fields with hand-written flags (or none)
SPECIAL = {"data", "out", "val", "config", "init", "decoder_only", "encoder_only", "extra"}


def _help(name: str) -> str:
    return next(f for f in fields(TrainArgs) if f.name == name).metadata["help"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train, resume or fine-tune an autoencoder",
        description="Train a KL autoencoder: L1/L2 + LPIPS + KL + PatchGAN (hinge, adaptive weight). Writes "
                    "RUN_DIR/log.csv (losses, validation PSNR/LPIPS), RUN_DIR/val_step*.png (validation "
                    "grids: original | reconstruction) and RUN_DIR/checkpoints/ (load_vae loads the EMA "
                    "weights of a run folder). Multi-GPU: accelerate launch -m latentkit.cli train ...",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=TrainArgs.data, help=_help("data"))
    p.add_argument("--val", help=_help("val"))
    p.add_argument("--config", default=TrainArgs.config, help=_help("config"))
    p.add_argument("--out", help=_help("out"))
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or --out) exactly from its latest checkpoint; "
                        "flags given again override only --steps, the folders and the logging/checkpoint intervals")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out folder that already holds one (its checkpoints, log.csv "
                        "and validation grids are deleted); without it such a folder is refused")
    p.add_argument("--init", help=_help("init"))
    p.add_argument("--decoder-only", action="store_true", help=_help("decoder_only"))
    p.add_argument("--encoder-only", action="store_true", help=_help("encoder_only"))
    for f in fields(TrainArgs):
        if f.name in SPECIAL:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        else:
            p.add_argument(flag, type=type(f.default), default=f.default, help=f.metadata["help"],
                           choices=f.metadata["choices"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import LatentkitError
    from ..train.loop import train

    resume = args.resume is not None
    out = args.resume if isinstance(args.resume, str) else args.out
    if not out:
        raise LatentkitError("--out RUN_DIR is required (or --resume RUN_DIR)")
    if not resume and not args.data:
        raise LatentkitError("--data DIR is required for a new run")
    if args.crop % 8:
        raise LatentkitError(f"--crop must be a multiple of 8, got {args.crop}")
    known = {f.name for f in fields(TrainArgs)} - {"extra"}
    targs = TrainArgs(**{k: v for k, v in vars(args).items() if k in known and k != "out"}, out=str(out))
    train(targs, resume=resume, overwrite=args.overwrite)
    print(f"run folder: {out} (load it with latentkit.load_vae('{out}'))")
    return 0

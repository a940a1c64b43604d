"""``latentkit train``: train (or resume, or fine-tune) a KL autoencoder with the latent-diffusion recipe.

Every :class:`latentkit.train.loop.TrainArgs` knob is a flag. Runs on one CPU or GPU as it is, and on several
GPUs or machines under ``accelerate launch -m latentkit.cli train ...``.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..train.loop import BUDGET_PROBE, TrainArgs

#: help text of each knob (units and ranges); the flags themselves are generated from TrainArgs
HELP = {
    "steps": "total optimizer steps of the run (a resumed run continues up to this)",
    "time_budget": f"minutes of training to fit the run into: the speed measured over steps {BUDGET_PROBE[0]}-"
                   f"{BUDGET_PROBE[1]} sets --steps (then at most --steps) and so the cosine schedule (0: off; "
                   "validation time not counted)",
    "batch_size": "crops per step (per process)",
    "crop": "crop side in pixels (a multiple of 8)",
    "lr": "peak AdamW learning rate",
    "min_lr_ratio": "with --schedule cosine: the final learning rate as a fraction of --lr",
    "schedule": "learning rate after warm-up: constant | cosine",
    "warmup": "linear learning-rate warm-up, in steps",
    "weight_decay": "AdamW weight decay",
    "grad_clip": "clip the autoencoder's gradient norm to this (0: off)",
    "rec_loss": "pixel loss: l1 | l2 (per pixel and channel, images in [-1, 1])",
    "perceptual_weight": "weight of the LPIPS term (0: off)",
    "perceptual_start": "step at which the LPIPS term switches on",
    "lpips_net": "LPIPS backbone: squeeze (shipped) | alex | vgg (need `latentkit fetch`)",
    "kl_weight": "weight of the KL term, in nats per latent element (a larger value is a beta-VAE)",
    "kl_warmup": "steps over which the KL weight ramps up from 0 (0: no ramp)",
    "free_bits": "nats per latent element and channel left unpenalised (against posterior collapse; 0: off)",
    "disc_start": "step at which the PatchGAN adversarial term switches on",
    "disc_weight": "factor on the adaptive adversarial weight",
    "disc_lr": "discriminator learning rate",
    "disc_width": "discriminator channels in its first layer",
    "disc_layers": "discriminator strided layers",
    "sample_posterior": "decode a posterior sample while training (--no-sample-posterior: the mean)",
    "denoise_sigma": "> 0: add Gaussian noise of this std (image range [0, 1]) to the input and reconstruct "
                     "the clean image",
    "ema_decay": "decay of the exponential moving average of the weights (the EMA is what gets exported)",
    "mixed_precision": "auto (bf16 autocast where the hardware has it) | bf16 | no",
    "channels_last": "channels-last memory format (faster convolutions on most hardware)",
    "compile": "torch.compile the autoencoder pass (slow start, faster steps)",
    "seed": "seed of the weights, crops and noise",
    "ckpt_every": "write a checkpoint every N steps",
    "val_every": "validate on --val every N steps (PSNR and LPIPS at full resolution, CSV and PNG grid)",
    "log_every": "write the training losses to log.csv every N steps",
    "keep": "checkpoints to keep besides the best one",
    "threads": "torch CPU threads (0: torch's default)",
}
CHOICES = {"schedule": ["constant", "cosine"], "rec_loss": ["l1", "l2"],
           "lpips_net": ["squeeze", "alex", "vgg"], "mixed_precision": ["auto", "bf16", "no"]}
#: fields with hand-written flags (or none)
SPECIAL = {"data", "out", "val", "config", "init", "decoder_only", "extra"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train, resume or fine-tune an autoencoder",
        description="Train a KL autoencoder: L1/L2 + LPIPS + KL + PatchGAN (hinge, adaptive weight). Writes "
                    "RUN_DIR/log.csv (losses, validation PSNR/LPIPS), RUN_DIR/val_step*.png (validation "
                    "grids: original | reconstruction) and RUN_DIR/checkpoints/ (load_vae loads the EMA "
                    "weights of a run folder). Multi-GPU: accelerate launch -m latentkit.cli train ...",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=TrainArgs.data,
                   help="folder of training images (searched recursively; a resumed run keeps its own)")
    p.add_argument("--val", help="folder of validation images (full resolution)")
    p.add_argument("--config", default=TrainArgs.config,
                   help="architecture: tiny | small | sd | path to an AutoencoderKL config.json")
    p.add_argument("--out", help="run folder (checkpoints, log.csv, validation grids)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or --out) exactly from its latest checkpoint; "
                        "flags given again override only --steps, the folders and the logging/checkpoint intervals")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out folder that already holds one (its checkpoints, log.csv "
                        "and validation grids are deleted); without it such a folder is refused")
    p.add_argument("--init", help="start from these weights (anything load_vae accepts): fine-tuning")
    p.add_argument("--decoder-only", action="store_true",
                   help="freeze the encoder so the latent space stays compatible (as SD's ft-MSE VAE)")
    for f in fields(TrainArgs):
        if f.name in SPECIAL:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=HELP[f.name])
        else:
            p.add_argument(flag, type=type(f.default), default=f.default, help=HELP[f.name],
                           choices=CHOICES.get(f.name))
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

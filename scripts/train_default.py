"""Train (or continue training) the shipped default model on ../shared/data/train.

    python scripts/train_default.py --out runs/default [--steps N | --minutes M]

Resumes from RUN/checkpoints when they exist; otherwise starts from the shipped weights/default EMA weights
when present (2 crops of 256 px a step, 100 warm-up steps to lr 2e-4, MSE + 0.2 x LPIPS from the start, then one
cosine learning-rate cycle over --steps, sized to fit one working session on 2 CPU cores; on a CUDA GPU 32 crops a
step, 200 warm-up steps to lr 3e-4), else from scratch. --minutes sizes the cycle to a wall-clock budget.
Export the result with `latentkit export weights/default --model runs/default --dtype fp16` (see
weights/default/MODEL_CARD.md).

    python scripts/train_default.py --phase codec --out runs/codec [--minutes M] [--disc-weight W]

tunes the decoder for the `.latent` codec instead: the encoder frozen (the latent space and scaling_factor stay
those of weights/default), the decoder fed the posterior mean quantized as the codec quantizes it at qualities
1-80 (10% of crops unquantized), MSE + 0.2 x LPIPS (+ the PatchGAN with --disc-weight > 0), from the shipped
weights. The shipped weights/codec are two such stages (weights/codec/README.md):

    python scripts/train_default.py --phase codec --out runs/codecA --minutes 88 --threads 1
    python scripts/train_default.py --phase codec-high --init runs/codecA --out runs/codecC --minutes 20
    latentkit export weights/codec --model runs/codecC --dtype fp16

the second gives the high rates back their share (qualities 16-100, 30% of crops unquantized, half the lr).
v0.8 (session 17) is two runs side by side, then the codec model rebuilt around the new encoder:

    python scripts/train_default.py --phase joint --out runs/whole8 --minutes 70 --threads 1 --steps 20000
    python scripts/train_default.py --phase codec-light --init weights/codec --out runs/codec8 --minutes 70 \
        --threads 1 --steps 20000
    latentkit export weights/default --model runs/whole8 --dtype fp16 --scaling-factor 0.47428
    python scripts/combine_weights.py weights/codec --encoder weights/default --decoder runs/codec8

(that model now ships as weights/codec-v0.8). v0.9 (sessions 21 and 23) is the joint phase twice more, the first
cycle's step-1,000 EMA weights kept, on 2 AVX2 cores in fp32:

    python scripts/train_default.py --phase joint --out runs/joint9 --minutes 70 --steps 20000
    latentkit export runs/j9 --model runs/joint9/checkpoints/step_0001000 --dtype fp16
    python scripts/train_default.py --phase joint --init runs/j9 --out runs/joint11 --minutes 105 --steps 20000
    latentkit export weights/default --model runs/joint11 --dtype fp16 --scaling-factor 0.47759

The codec model of session 19 trains its encoder too, through the
rounding, with the entropy coder's estimated bits priced at the codec's rate-distortion slope (its latents become
its own), from the session-17 codec model:

    python scripts/train_default.py --phase codec-rate --init weights/codec-v0.8 --out runs/cr19long --minutes 45 \
        --steps 20000 --threads 2
    latentkit export weights/codec --model runs/cr19long --dtype fp16

Capacity at equal wall time (session 22, not shipped: MODEL_CARD.md, "Capacity"), a resnet per block more, grown
from the shipped weights so that it starts as the same function:

    python scripts/grow_depth.py weights/default runs/grown10
    python scripts/train_default.py --phase joint --init runs/grown10 --out runs/deep10 --minutes 70 --steps 20000
    python scripts/train_default.py --phase joint-grown --init runs/grown10 --out runs/grown10b --minutes 45 \
        --steps 20000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from latentkit.model import DEFAULT_MODEL_DIR
from latentkit.train import checkpoint
from latentkit.train.args import TrainArgs
from latentkit.train.loop import bf16_supported, train

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"

# The recipe of the shipped weights: L1 first, LPIPS-squeeze from step 1500, the GAN much later.
RECIPE = dict(config="tiny", batch_size=8, crop=128, lr=5e-4, warmup=300, perceptual_weight=1.0,
              perceptual_start=1500, kl_weight=1e-6, disc_start=50000, ckpt_every=250, val_every=500, threads=2)
# Continuing from the shipped weights: a warm restart, then a cosine decay to lr / 20 (SGDR-style cycles, one
# per session), so every session ends on a low learning rate and its last checkpoint is worth shipping.
# From v0.4 on the cycles see 256x256 crops (2 per step: the same pixels per step as 8 x 128x128), so the
# decoder's mid-block attention and group norms are trained on larger fields, closer to full-size images.
# From v0.5 on they use SD's ft-MSE balance, MSE + 0.1 x LPIPS (with Adam, about L1 + 0.6 x LPIPS in relative
# gradient size at our error levels, and it weights the large errors that cost PSNR): with L1 + 1.0 x LPIPS
# Kodak PSNR had stalled for two cycles while LPIPS kept improving. Peak lr 2e-4 (3e-4 lost 0.5 dB of val PSNR
# in the first 500 steps of the v0.4 cycle before recovering). From v0.6 on MSE + 0.2 x LPIPS: v0.5 came within
# 0.04 dB of the PSNR target while its LPIPS stayed flat at weight 0.1; at 0.2 the v0.6 cycles improved both.
CONTINUE = dict(warmup=100, perceptual_start=0, schedule="cosine", min_lr_ratio=0.05, crop=256, batch_size=2,
                lr=2e-4, rec_loss="l2", perceptual_weight=0.2)
# The codec decoder (issue 16 item 4): decoder only, on latents quantized as the codec quantizes them; a gentler
# peak lr than a full cycle (the decoder starts close to what it should be).
CODEC = dict(decoder_only=True, sample_posterior=False, codec_qualities="1-80", codec_clean=0.1, warmup=100,
             perceptual_start=0, schedule="cosine", min_lr_ratio=0.05, crop=256, batch_size=2, lr=1e-4,
             rec_loss="l2", perceptual_weight=0.2)
# Its second stage, from the first: the first gave up 0.57 dB of the unquantized ceiling and lost at 0.1-0.15 bpp,
# so the high end gets its share back.
CODEC_HIGH = CODEC | dict(codec_qualities="16-100", codec_clean=0.3, lr=5e-5, warmup=50, min_lr_ratio=0.1)
# The plain decoder alone, continued on more data (issue 16 item 1: runs/train_extra from
# scripts/build_train_data.py): the encoder frozen, so weights/codec (whose encoder is v0.6's) and every stored
# latent stay valid; a low peak lr, as the 748-step restarts of session 12 lost 0.08 dB at 1e-4 with the encoder.
DECODER = CONTINUE | dict(decoder_only=True, lr=5e-5, warmup=50, min_lr_ratio=0.1)
# The encoder alone (session 16): the decoder frozen, so every stored latent decodes as before; the posterior mean
# decoded (not a sample), a low peak lr, and a lighter LPIPS weight than the whole-model cycles. Per-image gradient
# steps on v0.6 latents lift the decoded PSNR by 1.0-1.5 dB with the decoder unchanged (the amortization gap), so
# the encoder, not the decoder, leaves PSNR on the table. 300-step probes from v0.6 on val: LPIPS weight 0.2 (the
# cycles' balance) moves nothing; 0.05 lifts PSNR, MS-SSIM, SSIMULACRA2 and Butteraugli and costs 3% LPIPS; 0 lifts
# them most and costs 45% LPIPS (MODEL_CARD.md).
ENCODER = CONTINUE | dict(encoder_only=True, sample_posterior=False, lr=3e-5, warmup=20, min_lr_ratio=0.1,
                          perceptual_weight=0.05)
# Encoder and decoder together at the encoder phase's balance (session 17, v0.8): 300-step probes from v0.7 on val
# improved every metric, LPIPS included, the whole model (+0.05 dB) more than the decoder alone (+0.02 dB).
JOINT = ENCODER | dict(encoder_only=False)
# The codec decoder again, on the current encoder's latents, at the same lighter balance (from --init weights/codec).
CODEC_LIGHT = CODEC_HIGH | dict(lr=3e-5, warmup=20, perceptual_weight=0.05)
# The codec model's encoder and decoder together (session 18 probe): the encoder learns, through the codec's
# rounding (straight-through), latents that survive quantization; the codec model's latents then drift from
# the default model's (from --init weights/codec).
CODEC_JOINT = CODEC_LIGHT | dict(decoder_only=False)
# The same with the bits priced (session 19): the encoder also learns latents the entropy coder spends fewer bits on,
# at the codec's own rate-distortion slope (latentkit.codec.rate); the session-18 probe without it bought
# distortion with bits and collapsed at quality 1.
CODEC_RATE = CODEC_JOINT | dict(codec_rate_weight=1.0)
# A model one resnet per block deeper (scripts/grow_depth.py from the tiny config: the new resnets start as the
# identity): the joint phase with the new resnets at 20x its learning rate. At 1x (session 22, 902 steps) their
# weights stayed at ~0.5% of their neighbours' scale, so that run trained the old model at 1.23x the cost.
GROWN_NEW_RESNETS = r"^(encoder\.down_blocks\.\d+\.resnets\.1|decoder\.up_blocks\.\d+\.resnets\.2)\."
JOINT_GROWN = JOINT | dict(lr_scale=f"{GROWN_NEW_RESNETS}=20")
PHASES = {"continue": CONTINUE, "decoder": DECODER, "encoder": ENCODER, "joint": JOINT, "codec": CODEC,
          "codec-high": CODEC_HIGH, "codec-light": CODEC_LIGHT, "codec-joint": CODEC_JOINT,
          "codec-rate": CODEC_RATE, "joint-grown": JOINT_GROWN}
# On a CUDA GPU (v0.6: an H100 lent for a few minutes): 16x the crops per step, so less gradient noise and a
# higher peak lr, with a longer warm-up as AdamW's moments start from zero.
CONTINUE_GPU = dict(batch_size=32, lr=3e-4, warmup=200, ckpt_every=500)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "runs" / "default"))
    ap.add_argument("--data", default=str(SHARED / "train"))
    ap.add_argument("--val", default=str(SHARED / "val"), help="validation images ('': none)")
    ap.add_argument("--steps", type=int, default=2000,
                    help="total steps of the run (default 2000: about 2 hours on 2 AVX2 cores in fp32, "
                         "half an hour where bf16 is native)")
    ap.add_argument("--minutes", type=float, default=0.0,
                    help="fit the run into this many minutes of training: its speed, measured over its first "
                         "steps, sets the number of steps (at most --steps)")
    ap.add_argument("--phase", choices=tuple(PHASES), default="continue",
                    help="continue: a cycle of the whole model; decoder: a cycle of the decoder alone; encoder: a "
                         "cycle of the encoder alone (the decoder frozen); joint: encoder and decoder at the "
                         "encoder phase's balance (v0.8); codec: tune the decoder for the .latent codec; "
                         "codec-high: its second stage (from --init, the first stage's run); codec-light: the "
                         "codec decoder again at the joint phase's balance (from --init weights/codec); "
                         "codec-joint: codec-light with the encoder learning through the rounding too; "
                         "codec-rate: codec-joint with the bits priced at the codec's rate-distortion slope; "
                         "joint-grown: joint for a model deepened by scripts/grow_depth.py (from --init), its new "
                         "resnets at 20x the learning rate")
    ap.add_argument("--init", default=str(DEFAULT_MODEL_DIR),
                    help="weights a new run starts from (default: the shipped weights/default)")
    ap.add_argument("--disc-weight", type=float, default=0.0,
                    help="> 0: the PatchGAN on from the first step, at this factor on its adaptive weight")
    ap.add_argument("--disc-warmup", type=int, default=0,
                    help="with --disc-weight: steps the discriminator trains alone before the autoencoder sees it")
    ap.add_argument("--rate-weight", type=float, default=None,
                    help="with --phase codec-rate: the factor on the codec's rate-distortion slope (default 1)")
    ap.add_argument("--qualities", default=None,
                    help="with a codec phase: the codec qualities its crops are quantized at, e.g. 1-100 (default: "
                         "the phase's own range)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args()
    out = Path(args.out)
    resume = (out / checkpoint.CKPT_DIR / checkpoint.LATEST).is_file()
    targs = TrainArgs(data=args.data, val=args.val or None, out=str(out), steps=args.steps,
                      time_budget=args.minutes, **(RECIPE | {"threads": args.threads}))
    # channels_last pays off with bf16 autocast (~15%); in plain fp32 on AVX2 it is ~10% slower
    targs.channels_last = bf16_supported()
    if not resume and Path(args.init).exists():
        targs.init = args.init
        for k, v in (PHASES[args.phase] | (CONTINUE_GPU if torch.cuda.is_available() else {})).items():
            setattr(targs, k, v)
        if args.rate_weight is not None:
            targs.codec_rate_weight = args.rate_weight
        if args.qualities is not None:
            targs.codec_qualities = args.qualities
        if args.disc_weight > 0:
            targs.disc_start, targs.disc_weight, targs.disc_warmup = 0, args.disc_weight, args.disc_warmup
    train(targs, resume=resume)


if __name__ == "__main__":
    main()

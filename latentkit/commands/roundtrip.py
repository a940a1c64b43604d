"""``latentkit roundtrip IN -o OUT``: encode an image to latents and decode it back, write it, print PSNR."""

from __future__ import annotations

import argparse
import json
import time

import torch

from ..io import DEFAULT_MAX_PIXELS, Image, check_output, image_format, read_image, write_image
from ..metrics.psnr import psnr
from ..model import load_vae, reconstruct


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--model`` and ``--allow-pickle``, as every command that loads a VAE spells them."""
    p.add_argument("--model", default=None, metavar="M",
                   help="anything latentkit.load_vae accepts: a diffusers folder, a pipeline folder with vae/, a "
                        "training run, or an SD/LDM .safetensors file (default: the shipped weights/default)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow loading .ckpt/.pt pickle checkpoints (they can run code: only trusted files)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "roundtrip", help="reconstruct an image through the autoencoder and print its PSNR",
        description="Encode IN to latents, decode them, and write the reconstruction to OUT (atomically; OUT "
                    "may not be IN). Alpha is copied exactly, grayscale stays grayscale, 16-bit grayscale stays "
                    "16-bit where OUT's format allows (see README \"Image I/O\"). PSNR (dB, peak 1) is measured "
                    "on what is written: colour only, at the source's bit depth.")
    p.add_argument("input", metavar="IN", help="input image (any format and mode Pillow reads)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output image; the format comes from the suffix (.png keeps everything)")
    add_model_args(p)
    p.add_argument("--sample", action="store_true",
                   help="decode a random draw from the posterior instead of its mean")
    p.add_argument("--seed", type=int, default=0, help="seed of the --sample draw (default: %(default)s)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse larger images, a decompression-bomb guard (default: %(default)s; 0: no limit)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.set_defaults(func=run)


def written_psnr(src: Image, rec: Image) -> float:
    """PSNR in dB between the colour of two images as they are written: the grey channel for grayscale,
    quantised to 8 bits for 8-bit sources."""
    x, y = src.batch(), rec.batch()
    if src.grayscale:
        x, y = x[:, :1], y.mean(1, keepdim=True)
    return float(psnr(x, y, quantize=src.bit_depth == 8)[0])


def run(args: argparse.Namespace) -> int:
    check_output(args.output, inputs=(args.input,))
    image_format(args.output)
    src = read_image(args.input, max_pixels=args.max_pixels or None)
    vae = load_vae(args.model, allow_pickle=args.allow_pickle)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed) if args.sample else None
    rgb = reconstruct(vae, src.batch(), sample=args.sample, generator=gen)[0]
    seconds = time.perf_counter() - t0
    rec = Image(rgb, src.alpha, src.grayscale, src.bit_depth, src.icc_profile)
    write_image(rec, args.output, inputs=(args.input,))
    value = written_psnr(src, rec)
    if args.json:
        print(json.dumps(dict(input=str(args.input), output=str(args.output), model=args.model or "default",
                              width=src.width, height=src.height, sample=args.sample, psnr_db=round(value, 4),
                              seconds=round(seconds, 3))))
    else:
        print(f"{args.output}: {src.width}x{src.height}, PSNR {value:.2f} dB ({seconds:.2f} s)")
    return 0

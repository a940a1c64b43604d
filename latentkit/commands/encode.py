"""``latentkit encode IN -o OUT.latent``: compress an image to a `.latent` file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..io import DEFAULT_MAX_PIXELS, atomic_write, read_image
from .roundtrip import add_model_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "encode", help="compress an image to a .latent file",
        description="Compress an image with the VAE codec. Prints the file size and bits per pixel "
                    "(whole file bytes x 8 / (width x height)).")
    p.add_argument("input", help="image file (PNG, JPEG, WebP, ...)")
    p.add_argument("-o", "--output", required=True, help="output .latent file (written atomically)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--quality", type=int, default=75,
                      help="1..100, higher is better; every 16 points halve the quantization steps, which are set "
                           "so that each latent channel adds the same pixel error (default 75)")
    rate.add_argument("--bpp", type=float, help="target bits per pixel: the highest quality at or below it")
    add_model_args(p)
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse larger images (decompression-bomb guard, default {DEFAULT_MAX_PIXELS})")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..codec import compress
    from ..model import load_vae

    image = read_image(args.input, args.max_pixels)
    vae = load_vae(args.model, allow_pickle=args.allow_pickle)
    data = compress(image, vae, quality=args.quality, bpp=args.bpp)
    atomic_write(args.output, lambda tmp: Path(tmp).write_bytes(data), inputs=(args.input,))
    report = {"output": str(args.output), "bytes": len(data), "bpp": len(data) * 8 / (image.width * image.height),
              "width": image.width, "height": image.height}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.output}: {report['bytes']} bytes, {report['bpp']:.4f} bpp ({image.width}x{image.height})")
    return 0

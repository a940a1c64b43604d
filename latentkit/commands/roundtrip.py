"""``latentkit roundtrip IN -o OUT``: encode an image to latents and decode it back, write it, print PSNR."""

from __future__ import annotations

import argparse
import time

from . import _args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "roundtrip", help="reconstruct an image through the autoencoder and print its PSNR",
        description="Encode IN to latents, decode them, and write the reconstruction to OUT (atomically; OUT "
                    "may not be IN). Alpha is copied exactly, grayscale stays grayscale, 16-bit grayscale stays "
                    "16-bit where OUT's format allows (see README \"Image I/O\"). PSNR (dB, peak 1) is measured "
                    "on what is written: colour only, at the source's bit depth. IN and OUT may be - (stdin / "
                    "stdout; stdout gets a PNG).")
    p.add_argument("input", metavar="IN", help="input image (any format and mode Pillow reads), or -")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output image; the format comes from the suffix (.png keeps everything); - writes PNG to "
                        "stdout")
    _args.add_model(p)
    p.add_argument("--sample", action="store_true",
                   help="decode a random draw from the posterior instead of its mean")
    p.add_argument("--seed", type=int, default=0, help="seed of the --sample draw (default: %(default)s)")
    _args.add_max_pixels(p)
    _args.add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import Image, image_bytes, read_image

    fmt = _args.check_paths(args, image_output=True)

    import torch  # and diffusers from here on

    from ..metrics.psnr import written_psnr
    from ..model import reconstruct

    source = _args.read_input(args.input) if args.input == _args.STDIO else args.input
    src = read_image(source, max_pixels=_args.max_pixels(args))
    vae = _args.load_model(args)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed) if args.sample else None
    rgb = reconstruct(vae, src.batch(), sample=args.sample, generator=gen)[0]
    seconds = time.perf_counter() - t0
    rec = Image(rgb, src.alpha, src.grayscale, src.bit_depth, src.icc_profile)
    _args.write_output(args.output, image_bytes(rec, fmt), inputs=(args.input,))
    value = written_psnr(src, rec)
    figures = dict(input=args.input, output=args.output, model=args.model or "default", width=src.width,
                   height=src.height, sample=args.sample, psnr_db=round(value, 4), seconds=round(seconds, 3))
    _args.report(args, figures, f"{args.output}: {src.width}x{src.height}, PSNR {value:.2f} dB ({seconds:.2f} s)")
    return 0

"""``latentkit roundtrip IN -o OUT``: encode an image to latents and decode it back, write it, print PSNR."""

from __future__ import annotations

import argparse
import time

from . import _args, _batch


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "roundtrip", help="reconstruct an image through the autoencoder and print its PSNR",
        description="Encode IN to latents, decode them, and write the reconstruction to OUT (atomically; OUT "
                    "may not be IN). Alpha is copied exactly, grayscale stays grayscale, 16-bit grayscale stays "
                    "16-bit where OUT's format allows (see README \"Image I/O\"). PSNR (dB, peak 1) is measured "
                    "on what is written: colour only, at the source's bit depth. IN and OUT may be - (stdin / "
                    "stdout; stdout gets a PNG); several inputs or a folder go to an output folder.")
    _batch.add_batch_args(p, "images (any format and mode Pillow reads)", image_output=True)
    _args.add_model(p)
    p.add_argument("--sample", action="store_true",
                   help="decode a random draw from the posterior instead of its mean")
    p.add_argument("--seed", type=int, default=0, help="seed of the --sample draw (default: %(default)s)")
    _args.add_max_pixels(p)
    _args.add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import Image, image_bytes, image_format, read_image

    pairs = _batch.plan(args, "." + args.format.lstrip("."))
    if args.single:
        _args.check_paths(args, image_output=True)

    import torch  # and the model from here on

    from ..metrics.psnr import written_psnr
    from ..model import reconstruct

    def read(src: str):
        return read_image(_args.read_input(src) if src == _args.STDIO else src, _args.max_pixels(args))

    first = {args.input: read(args.input)} if args.single else {}  # a bad image fails before the model loads
    vae = _args.load_model(args)

    def work(src: str, dst: str) -> tuple[dict, str]:
        fmt = "PNG" if dst == _args.STDIO else image_format(dst)
        image = first.pop(src, None) or read(src)
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(args.seed) if args.sample else None
        rgb = reconstruct(vae, image.batch(), sample=args.sample, generator=gen)[0]
        seconds = time.perf_counter() - t0
        rec = Image(rgb, image.alpha, image.grayscale, image.bit_depth, image.icc_profile)
        _args.write_output(dst, image_bytes(rec, fmt), inputs=(src,))
        value = written_psnr(image, rec)
        figures = dict(input=src, output=dst, model=args.model or "default", width=image.width, height=image.height,
                       sample=args.sample, psnr_db=round(value, 4), seconds=round(seconds, 3))
        return figures, f"{dst}: {image.width}x{image.height}, PSNR {value:.2f} dB ({seconds:.2f} s)"

    return _batch.run_all(args, pairs, work)

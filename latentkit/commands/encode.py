"""``latentkit encode IN -o OUT.latent``: compress an image to a `.latent` file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import _args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "encode", help="compress an image to a .latent file",
        description="Compress an image with the VAE codec. Prints the file size, bits per pixel (whole file "
                    "bytes x 8 / (width x height)), the quality used, the PSNR (dB, 8-bit RGB) of what `latentkit "
                    "decode` will give back, and the time taken. IN and OUT may be - (stdin / stdout).")
    p.add_argument("input", metavar="IN", help="image file (PNG, JPEG, WebP, ...), or - for standard input")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output .latent file (written atomically), or - for standard output")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--quality", type=int, default=75,
                      help="1..100, higher is better; every 16 points halve the quantization steps, which are set "
                           "so that each latent channel adds the same pixel error (default 75)")
    rate.add_argument("--bpp", type=float, help="target bits per pixel: the highest quality at or below it")
    _args.add_model(p)
    _args.add_max_pixels(p)
    p.add_argument("--no-psnr", action="store_true",
                   help="skip the check decode that measures the PSNR (saves one decoder pass)")
    _args.add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from PIL import Image as PILImage

    from ..codec import quant
    from ..errors import LatentkitError

    if Path(args.output).suffix.lower() in PILImage.registered_extensions():
        raise LatentkitError(f"encode writes a .latent file, but {args.output} names an image; use -o "
                             f"{Path(args.output).with_suffix('.latent')} (or `latentkit roundtrip` for an image)")
    if args.bpp is None:
        quant.check_quality(args.quality)
    else:
        quant.check_bpp(args.bpp)
    _args.check_paths(args)

    from ..codec import LatentEncoder, decompress  # torch and diffusers from here on
    from ..io import read_image
    from ..metrics.psnr import written_psnr

    source = _args.read_input(args.input) if args.input == _args.STDIO else args.input
    image = read_image(source, _args.max_pixels(args))
    vae = _args.load_model(args)
    t0 = time.perf_counter()
    encoder = LatentEncoder(image, vae)
    quality, data = (args.quality, encoder.pack(args.quality)) if args.bpp is None else encoder.fit_bpp(args.bpp)
    seconds = time.perf_counter() - t0
    _args.write_output(args.output, data, inputs=(args.input,))
    value = None if args.no_psnr else written_psnr(image, decompress(data, vae))
    figures = {"input": args.input, "output": args.output, "bytes": len(data),
               "bpp": len(data) * 8 / (image.width * image.height), "quality": quality, "width": image.width,
               "height": image.height, "psnr_db": None if value is None else round(value, 4),
               "seconds": round(seconds, 3)}
    psnr_text = "" if value is None else f", PSNR {value:.2f} dB"
    _args.report(args, figures, f"{args.output}: {len(data)} bytes, {figures['bpp']:.4f} bpp, quality {quality} "
                                f"({image.width}x{image.height}{psnr_text}, {seconds:.2f} s)")
    return 0

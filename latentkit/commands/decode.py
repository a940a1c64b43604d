"""``latentkit decode IN.latent -o OUT.png``: decompress a `.latent` file to an image."""

from __future__ import annotations

import argparse
import time

from . import _args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "decode", help="decompress a .latent file to an image",
        description="Decode a .latent file. Alpha, ICC profile, grayscale and 16-bit are restored; the model "
                    "must be the one the file was made with (its 8-byte id is checked). IN and OUT may be - "
                    "(stdin / stdout; stdout gets a PNG).")
    p.add_argument("input", metavar="IN", help=".latent file, or - for standard input")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output image; the format follows the suffix (.png, .webp, ...); - writes PNG to stdout")
    _args.add_model(p)
    _args.add_max_pixels(p, "files that declare")
    _args.add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..codec import format
    from ..io import image_bytes

    fmt = _args.check_paths(args, image_output=True)
    data = _args.read_input(args.input)
    format.parse(data, _args.max_pixels(args))  # a damaged or foreign file fails here, before the model loads

    from ..codec import decompress  # torch and diffusers from here on

    vae = _args.load_model(args)
    t0 = time.perf_counter()
    image = decompress(data, vae, max_pixels=_args.max_pixels(args))
    seconds = time.perf_counter() - t0
    _args.write_output(args.output, image_bytes(image, fmt), inputs=(args.input,))
    figures = {"input": args.input, "output": args.output, "width": image.width, "height": image.height,
               "bytes": len(data), "seconds": round(seconds, 3)}
    _args.report(args, figures, f"{args.output}: {image.width}x{image.height} ({seconds:.2f} s)")
    return 0

"""``latentkit decode IN.latent -o OUT.png``: decompress a `.latent` file to an image."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LatentkitError
from ..io import DEFAULT_MAX_PIXELS, write_image
from .roundtrip import add_model_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "decode", help="decompress a .latent file to an image",
        description="Decode a .latent file. Alpha, ICC profile, grayscale and 16-bit are restored; the model "
                    "must be the one the file was made with (its 8-byte id is checked).")
    p.add_argument("input", help=".latent file")
    p.add_argument("-o", "--output", required=True, help="output image; the format follows the suffix (.png, ...)")
    add_model_args(p)
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse files that declare more pixels (default {DEFAULT_MAX_PIXELS})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..codec import decompress
    from ..model import load_vae

    path = Path(args.input)
    if not path.is_file():
        raise LatentkitError(f"input file {path} does not exist")
    image = decompress(path.read_bytes(), load_vae(args.model, allow_pickle=args.allow_pickle),
                       max_pixels=args.max_pixels)
    write_image(image, args.output, inputs=(args.input,))
    print(f"{args.output}: {image.width}x{image.height}")
    return 0

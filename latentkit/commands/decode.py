"""``latentkit decode IN.latent -o OUT.png``: decompress a `.latent` file to an image."""

from __future__ import annotations

import argparse
import time

from . import _args, _batch


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "decode", help="decompress a .latent file to an image",
        description="Decode a .latent file. Alpha, ICC profile, grayscale and 16-bit are restored; the model "
                    "must be the one the file was made with (its 8-byte id is checked). IN and OUT may be - "
                    "(stdin / stdout; stdout gets a PNG); several inputs or a folder go to an output folder "
                    "(a.latent -> OUT/a.png).")
    _batch.add_batch_args(p, ".latent files", image_output=True)
    _args.add_model(p)
    _args.add_max_pixels(p, "files that declare")
    _args.add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..codec import format
    from ..io import image_bytes, image_format

    pairs = _batch.plan(args, "." + args.format.lstrip("."), input_suffix=".latent")
    if args.single:  # a bad output name, a damaged or foreign file fail here, before the model loads
        _args.check_paths(args, image_output=True)
        format.parse(_args.read_input(args.input), _args.max_pixels(args))

    from ..codec import decompress  # torch and diffusers from here on

    vae = _args.load_model(args)

    def work(src: str, dst: str) -> tuple[dict, str]:
        data = _args.read_input(src)
        t0 = time.perf_counter()
        image = decompress(data, vae, max_pixels=_args.max_pixels(args))
        seconds = time.perf_counter() - t0
        _args.write_output(dst, image_bytes(image, "PNG" if dst == _args.STDIO else image_format(dst)), inputs=(src,))
        figures = {"input": src, "output": dst, "width": image.width, "height": image.height, "bytes": len(data),
                   "seconds": round(seconds, 3)}
        return figures, f"{dst}: {image.width}x{image.height} ({seconds:.2f} s)"

    return _batch.run_all(args, pairs, work)

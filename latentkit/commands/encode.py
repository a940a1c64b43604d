"""``latentkit encode IN -o OUT.latent``: compress an image to a `.latent` file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import _args, _batch


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "encode", help="compress an image to a .latent file",
        description="Compress an image with the VAE codec. Prints the file size, bits per pixel (whole file "
                    "bytes x 8 / (width x height)), the quality used and the time taken; with --psnr also the PSNR "
                    "(dB, 8-bit RGB) of what `latentkit decode` will give back. The file names the model it needs by "
                    "an 8-byte id of its weights. IN and OUT may be - (stdin / stdout); several inputs or a folder "
                    "go to an output folder (a.png -> OUT/a.latent), one line (or --json object) per file.")
    _batch.add_batch_args(p, "images (PNG, JPEG, WebP, ...)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--quality", type=int, default=75,
                      help="1..100, higher is better; every 16 points halve the quantization steps, which are set "
                           "so that each latent channel adds the same pixel error (default 75)")
    rate.add_argument("--bpp", type=float, help="target bits per pixel: the highest quality at or below it")
    _args.add_model(p, "'codec', the shipped codec model (encoder and decoder trained on quantized latents, "
                       "with the bits priced); 'default' makes files for the plain autoencoder")
    _args.add_max_pixels(p)
    p.add_argument("--refine", type=int, default=0, metavar="STEPS",
                   help="refine the latent by STEPS gradient steps through the decoder at the chosen quantization "
                        "before coding it (20 is a good start; each step is a decoder pass with gradients, so it is "
                        "slower; the file is an ordinary .latent file and decodes the same way; default 0: off; with "
                        "--bpp every quality tried is refined)")
    p.add_argument("--psnr", action=argparse.BooleanOptionalAction, default=False,
                   help="decode the written file once and print its PSNR against the input: one decoder pass, "
                        "which takes longer than the encode itself (default off, as in cjxl, avifenc and CompressAI's "
                        "codec; `latentkit roundtrip` and `latentkit bench rd` measure quality too)")
    _args.add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from PIL import Image as PILImage

    from ..codec import quant
    from ..errors import LatentkitError

    quant.check_refine_steps(args.refine)
    if args.bpp is None:
        quant.check_quality(args.quality)
    else:
        quant.check_bpp(args.bpp)
    pairs = _batch.plan(args, ".latent")
    out = pairs[0][1]
    if args.single:
        if Path(out).suffix.lower() in PILImage.registered_extensions():
            raise LatentkitError(f"encode writes a .latent file, but {out} names an image; use -o "
                                 f"{Path(out).with_suffix('.latent')} (or `latentkit roundtrip` for an image)")
        _args.check_paths(args)

    from ..codec import LatentEncoder, decompress  # torch from here on
    from ..io import read_image
    from ..metrics.psnr import written_psnr

    def read(src: str):
        return read_image(_args.read_input(src) if src == _args.STDIO else src, _args.max_pixels(args))

    first = {args.input: read(args.input)} if args.single else {}  # a bad image fails before the model loads
    vae = _args.load_model(args, default="codec")

    def work(src: str, dst: str) -> tuple[dict, str]:
        image = first.pop(src, None) or read(src)
        t0 = time.perf_counter()
        encoder = LatentEncoder(image, vae, refine_steps=args.refine, progress=args.single)
        quality, data = (args.quality, encoder.pack(args.quality)) if args.bpp is None else encoder.fit_bpp(args.bpp)
        seconds = time.perf_counter() - t0
        _args.write_output(dst, data, inputs=(src,))
        value = written_psnr(image, decompress(data, vae)) if args.psnr else None
        figures = {"input": src, "output": dst, "bytes": len(data), "bpp": len(data) * 8 / (image.width * image.height),
                   "quality": quality, "refine_steps": args.refine, "width": image.width, "height": image.height,
                   "psnr_db": None if value is None else round(value, 4), "seconds": round(seconds, 3)}
        psnr_text = "" if value is None else f", PSNR {value:.2f} dB"
        return figures, (f"{dst}: {len(data)} bytes, {figures['bpp']:.4f} bpp, quality {quality} "
                         f"({image.width}x{image.height}{psnr_text}, {seconds:.2f} s)")

    return _batch.run_all(args, pairs, work)

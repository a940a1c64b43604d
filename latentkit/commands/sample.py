"""``latentkit sample -o grid.png``: decode draws from the prior N(0, I) in the unscaled latent space."""

from __future__ import annotations

import argparse
import math

from . import _args

#: the downsampling factor of the SD layout, checked before the model loads (the model's own after)
FACTOR = 8


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample", help="decode draws from the prior N(0, I): what the KL term buys",
        description="Draw --n latents from N(0, T^2 I) in the unscaled latent space (T: --temperature), decode "
                    "them and write them as one grid image. A VAE with a strong KL term decodes such draws to "
                    "image-like pictures; SD's VAE and latentkit's default (KL weight 1e-6 per latent element) do "
                    "not: their latents have channel means far from 0, stds of 1-3 and spatial structure, with "
                    "posteriors a few thousandths wide, so white N(0, I) noise is nothing the decoder saw and "
                    "comes out as low-contrast coloured speckle and blotches, no scenes. That is expected: such "
                    "a VAE is a compressor for a diffusion model to sample in (`latentkit latent-stats` shows the "
                    "gap per channel).")
    p.add_argument("-o", "--output", required=True, metavar="GRID", help="the grid image file")
    p.add_argument("--n", type=int, default=16, metavar="N", help="draws (1..256; default: %(default)s)")
    p.add_argument("--size", default="128x128", metavar="HxW",
                   help="size of each draw in pixels, height x width (or one number), multiples of 8; at most "
                        "4096 x 4096 pixels in all (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="standard deviation of the prior draws (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default: %(default)s)")
    p.add_argument("--columns", type=int, default=None, metavar="C", help="grid columns (default: about sqrt(n))")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _args.add_model(p)
    _args.add_json(p)
    p.set_defaults(func=run)


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` or ``"S"`` -> (height, width), positive multiples of 8; one-line errors otherwise."""
    from ..errors import LatentkitError

    parts = text.lower().split("x")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise LatentkitError(f"--size {text}: expected HxW (e.g. 128x192) or one number")
    h, w = values if len(values) == 2 else values * 2
    if h < FACTOR or w < FACTOR or h % FACTOR or w % FACTOR:
        raise LatentkitError(f"--size {text}: height and width must be positive multiples of {FACTOR}")
    return h, w


def run(args: argparse.Namespace) -> int:
    from ..errors import LatentkitError
    from ..io import image_format

    h, w = parse_size(args.size)
    if args.n < 1:
        raise LatentkitError(f"--n must be at least 1, got {args.n}")
    if args.columns is not None and args.columns < 1:
        raise LatentkitError(f"--columns must be at least 1, got {args.columns}")
    if args.output == _args.STDIO:
        raise LatentkitError("sample writes a file; give a file name, not -")
    fmt = image_format(args.output)
    _args.check_output(args.output)
    _args.check_new_output(args.output, args.overwrite)

    import torch

    from ..latent import grid, sample_prior
    from ..latent._images import png_bytes
    from ..latent.prior import check_request

    check_request(args.n, h, w, args.temperature, FACTOR)  # before the model loads (it checks its own factor)
    vae = _args.load_model(args)
    images = sample_prior(vae, args.n, h, w, args.temperature, torch.Generator().manual_seed(args.seed))
    cols = args.columns or math.ceil(math.sqrt(args.n))
    _args.write_output(args.output, png_bytes(grid(images, cols), fmt))
    spread = float(images.std(0).mean())  # how much the draws differ from each other, per pixel
    figures = dict(output=args.output, model=args.model or "default", n=args.n, height=h, width=w,
                   temperature=args.temperature, seed=args.seed, pixel_mean=round(float(images.mean()), 4),
                   pixel_std=round(float(images.std()), 4), std_across_draws=round(spread, 4))
    _args.report(args, figures, f"{args.output}: {args.n} prior draws of {h}x{w} (T = {args.temperature:g}); pixel "
                                f"mean {figures['pixel_mean']:.3f}, std {figures['pixel_std']:.3f}")
    return 0

"""``latentkit latent-stats DIR``: per-channel statistics of the posterior, KL per channel, correlations."""

from __future__ import annotations

import argparse
import json

from . import _args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "latent-stats", help="per-channel latent statistics: KL in nats, mean/std, correlations, scaling factor",
        description="Encode the images of DIR (searched recursively; RGB) and print, per latent channel: mean and "
                    "std of the posterior means (mu) and of posterior samples (z), the mean posterior std, and the "
                    "mean KL(q(z|x) || N(0,1)) per latent element in nats: which channels carry information "
                    "(posterior collapse shows as ~0 nats; a weak KL term lets it grow to several nats). Also the "
                    "channel correlation matrix of mu and the scaling_factor the samples imply (1 / their pooled "
                    "std, as `latentkit scale-factor`).")
    p.add_argument("data", metavar="DIR", help="folder of images")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="use at most N images (sorted by path)")
    p.add_argument("--crop", type=int, default=None, metavar="PX",
                   help="centre-crop each image to at most PX x PX pixels first (faster on large images)")
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior samples (default: %(default)s)")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="also plot KL per channel and the correlations")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _args.add_model(p)
    _args.add_json(p, "the statistics")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import LatentkitError
    from ..io import image_format, list_images

    if args.limit is not None and args.limit < 1:
        raise LatentkitError("--limit must be at least 1")
    if args.crop is not None and args.crop < 8:
        raise LatentkitError("--crop must be at least 8 px")
    list_images(args.data, recursive=True, limit=1)  # a missing or empty folder fails before the model loads
    if args.plot:
        image_format(args.plot)
        _args.check_output(args.plot)
        _args.check_new_output(args.plot, args.overwrite)

    from ..latent.stats import latent_stats, plot, table

    vae = _args.load_model(args)
    stats = latent_stats(vae, args.data, limit=args.limit, crop=args.crop, seed=args.seed, progress=not args.quiet)
    if args.plot:
        plot(stats, args.plot)
    figures = dict(data=args.data, model=args.model or "default", crop=args.crop, **stats.as_dict())
    print(json.dumps(figures) if args.json else table(stats) + (f"\nwrote {args.plot}" if args.plot else ""))
    return 0

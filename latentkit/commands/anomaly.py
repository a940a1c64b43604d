"""``latentkit anomaly IN... -o maps/``: reconstruction-error heatmaps and image-level anomaly scores."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import _args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "anomaly", help="reconstruction-error heatmaps and anomaly scores (optionally against normal images)",
        description="Reconstruct each input through the autoencoder and write its error map drawn over the image "
                    "(OUT/<name>.png), with an image-level score (higher: more anomalous). --metric l2: per-pixel "
                    "squared error (mean of R, G, B; images in [0, 1]), score = its mean (the MSE); lpips: the "
                    "LPIPS-squeeze spatial map, score = the LPIPS distance. --threshold-from DIR scores a folder of "
                    "normal images and sets the threshold at their --percentile; inputs above it are reported "
                    "anomalous. Maps of one run share one colour scale (--vmax, default the largest 99th "
                    "percentile of the run's maps). Inputs: RGB images (no alpha, not grayscale) or folders of "
                    "them, at least 8x8 px (17x17 for lpips).")
    p.add_argument("inputs", nargs="+", metavar="IN", help="images, or folders of images")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the maps (created if missing)")
    p.add_argument("--metric", choices=("l2", "lpips"), default="l2", help="error measure (default: %(default)s)")
    p.add_argument("--threshold-from", default=None, metavar="DIR",
                   help="folder of normal images (searched recursively) whose scores set the threshold")
    p.add_argument("--percentile", type=float, default=None, metavar="P",
                   help="with --threshold-from: the threshold is this percentile of the normal scores (0 < P <= "
                        "100; default 95)")
    p.add_argument("--vmax", type=float, default=None, help="error shown at full colour (default: from the maps)")
    p.add_argument("--panel", action="store_true",
                   help="write input | reconstruction | map side by side instead of the map alone")
    p.add_argument("--overwrite", action="store_true", help="replace existing map files")
    _args.add_model(p)
    _args.add_max_pixels(p)
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per input (input, output, metric, score; threshold and anomalous "
                        "with --threshold-from) instead of text")
    p.set_defaults(func=run)


def _inputs(specs: list[str]) -> list[Path]:
    from ..errors import LatentkitError
    from ..io import list_images

    files: list[Path] = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            files += list_images(p, recursive=True)
        elif p.is_file():
            files.append(p)
        else:
            raise LatentkitError(f"input {p} does not exist")
    names: dict[str, Path] = {}
    for f in files:
        if f.stem in names and names[f.stem] != f:
            raise LatentkitError(f"inputs {names[f.stem]} and {f} would both write {f.stem}.png; give them "
                                 "different names or run twice")
        names[f.stem] = f
    return list(names.values())


def run(args: argparse.Namespace) -> int:
    from ..errors import LatentkitError
    from ..io import list_images

    if args.percentile is not None and args.threshold_from is None:
        raise LatentkitError("--percentile needs --threshold-from DIR (the normal images)")
    percentile = 95.0 if args.percentile is None else args.percentile
    if not 0 < percentile <= 100:
        raise LatentkitError(f"--percentile must be in (0, 100], got {percentile}")
    if args.vmax is not None and not args.vmax > 0:
        raise LatentkitError(f"--vmax must be positive, got {args.vmax}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise LatentkitError(f"output {out} exists and is not a folder")
    if not out.parent.is_dir():
        raise LatentkitError(f"output folder {out.parent} does not exist")
    files = _inputs(args.inputs)
    normal = list_images(args.threshold_from, recursive=True) if args.threshold_from else []
    if not args.overwrite:
        for f in files:
            _args.check_new_output(str(out / f"{f.stem}.png"), False)

    from ..latent._images import read_rgb
    from ..metrics.lpips import MIN_SIDE

    min_side = MIN_SIDE["squeeze"] if args.metric == "lpips" else 8
    images = [read_rgb(f, _args.max_pixels(args), min_side) for f in files]  # all checked before the model loads
    normal_images = [read_rgb(f, _args.max_pixels(args), min_side) for f in normal]

    import torch

    from ..latent import anomaly, grid, overlay, threshold
    from ..latent.anomalies import shared_vmax
    from ..latent._images import png_bytes, write_folder

    vae = _args.load_model(args)
    limit = None
    if normal:
        scores = [anomaly(vae, im, args.metric).score for im in normal_images]
        limit = threshold(scores, percentile)
    results = [anomaly(vae, im, args.metric) for im in images]
    vmax = args.vmax or shared_vmax([r.map for r in results])
    maps = {}
    for f, im, r in zip(files, images, results):
        picture = overlay(im, r.map, vmax)
        if args.panel:
            picture = grid(torch.stack([im.rgb, r.reconstruction, picture]), gap=4)
        maps[f"{f.stem}.png"] = png_bytes(picture)
    written = write_folder(out, maps, args.overwrite)
    if limit is not None and not args.json:
        print(f"threshold {limit:.6g}: the {percentile:g}th percentile of {len(normal)} normal images' "
              f"{args.metric} scores ({args.threshold_from})")
    for f, r, dst in zip(files, results, written):
        row = dict(input=str(f), output=dst, metric=args.metric, score=r.score)
        if limit is not None:
            row.update(threshold=limit, anomalous=r.score > limit)
        flag = "" if limit is None else ("  ANOMALOUS" if r.score > limit else "  normal")
        print(json.dumps(row) if args.json else f"{f}: {args.metric} score {r.score:.6g}{flag} -> {dst}")
    if limit is not None and not args.json:
        n_bad = sum(r.score > limit for r in results)
        print(f"{n_bad} of {len(results)} inputs above the threshold")
    return 0

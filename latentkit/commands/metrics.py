"""``latentkit metrics REF DIST``: PSNR, SSIM, MS-SSIM and LPIPS between two images or two folders."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import LatentkitError
from . import _args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "metrics", help="PSNR, SSIM, MS-SSIM and LPIPS between two images or two folders",
        description="Compare a distorted image with its reference: PSNR (dB, peak 255, higher is better), "
                    "SSIM and MS-SSIM (1 = identical; MS-SSIM needs a shorter side of at least 161 px, "
                    "else n/a), SSIMULACRA2 (0..100, higher is better; JPEG XL's metric, tuned on human ratings of "
                    "compression artefacts) and LPIPS v0.1 (0 = identical, lower is better). Both images are compared as "
                    "8-bit RGB (grayscale is replicated, alpha is ignored) and must have the same size. With "
                    "two folders, images are paired by file name without extension (a.png with a.webp): "
                    "one row per pair, a mean row, and names found on one side only are listed.")
    p.add_argument("ref", type=Path, help="reference image or folder")
    p.add_argument("dist", type=Path, help="distorted image or folder")
    p.add_argument("--lpips-net", choices=_args.LPIPS_NETS, default="squeeze",
                   help="LPIPS backbone (default squeeze, shipped; alex/vgg need `latentkit fetch`)")
    p.add_argument("--butteraugli", action="store_true",
                   help="also Butteraugli max and 3-norm (libjxl's butteraugli_main, Debian package libjxl-devtools)")
    _args.add_json(p, "the results")
    p.set_defaults(func=run)


def _images(folder: Path) -> dict[str, Path]:
    """Image files of `folder` by name without extension; a name that occurs twice is an error."""
    from ..io import list_images

    found: dict[str, Path] = {}
    for f in list_images(folder):
        if f.stem in found:
            raise LatentkitError(f"{found[f.stem].name} and {f.name} in {folder} pair ambiguously; "
                                 "keep one image per name")
        found[f.stem] = f
    return found


def _pairs(ref: Path, dist: Path) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """(name, ref file, dist file) pairs, then the names only in `ref` and only in `dist`."""
    for p in (ref, dist):
        if not p.exists():
            raise LatentkitError(f"{p} does not exist")
    if ref.is_dir() != dist.is_dir():
        raise LatentkitError("REF and DIST must both be images or both be folders")
    if not ref.is_dir():
        return [(ref.name, ref, dist)], [], []
    a, b = _images(ref), _images(dist)
    pairs = [(a[k].name, a[k], b[k]) for k in sorted(a.keys() & b.keys())]
    if not pairs:
        raise LatentkitError(f"no image in {ref} has a namesake in {dist}")
    return pairs, sorted(a[k].name for k in a.keys() - b.keys()), sorted(b[k].name for k in b.keys() - a.keys())


def _measure(ref: Path, dist: Path, metrics: list[str]) -> dict:
    from ..io import read_image
    from ..metrics.compare import compare

    x, y = read_image(ref), read_image(dist)
    if (x.width, x.height) != (y.width, y.height):
        raise LatentkitError(f"{ref} is {x.width}x{x.height} but {dist} is {y.width}x{y.height}; "
                             "metrics need images of the same size")
    return {"width": x.width, "height": x.height, **compare(x.batch(), y.batch(), metrics)[0]}


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..metrics.compare import format_value, label, mean_of, reported_metrics

    metrics = reported_metrics(args.lpips_net, args.butteraugli)
    pairs, only_ref, only_dist = _pairs(args.ref, args.dist)
    rows = []
    for name, r, d in tqdm(pairs, desc="metrics", unit="pair", disable=len(pairs) == 1):
        rows.append({"name": name, **_measure(r, d, metrics)})
    single = not args.ref.is_dir()
    if args.json:
        out = {"ref": str(args.ref), "dist": str(args.dist)}
        out.update(rows[0] if single else {"pairs": rows, "mean": mean_of(rows, metrics), "only_in_ref": only_ref,
                                           "only_in_dist": only_dist})
        print(json.dumps(out, indent=1))
        return 0
    if single:
        row = rows[0]
        print(f"{args.ref} vs {args.dist} ({row['width']}x{row['height']})")
        for k in metrics:
            print(f"  {label(k):<16} {format_value(row[k], k)}")
        return 0
    width = max(len("mean"), *(len(r["name"]) for r in rows))
    print(f"{'image':<{width}}  " + "  ".join(f"{label(k):>8}" for k in metrics))
    for row in rows + [{"name": "mean", **mean_of(rows, metrics)}]:
        print(f"{row['name']:<{width}}  " + "  ".join(f"{format_value(row[k], k):>8}" for k in metrics))
    for where, names in (("only in " + str(args.ref), only_ref), ("only in " + str(args.dist), only_dist)):
        if names:
            print(f"{where} (not compared): {', '.join(names)}")
    return 0

"""``latentkit bench rd``: rate-distortion of the latent codec against JPEG, WebP, AVIF and JPEG XL."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    from ..bench.sweeps import (CLASSIC_QUALITIES, CODECS, DEFAULT_CODECS, LATENT_QUALITIES, LATENT_REFINE,
                                LATENT_REFINE_QUALITIES, REFINE_STEPS)

    p = subparsers.add_parser("bench", help="benchmarks: rate-distortion against classic codecs",
                              description="Benchmarks. `latentkit bench rd --help` for the rate-distortion sweep.")
    sub = p.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    defaults = "; ".join(f"{c}: {','.join(map(str, q))}" for c, q in CLASSIC_QUALITIES.items())
    rd = sub.add_parser(
        "rd", help="rate-distortion sweep, BD-rates and plots",
        description="Encode every image of --data with each codec at a sweep of qualities; bpp is the whole "
                    "encoded file's bytes x 8 / pixels; PSNR (dB), MS-SSIM (0..1), SSIMULACRA2 (0..100) and LPIPS "
                    "(0 = identical; LPIPS-squeeze is the default model's training loss) are measured on the decoded 8-bit RGB. Writes points.csv, curves.json (mean per codec "
                    "and quality), bdrate.json / bdrate.md (Bjontegaard delta rate in percent against jpeg and "
                    "against latent; negative = fewer bits for the same quality) and rd_<metric>.png into --out.")
    rd.add_argument("--data", required=True, help="folder of images (e.g. ../shared/data/kodak)")
    rd.add_argument("--out", required=True, help="results folder (created if missing; its files are replaced)")
    rd.add_argument("--codecs", default=",".join(DEFAULT_CODECS),
                    help=f"comma-separated codecs from {', '.join(CODECS)} (default: all but {LATENT_REFINE}, the "
                         f"latent codec with `encode --refine {REFINE_STEPS}`: ~25 s a point on 2 CPU cores)")
    rd.add_argument("--model", default=None,
                    help="model for the latent codec: a diffusers folder, a latentkit run or checkpoint folder, "
                         "a .safetensors file, or 'default' / 'codec' (default: the shipped weights/codec, the codec's model)")
    rd.add_argument("--qualities", action="append", metavar="[CODEC=]Q,Q,...",
                    help="quality sweep (0..100; latent 1..100), for one codec with CODEC= or for all; "
                         f"repeatable. Defaults: latent: {','.join(map(str, LATENT_QUALITIES))}; "
                         f"{LATENT_REFINE}: {','.join(map(str, LATENT_REFINE_QUALITIES))}; {defaults}")
    rd.add_argument("--lpips-nets", default=None, metavar="NET,NET",
                    help="LPIPS networks from squeeze, alex, vgg (default: squeeze, plus alex/vgg when their "
                         "weights are on disk: `latentkit fetch lpips-alex`)")
    rd.add_argument("--butteraugli", action="store_true",
                    help="also Butteraugli 3-norm and max (libjxl's butteraugli_main, Debian package libjxl-devtools; "
                         "about a second a point)")
    rd.add_argument("--limit", type=int, default=None, metavar="N", help="use only the first N images (by name)")
    rd.add_argument("--device", default=None, help="torch device for the latent codec's model (default: cpu)")
    rd.add_argument("--threads", type=int, default=None, metavar="N",
                    help="torch CPU threads (default: torch's choice; 1 is much faster on a busy machine)")
    rd.add_argument("--reuse", default=None, metavar="DIR",
                    help="an earlier run's folder (or its points.csv): its points of the codecs not in --codecs join "
                         "the results, e.g. re-run only the latent codec after retraining")
    rd.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    rd.add_argument("--html", default=None, metavar="FILE.html",
                    help="also write a self-contained visual report: plots, tables, and per image original | each "
                         "codec side by side at --html-bpp (1:1 crops, click to move; bpp and every metric under "
                         "each)")
    rd.add_argument("--html-images", type=int, default=None, metavar="N",
                    help="images in the report's viewer (default: all; each adds ~3 MB of lossless images)")
    rd.add_argument("--html-bpp", type=float, default=0.1, metavar="BPP",
                    help="the viewer's rate: each codec at its point nearest it at or below (default: %(default)s)")
    rd.add_argument("--json", action="store_true",
                    help="print the BD-rates as JSON on stdout instead of the markdown tables")
    rd.add_argument("--quiet", action="store_true", help="no progress bar")
    rd.set_defaults(func=run_rd)

    rep = sub.add_parser(
        "report", help="the visual HTML report of a finished `bench rd` run",
        description="Write the self-contained HTML page of a `bench rd` run folder (what `bench rd --html` "
                    "writes): its plots and tables, and each image side by side with every codec at the point "
                    "nearest --bpp at or below it, re-decoded from --data (1:1 crops, click to move).")
    rep.add_argument("run", metavar="RUN", help="the --out folder of a finished `bench rd`")
    rep.add_argument("-o", "--output", required=True, metavar="FILE.html", help="the page to write (atomically)")
    rep.add_argument("--data", default=None, help="the run's image folder (default: as recorded in the run)")
    rep.add_argument("--model", default=None, metavar="M",
                     help="model of the latent codec (default: as recorded in the run); must be the run's")
    rep.add_argument("--bpp", type=float, default=0.1, help="the viewer's rate (default: %(default)s)")
    rep.add_argument("--limit", type=int, default=None, metavar="N", help="show only the first N images")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")
    rep.set_defaults(func=run_report)


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def run_rd(args: argparse.Namespace) -> int:
    from ..bench.rd import bd_markdown, json_bdrates, parse_qualities, rates_markdown, run_rd as sweep
    from ..errors import LatentkitError

    codecs = _split(args.codecs) or []
    if args.limit is not None and args.limit < 1:
        raise LatentkitError("--limit must be at least 1")
    if args.html_images is not None and args.html_images < 1:
        raise LatentkitError("--html-images must be at least 1")
    if args.threads is not None:
        if args.threads < 1:
            raise LatentkitError("--threads must be at least 1")
        import torch

        torch.set_num_threads(args.threads)
    result = sweep(args.data, args.out, codecs=codecs, model=args.model,
                   qualities=parse_qualities(args.qualities, codecs), nets=_split(args.lpips_nets),
                   limit=args.limit, device=args.device, plots=not args.no_plots, progress=not args.quiet,
                   reuse=args.reuse, butteraugli=args.butteraugli, html=args.html, html_images=args.html_images,
                   html_bpp=args.html_bpp)
    if args.json:
        print(json.dumps(json_bdrates(result.bdrates), indent=1))
    else:
        print(bd_markdown(result.bdrates, result.metrics))
        print(rates_markdown(result.at_rates, result.metrics))
        print(f"wrote {len(result.files)} files to {args.out}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ..errors import LatentkitError
    from ..io import check_output

    if args.limit is not None and args.limit < 1:
        raise LatentkitError("--limit must be at least 1")
    if not args.bpp > 0:
        raise LatentkitError(f"--bpp must be a positive rate, got {args.bpp}")
    check_output(args.output)
    from pathlib import Path

    missing = [f for f in ("points.csv", "curves.json") if not (Path(args.run) / f).is_file()]
    if missing:  # before torch loads
        raise LatentkitError(f"{args.run} is not a finished `bench rd` run folder: {missing[0]} is missing")
    from ..bench.report import report_from_run

    out = report_from_run(args.run, args.output, data=args.data, model=args.model, limit=args.limit,
                          target_bpp=args.bpp, progress=not args.quiet)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0

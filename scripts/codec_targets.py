"""Where the `.latent` codec stands against the codec targets of the default-model issue (issue 16), read from a
finished ``latentkit bench rd`` run that has the latent codec and AVIF, with ``--butteraugli``:

- at 0.1 bpp, PSNR >= 26 dB and LPIPS-squeeze <= 0.10 (mean over every image, each interpolated in log bpp);
- MS-SSIM BD-rate against AVIF <= 0 (mean curves, over the range both reach; AVIF is the anchor);
- SSIMULACRA2 at 0.1 bpp above AVIF's, and Butteraugli 3-norm at 0.12 bpp at or below AVIF's (means over the
  images both sweeps reach at that rate, so the two means are over the same images).

Prints a markdown table (target, goal, the codec, AVIF, met?) and the same as one JSON line. Nothing is
re-encoded: it reads ``points.csv``.

    latentkit bench rd --data ../shared/data/kodak --codecs latent,avif --butteraugli --out results/rd24t
    python scripts/codec_targets.py results/rd24t [--codec latent-refine]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from latentkit.bench.bdrate import bd_rate
from latentkit.bench.rd import at_rates, load_points, mean_curves, paired_at_rates
from latentkit.errors import LatentkitError
from latentkit.metrics.compare import format_value

ANCHOR = "avif"
#: what the targets read
METRICS = ("psnr", "lpips_squeeze", "ms_ssim", "ssimulacra2", "butteraugli_3norm")


def targets(rows: list[dict], codec: str) -> list[dict]:
    """The five codec targets: dicts of ``target``, ``goal``, ``value`` (the codec's), ``avif`` (None where the
    target is absolute), ``images`` and ``met`` (None where a sweep does not reach the rate)."""
    alone = at_rates([r for r in rows if r["codec"] == codec], ["psnr", "lpips_squeeze"], rates=(0.1,))[codec]["0.1"]
    paired = paired_at_rates(rows, ["ssimulacra2", "butteraugli_3norm"], anchor=codec, rates=(0.1, 0.12))[ANCHOR]
    curves = mean_curves(rows, ["ms_ssim"])
    bd = bd_rate(curves[ANCHOR]["bpp"], curves[ANCHOR]["ms_ssim"], curves[codec]["bpp"], curves[codec]["ms_ssim"])
    bd = None if math.isnan(bd) else bd  # NaN: the two curves' MS-SSIM ranges do not overlap
    n_images = len({r["image"] for r in rows})

    def pair(rate: str, metric: str, better) -> dict:
        cell = paired[rate]
        mine, theirs = cell[metric] if cell[metric] else (None, None)
        return {"value": mine, "avif": theirs, "images": cell["images"],
                "met": None if mine is None else better(mine, theirs)}

    psnr, lpips = alone["psnr"], alone["lpips_squeeze"]
    return [
        {"target": "PSNR at 0.1 bpp", "goal": ">= 26 dB", "metric": "psnr", "value": psnr, "avif": None,
         "images": n_images, "met": None if psnr is None else psnr >= 26},
        {"target": "LPIPS-squeeze at 0.1 bpp (training loss)", "goal": "<= 0.10", "metric": "lpips_squeeze",
         "value": lpips, "avif": None, "images": n_images, "met": None if lpips is None else lpips <= 0.10},
        {"target": "MS-SSIM BD-rate against AVIF", "goal": "<= 0%", "metric": "bd", "value": bd, "avif": None,
         "images": n_images, "met": None if bd is None else bd <= 0},
        {"target": "SSIMULACRA2 at 0.1 bpp", "goal": "above AVIF's", "metric": "ssimulacra2",
         **pair("0.1", "ssimulacra2", lambda a, b: a > b)},
        {"target": "Butteraugli 3-norm at 0.12 bpp", "goal": "at or below AVIF's", "metric": "butteraugli_3norm",
         **pair("0.12", "butteraugli_3norm", lambda a, b: a <= b)},
    ]


def markdown(table: list[dict], codec: str) -> str:
    def fmt(t: dict, v) -> str:
        if t["metric"] == "bd":
            return "n/a" if v is None else f"{v:+.1f}%"
        return format_value(v, t["metric"])

    out = [f"| target | goal | images | {codec} | AVIF | met |", "|---|---|---:|---:|---:|---|"]
    out += [f"| {t['target']} | {t['goal']} | {t['images']} | {fmt(t, t['value'])} | "
            f"{'' if t['avif'] is None else fmt(t, t['avif'])} | "
            f"{'n/a' if t['met'] is None else 'yes' if t['met'] else 'no'} |" for t in table]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="the --out folder of a finished `latentkit bench rd` (or its points.csv)")
    ap.add_argument("--codec", default="latent", help="the codec measured (default: latent; e.g. latent-refine)")
    args = ap.parse_args()
    try:
        path = Path(args.run) / "points.csv" if Path(args.run).is_dir() else Path(args.run)
        rows = load_points(path, None, exclude=())
        have = {r["codec"] for r in rows}
        for needed in (args.codec, ANCHOR):
            if needed not in have:
                raise LatentkitError(f"{path} has no {needed} points (it has {', '.join(sorted(have))})")
        lacking = [m for m in METRICS if m not in rows[0]]
        if lacking:
            raise LatentkitError(f"{path} lacks {', '.join(lacking)} (Butteraugli: run `bench rd` with --butteraugli)")
        table = targets(rows, args.codec)
    except LatentkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(table, args.codec))
    print(json.dumps({"codec_targets": args.codec, "run": str(args.run), "rows": table}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

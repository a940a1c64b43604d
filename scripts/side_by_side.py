"""One picture of an image's crop through every codec of a ``bench rd`` run at (at most) the same rate.

Each codec's point nearest --bpp at or below it is re-encoded (as ``bench report`` does), the crop --box is
cut from each decoded image, scaled up with nearest neighbour so pixels stay visible, and labelled with the
codec, bpp and the metrics named by --label-metrics. For the README and papers:

    python scripts/side_by_side.py results/rd24 --image kodim23.png --bpp 0.1 --box 300,120,160,120 \\
        -o docs/img/side_by_side_kodim23.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a finished `latentkit bench rd` --out folder")
    ap.add_argument("--image", required=True, help="file name of one of the run's images")
    ap.add_argument("--data", default=None, help="the run's image folder (default: as recorded in the run)")
    ap.add_argument("--bpp", type=float, default=0.1, help="target rate (default: %(default)s)")
    ap.add_argument("--box", required=True, help="crop LEFT,TOP,WIDTH,HEIGHT in pixels of the image")
    ap.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscaling of the crop")
    ap.add_argument("--codecs", default=None, help="comma-separated subset and order (default: the run's)")
    ap.add_argument("--label-metrics", default="psnr,ssimulacra2", help="metrics printed under each panel")
    ap.add_argument("-o", "--output", required=True, help="PNG to write")
    args = ap.parse_args(argv)

    import torch

    from latentkit import io as lkio
    from latentkit.bench.rd import load_points, make_roundtrips
    from latentkit.bench.report import decode_at_rate, side_by_side
    from latentkit.metrics.psnr import to_8bit_levels

    run = Path(args.run)
    meta = json.loads((run / "curves.json").read_text())["meta"]
    if meta.get("threads"):
        torch.set_num_threads(int(meta["threads"]))
    data = Path(args.data or meta["data"])
    images = [p for p in lkio.list_images(data) if p.name == args.image]
    if not images:
        sys.exit(f"side_by_side: {args.image} is not in {data}")
    rows = load_points(run, images, exclude=())
    codecs = args.codecs.split(",") if args.codecs else list(dict.fromkeys(r["codec"] for r in rows))
    labels = [m for m in args.label_metrics.split(",") if m]
    model = meta.get("model")
    image = lkio.read_image(images[0])
    shown = decode_at_rate(image, args.image, rows, make_roundtrips(codecs, model),
                           args.bpp, labels)
    short = {"psnr": "dB", "ssimulacra2": "SSIMU2", "ms_ssim": "MS-SSIM", "butteraugli_3norm": "BA3"}
    panels = [("original", to_8bit_levels(image.rgb))]
    for s in shown:
        figs = ", ".join(f"{s['row'][m]:.2f} {short.get(m, m)}" if m == "psnr" else f"{short.get(m, m)} {s['row'][m]:.2f}"
                         for m in labels)
        panels.append((f"{s['codec']} {s['row']['bpp']:.3f} bpp, {figs}", s["rgb"]))
    box = tuple(int(v) for v in args.box.split(","))
    sheet = side_by_side(panels, box, scale=args.scale)
    lkio.atomic_write(args.output, lambda tmp: sheet.save(tmp, format="PNG", optimize=True))
    print(f"wrote {args.output}: " + "; ".join(label for label, _ in panels))
    return 0


if __name__ == "__main__":
    sys.exit(main())

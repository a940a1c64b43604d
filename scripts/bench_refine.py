"""What encoder-side latent refinement (`latentkit encode --refine STEPS`, :mod:`latentkit.codec.refine`) buys:
rate-distortion of the `.latent` codec with and without it on Kodak images, at equal bytes.

For each image: the codec without refinement at ``--anchor-qualities`` and with ``--steps`` refinement steps at
``--qualities``; per image the BD-rate of the refined curve against the plain one in PSNR and in MS-SSIM (neither
is what the model was trained on; refinement itself minimises squared error, so MS-SSIM is the independent check),
and the encode time per refined file. Prints the CPU, one line per point and per image, then one JSON line per
image (``{"bench": "refine", ...}``).

    python scripts/bench_refine.py [--images kodim01,kodim05,kodim14,kodim23] [--steps 20] [--qualities 30,45,60]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_onnx import cpu_name  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kodak", default=str(ROOT.parent / "shared" / "data" / "kodak"), help="folder of kodimNN.png")
    ap.add_argument("--images", default="kodim01,kodim05,kodim14,kodim23")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--qualities", default="30,45,60")
    ap.add_argument("--anchor-qualities", default="20,28,36,44,52,60,68,76,84")
    args = ap.parse_args()
    if min(len(args.qualities.split(",")), len(args.anchor_qualities.split(","))) < 2:
        ap.error("--qualities and --anchor-qualities need 2 or more qualities each (a BD-rate needs a curve)")

    import torch

    from latentkit import io as lkio
    from latentkit.bench.bdrate import bd_rate
    from latentkit.codec import LatentEncoder, decompress
    from latentkit.metrics.psnr import psnr
    from latentkit.metrics.ssim import ms_ssim

    print(f"CPU: {cpu_name()}; {torch.get_num_threads()} threads")
    for name in args.images.split(","):
        image = lkio.read_image(Path(args.kodak) / f"{name}.png")
        x = image.batch()
        pixels = image.width * image.height

        def point(encoder, q):
            t0 = time.perf_counter()
            data = encoder.pack(q)
            seconds = time.perf_counter() - t0
            rec = decompress(data).rgb[None]
            return {"quality": q, "bpp": len(data) * 8 / pixels, "psnr": psnr(rec, x).item(),
                    "ms_ssim": ms_ssim(rec, x).item(), "seconds": seconds}

        plain = LatentEncoder(image)
        refined = LatentEncoder(image, latent=plain.latent, gains=plain.gains, refine_steps=args.steps)
        curves = {"plain": [point(plain, int(q)) for q in args.anchor_qualities.split(",")],
                  "refined": [point(refined, int(q)) for q in args.qualities.split(",")]}
        for kind, pts in curves.items():
            for p in pts:
                print(f"  {name} {kind:7s} q{p['quality']}: {p['bpp']:.4f} bpp, {p['psnr']:.2f} dB, "
                      f"MS-SSIM {p['ms_ssim']:.4f}, {p['seconds']:.1f} s")
        rec = {"bench": "refine", "cpu": cpu_name(), "image": name, "steps": args.steps, **curves}
        for metric in ("psnr", "ms_ssim"):
            rec[f"bd_rate_{metric}_pct"] = round(bd_rate(
                [p["bpp"] for p in curves["plain"]], [p[metric] for p in curves["plain"]],
                [p["bpp"] for p in curves["refined"]], [p[metric] for p in curves["refined"]]), 2)
        print(f"{name}: BD-rate of refined against plain: PSNR {rec['bd_rate_psnr_pct']:+.2f}%, "
              f"MS-SSIM {rec['bd_rate_ms_ssim_pct']:+.2f}%")
        print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

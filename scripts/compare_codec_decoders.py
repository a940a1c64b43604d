"""Codec rate-distortion of decoders that share one encoder, at equal bytes: does a tuned decoder pay?

    python scripts/compare_codec_decoders.py runs/codecA runs/codecB [--anchor default] [--data DIR]
                                             [--metrics psnr,ms_ssim] [--json OUT]

Every image is encoded once with the anchor's encoder (all models must share it: decoder-only fine-tunes);
each model then measures its own decoder gains and packs the latent at the `bench rd` qualities, so the same
quality can give other bytes. Prints, per model, the BD-rate against the anchor for each metric (negative:
fewer bits for the same quality) and PSNR interpolated at fixed rates (bits per pixel of the whole file over
the image's pixels, mean over images per quality). Default data: ../shared/data/val (never Kodak for picking).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from latentkit.bench.bdrate import bd_rate
from latentkit.bench.sweeps import LATENT_QUALITIES
from latentkit.codec.api import LatentEncoder, decompress
from latentkit.io import list_images, read_image
from latentkit.metrics.compare import HIGHER_IS_BETTER, compare
from latentkit.model import encode, load_vae

ROOT = Path(__file__).resolve().parent.parent
RATES = (0.03, 0.05, 0.075, 0.1, 0.15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="decoders to compare (anything load_vae accepts)")
    ap.add_argument("--anchor", default="default", help="the reference model (its encoder encodes every image)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "val"))
    ap.add_argument("--metrics", default="psnr,ms_ssim")
    ap.add_argument("--json", help="write the mean curves here")
    args = ap.parse_args()
    metrics = args.metrics.split(",")
    names = [args.anchor, *args.models]
    models = {n: load_vae(n) for n in names}
    points = {n: {q: [] for q in LATENT_QUALITIES} for n in names}
    with torch.no_grad():
        for f in tqdm(list_images(args.data, recursive=True), desc="images", unit="img"):
            im = read_image(f)
            latent = encode(models[args.anchor], im.batch())[0].float().cpu().numpy()
            for n, vae in models.items():
                enc = LatentEncoder(im, vae, latent=latent)
                for q in LATENT_QUALITIES:
                    data = enc.pack(q)
                    m = compare(im.rgb[None], decompress(data, vae).rgb[None], metrics)[0]
                    points[n][q].append({"bpp": len(data) * 8 / (im.width * im.height), **m})
    curves = {n: {k: [float(np.mean([p[k] for p in points[n][q]])) for q in LATENT_QUALITIES]
                  for k in ["bpp", *metrics]} for n in names}
    anchor = curves[args.anchor]
    for n in names:
        c = curves[n]
        bd = {k: bd_rate(anchor["bpp"], anchor[k], c["bpp"], c[k], higher_is_better=HIGHER_IS_BETTER[k])
              for k in metrics} if n != args.anchor else {k: 0.0 for k in metrics}
        at = [float(np.interp(np.log(r), np.log(c["bpp"]), c["psnr"])) for r in RATES] if "psnr" in c else []
        print(f"{n}: BD-rate " + ", ".join(f"{k} {v:+.1f}%" for k, v in bd.items())
              + (f"; PSNR at {'/'.join(map(str, RATES))} bpp: " + " / ".join(f"{v:.2f}" for v in at) if at else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"qualities": list(LATENT_QUALITIES), "curves": curves}, indent=1))


if __name__ == "__main__":
    main()

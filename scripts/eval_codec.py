"""Rate-distortion and speed figures of the `.latent` codec on a folder of images (default: Kodak).

    python scripts/eval_codec.py --model runs/default [--data DIR] [--limit N] [--sizes-only] [--json OUT]

Prints a markdown table (bpp, PSNR, LPIPS-squeeze and bytes saved against zstd per quality) and the timings;
--json also writes every figure as JSON. --sizes-only decodes only at qualities 50 (timings) and 100 (the gap to
the unquantized reconstruction): several times faster, without the PSNR/LPIPS rows (`latentkit bench rd` has
them).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import zstandard
from tqdm import tqdm

from latentkit.bench.rd import LATENT_QUALITIES
from latentkit.codec import allocate, api
from latentkit.io import atomic_write, list_images, read_image
from latentkit.metrics import lpips, psnr
from latentkit.model import decode, encode, load_vae

QUALITIES = list(LATENT_QUALITIES)  # the same sweep as `latentkit bench rd`


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="codec", help="default: the shipped codec model")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/kodak"))
    ap.add_argument("--limit", type=int, default=None, help="use the first N images")
    ap.add_argument("--sizes-only", action="store_true", help="decode only at qualities 50 and 100")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    vae = load_vae(args.model)
    files = list_images(args.data, limit=args.limit)
    rows = {q: [] for q in QUALITIES}
    ref_psnr, zstd_rows, times = [], {q: [] for q in QUALITIES}, []
    for f in tqdm(files, desc="images"):
        img = read_image(f)
        x, n = img.batch(), img.width * img.height
        t0 = time.perf_counter()
        latent = encode(vae, x)[0].float().numpy()  # the LatentEncoder's analysis, timed in two parts
        t_gains = time.perf_counter()
        gains = allocate.decoder_gains(vae, latent)
        t_model, t_gains = time.perf_counter() - t0, time.perf_counter() - t_gains
        enc = api.LatentEncoder(img, vae, latent, gains)
        crop = lambda y: y[..., :img.height, :img.width]  # noqa: E731
        ref_psnr.append(float(psnr(crop(decode(vae, torch.from_numpy(latent)[None])), x)))
        for q in QUALITIES:
            t1 = time.perf_counter()
            data = enc.pack(q)
            t_enc_entropy = time.perf_counter() - t1
            _, sym = enc.symbols(q)  # the symbols in the file
            # the baseline must be lossless too: 8-bit symbols where they fit, else 16-bit
            dtype = np.int8 if np.abs(sym).max() <= 127 else np.int16
            base = zstandard.ZstdCompressor(level=19).compress(sym.astype(dtype).tobytes())
            zstd_rows[q].append(len(base) * 8 / n)
            if args.sizes_only and q not in (50, QUALITIES[-1]):
                rows[q].append((len(data) * 8 / n, np.nan, np.nan))
                continue
            t2 = time.perf_counter()
            _, zq, _ = api.decode_latent(data, vae)
            t_dec_entropy = time.perf_counter() - t2
            t3 = time.perf_counter()
            y = crop(decode(vae, zq))
            t_dec_model = time.perf_counter() - t3
            rows[q].append((len(data) * 8 / n, float(psnr(y, x)), float(lpips(y, x, net="squeeze"))))
            if q == 50:  # timing at a mid quality
                times.append((t_model + t_enc_entropy, t_enc_entropy, t_dec_entropy + t_dec_model, t_dec_entropy,
                              t_gains))
    out = {"model": str(args.model), "images": len(files), "sweep": [], "posterior_mean_psnr": float(np.mean(ref_psnr))}
    finite = lambda v: None if np.isnan(v) else float(v)  # noqa: E731  (NaN: not decoded, --sizes-only)
    for q in QUALITIES:
        a = np.array(rows[q])
        out["sweep"].append({"quality": q, "bpp": a[:, 0].mean(), "psnr": finite(a[:, 1].mean()),
                             "lpips_squeeze": finite(a[:, 2].mean()),
                             "zstd_symbols_bpp": float(np.mean(zstd_rows[q]))})
    out["gap_at_top_quality_db"] = out["posterior_mean_psnr"] - out["sweep"][-1]["psnr"]
    # at equal PSNR = the same quantized symbols: our whole file vs the bare symbols (8- or 16-bit) + zstd -19
    out["bytes_saved_vs_zstd"] = float(np.mean([1 - s["bpp"] / s["zstd_symbols_bpp"] for s in out["sweep"]]))
    t = np.array(times)
    out["encode_s"], out["decode_s"] = float(t[:, 0].mean()), float(t[:, 2].mean())
    out["encode_entropy_share"] = float(t[:, 1].sum() / t[:, 0].sum())
    out["decode_entropy_share"] = float(t[:, 3].sum() / t[:, 2].sum())
    out["encode_gains_share"] = float(t[:, 4].sum() / t[:, 0].sum())
    if args.json:
        text = json.dumps(out, indent=1, default=float)
        atomic_write(args.json, lambda p: Path(p).write_text(text))
    print(markdown(out))


def markdown(out: dict) -> str:
    """The sweep as the README's table, and the summary figures."""
    sw = out["sweep"]
    row = lambda name, f: f"| {name} | " + " | ".join(f(s) for s in sw) + " |"  # noqa: E731
    lines = [row("quality", lambda s: str(s["quality"])), "|---|" + "---|" * len(sw),
             row("bpp", lambda s: f"{s['bpp']:.3f}"),
             row("PSNR (dB)", lambda s: "-" if s["psnr"] is None else f"{s['psnr']:.2f}"),
             row("LPIPS-squeeze", lambda s: "-" if s["lpips_squeeze"] is None else f"{s['lpips_squeeze']:.3f}"),
             row("bytes saved vs symbols + zstd -19", lambda s: f"{100 * (1 - s['bpp'] / s['zstd_symbols_bpp']):.0f}%"),
             "",
             f"{out['images']} images; unquantized posterior mean {out['posterior_mean_psnr']:.2f} dB, top quality "
             f"{out['gap_at_top_quality_db']:.4f} dB below it; bytes saved vs zstd, mean over qualities: "
             f"{100 * out['bytes_saved_vs_zstd']:.1f}%",
             f"encode {out['encode_s']:.2f} s (gains {100 * out['encode_gains_share']:.0f}%, entropy coding "
             f"{100 * out['encode_entropy_share']:.0f}%), decode {out['decode_s']:.2f} s (entropy decoding "
             f"{100 * out['decode_entropy_share']:.0f}%) per image at quality 50"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

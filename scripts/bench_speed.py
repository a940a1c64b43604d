"""Speed and memory benchmark: stock diffusers ``AutoencoderKL`` calls vs latentkit's encode/decode.

Every measurement runs in its own subprocess, so its peak RSS (``ru_maxrss``) is its own. Measured:

- encode / decode throughput (megapixels/s) and peak RSS, stock fp32 diffusers (as a user writes it:
  ``vae.encode(x).latent_dist.mean`` / ``vae.decode(z).sample`` under ``torch.no_grad``) and latentkit
  (``latentkit.encode`` / ``decode``: fast path, automatic tiling), at each ``--sizes``; and the ratios;
- peak RSS and time of latentkit decode at ``--big`` sizes (tiled automatically);
- PSNR of tiled vs untiled decode at ``--tiled-size`` for latentkit and for diffusers ``enable_tiling()``.

Output: human-readable lines, then one JSON line per measurement (``{"bench": "speed", ...}``; the keys of
each kind stay stable). Timings are the best of ``--repeat`` runs; on a shared machine compare the ratios
measured in the same run, not absolute figures across runs.

    python scripts/bench_speed.py --model runs/default [--quick] [--sizes 512x512,768x512]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _image(w: int, h: int):
    """A deterministic test image with structure at several scales, 1 x 3 x h x w in [0, 1]."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, max(1, h // 16), max(1, w // 16), generator=g)
    return torch.nn.functional.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def _best(f, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def case(kind: str, impl: str, w: int, h: int, model: str | None, repeat: int) -> dict:
    """Run one measurement in this process and return its JSON record."""
    import torch

    import latentkit
    from latentkit.metrics.psnr import psnr

    vae = latentkit.load_vae(model)
    rec = {"bench": "speed", "kind": kind, "impl": impl, "width": w, "height": h}
    if kind == "throughput":
        x = _image(w, h)
        if impl == "diffusers":
            def enc():
                with torch.no_grad():
                    return vae.encode(x * 2 - 1).latent_dist.mean

            def dec(z):
                with torch.no_grad():
                    return vae.decode(z).sample
        else:
            def enc():
                return latentkit.encode(vae, x)

            def dec(z):
                return latentkit.decode(vae, z)
        z = enc()  # warm-up
        dec(z)
        mpx = w * h / 1e6
        rec["encode_mpx_s"] = mpx / _best(enc, repeat)
        rec["decode_mpx_s"] = mpx / _best(lambda: dec(z), repeat)
    elif kind == "decode_big":
        z = torch.randn(1, vae.config.latent_channels, h // 8, w // 8, generator=torch.Generator().manual_seed(0))
        rec["seconds"] = _best(lambda: latentkit.decode(vae, z), 1)
    elif kind == "tiled_psnr":
        z = latentkit.encode(vae, _image(w, h), tile=True)
        if impl == "diffusers":
            with torch.no_grad():
                ref = vae.decode(z).sample
                vae.enable_tiling()
                tiled = vae.decode(z).sample
            ref, tiled = ((ref + 1) / 2).clamp(0, 1), ((tiled + 1) / 2).clamp(0, 1)
        else:
            ref, tiled = latentkit.decode(vae, z, tile=False), latentkit.decode(vae, z, tile=True)
        rec["psnr_db"] = psnr(ref, tiled).item()
    rec["peak_rss_mb"] = _peak_rss_mb()
    return rec


def _sub(args: argparse.Namespace, kind: str, impl: str, w: int, h: int) -> dict:
    cmd = [sys.executable, __file__, "--_case", kind, impl, str(w), str(h), "--repeat", str(args.repeat)]
    if args.model:
        cmd += ["--model", args.model]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"bench": "speed", "kind": kind, "impl": impl, "width": w, "height": h, "error": tail}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _size(s: str) -> tuple[int, int]:
    w, _, h = s.lower().partition("x")
    return int(w), int(h or w)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder or run (default: the shipped weights)")
    p.add_argument("--sizes", default="512x512,768x512", help="throughput sizes WxH, comma-separated")
    p.add_argument("--big", default="2048,4096", help="decode peak-RSS sizes (square), comma-separated; '' skips")
    p.add_argument("--tiled-size", type=int, default=2048, help="square size of the tiled-vs-untiled PSNR test; 0 skips")
    p.add_argument("--repeat", type=int, default=2, help="timed runs per figure (best is kept)")
    p.add_argument("--quick", action="store_true", help="one timed run, 768x512 only, big 2048, tiled test at 1024")
    p.add_argument("--_case", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._case:
        kind, impl, w, h = args._case
        print(json.dumps(case(kind, impl, int(w), int(h), args.model, args.repeat)))
        return 0
    if args.quick:
        args.repeat, args.sizes, args.big, args.tiled_size = 1, "768x512", "2048", 1024
    from tqdm import tqdm

    plan = [("throughput", impl, *_size(s)) for s in args.sizes.split(",") if s for impl in ("diffusers", "latentkit")]
    plan += [("decode_big", "latentkit", int(s), int(s)) for s in args.big.split(",") if s]
    if args.tiled_size:
        plan += [("tiled_psnr", impl, args.tiled_size, args.tiled_size) for impl in ("latentkit", "diffusers")]
    records = []
    for c in tqdm(plan, desc="bench_speed", unit="case"):
        records.append(_sub(args, *c))
        r = records[-1]
        figs = {k: v for k, v in r.items() if k not in ("bench", "kind", "impl", "width", "height")}
        tqdm.write(f"{r['kind']:11s} {r['impl']:9s} {r['width']}x{r['height']}: "
                   + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figs.items()))
    by = {(r["kind"], r["impl"], r["width"], r["height"]): r for r in records}
    for (kind, impl, w, h), r in list(by.items()):
        stock = by.get((kind, "diffusers", w, h))
        if kind == "throughput" and impl == "latentkit" and stock and "error" not in r and "error" not in stock:
            ratio = {"bench": "speed", "kind": "ratio", "impl": "latentkit/diffusers", "width": w, "height": h}
            for k in ("encode_mpx_s", "decode_mpx_s"):
                ratio[k] = r[k] / stock[k]
            both = lambda d: 1 / (1 / d["encode_mpx_s"] + 1 / d["decode_mpx_s"])  # noqa: E731
            ratio["encode_decode"] = both(r) / both(stock)
            print(f"ratio latentkit/diffusers {w}x{h}: encode {ratio['encode_mpx_s']:.2f}x, decode "
                  f"{ratio['decode_mpx_s']:.2f}x, encode+decode {ratio['encode_decode']:.2f}x (same run)")
            records.append(ratio)
    for r in records:
        print(json.dumps(r, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

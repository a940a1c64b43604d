"""LPIPS throughput in images/s (forward only, no gradients) on 768 x 512 images, for a few batch sizes.

    python scripts/bench_lpips.py [--net squeeze] [--batch 1 4] [--repeats 3] [--device cpu] [--json]

One image = one (reference, distorted) pair. Each batch size gets one warm-up pass, then the best of
`--repeats` timed passes is reported (the least disturbed by other work on the machine).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from latentkit.metrics import LPIPS


def bench(net: str, batch: int, repeats: int, device: str, size: tuple[int, int] = (512, 768)) -> float:
    """Images per second of ``LPIPS(net)`` on `batch` random pairs of `size` (H, W) on `device`."""
    model = LPIPS(net).to(device)
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(batch, 3, *size, generator=g).to(device) for _ in range(2))
    best = float("inf")
    with torch.no_grad():
        for i in range(repeats + 1):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(x, y)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i:  # the first pass is the warm-up
                best = min(best, time.perf_counter() - t)
    return batch / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", default="squeeze", choices=["squeeze", "alex", "vgg"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = {"net": args.net, "device": args.device, "threads": torch.get_num_threads(), "size": "768x512",
           "images_per_s": {str(b): round(bench(args.net, b, args.repeats, args.device), 3) for b in args.batch}}
    if args.json:
        print(json.dumps(res))
    else:
        for b, v in res["images_per_s"].items():
            print(f"LPIPS-{args.net} {res['size']} on {args.device} ({res['threads']} threads), batch {b}: "
                  f"{v:.2f} images/s")


if __name__ == "__main__":
    main()

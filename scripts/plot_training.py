"""Plot a training run's validation PSNR and LPIPS against wall-clock hours (the quality-per-CPU-hour curve).

    python scripts/plot_training.py runs/default/log.csv -o docs/img/training_curve.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from latentkit.io import atomic_write  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", help="a run's log.csv")
    ap.add_argument("-o", "--out", required=True, help="PNG to write")
    args = ap.parse_args()
    with open(args.log, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_psnr")]
    if not rows:
        raise SystemExit(f"{args.log} has no validation rows yet")
    hours = [float(r["wall_s"]) / 3600 for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(hours, [float(r["val_psnr"]) for r in rows], "o-", color="C0")
    ax.set_xlabel("training wall-clock hours (2 CPU cores)")
    ax.set_ylabel("val PSNR (dB)", color="C0")
    ax2 = ax.twinx()
    ax2.plot(hours, [float(r["val_lpips"]) for r in rows], "s--", color="C3")
    ax2.set_ylabel("val LPIPS-squeeze", color="C3")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(Path(args.out), lambda p: fig.savefig(p, dpi=110, format="png"))
    print(f"wrote {args.out} ({len(rows)} validation points)")


if __name__ == "__main__":
    main()

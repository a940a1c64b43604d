"""The default model's quality-per-CPU-hour curve: validation PSNR and LPIPS-squeeze against cumulative training
hours, over every training session of the shipped weights.

    python scripts/plot_training.py weights/default/val_history.csv -o docs/img/training_curve.png
    python scripts/plot_training.py weights/default/val_history.csv --append runs/default/log.csv \\
        --hardware "2 cores, AVX2, fp32" [--session N] [--until STEP] -o docs/img/training_curve.png

The history CSV (session, hardware, steps, hours, val_psnr, val_lpips; steps and hours cumulative) is the
record; ``--append`` adds a finished session's validation rows from its run's ``log.csv`` (steps and hours
counted on from the history's last row) and rewrites the CSV atomically.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from latentkit.io import atomic_write  # noqa: E402

FIELDS = ["session", "hardware", "steps", "hours", "val_psnr", "val_lpips"]


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_run(history: list[dict[str, str]], log: str, hardware: str, session: int | None = None,
               until: int | None = None) -> list[dict[str, str]]:
    """The history plus the validation rows of one run's log.csv (up to step `until`: the checkpoint that was kept),
    as working session `session` (default: the history's last plus one)."""
    rows = [r for r in read_csv(log) if r.get("val_psnr") and (until is None or int(r["step"]) <= until)]
    if not rows:
        raise SystemExit(f"{log} has no validation rows" + (f" up to step {until}" if until is not None else ""))
    last = history[-1] if history else {"session": "0", "steps": "0", "hours": "0"}
    steps0, hours0 = int(last["steps"]), float(last["hours"])
    session = int(last["session"]) + 1 if session is None else session
    return history + [{"session": str(session), "hardware": hardware, "steps": str(steps0 + int(r["step"])),
                       "hours": f"{hours0 + float(r['wall_s']) / 3600:.2f}", "val_psnr": f"{float(r['val_psnr']):.2f}",
                       "val_lpips": f"{float(r['val_lpips']):.3f}"} for r in rows]


def plot(history: list[dict[str, str]], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    # a colour per session, none red (C3 is the LPIPS curve): the 9 others of the default cycle, then tab20's
    # lighter shades of those
    tab20 = plt.get_cmap("tab20").colors
    colours = [f"C{i}" for i in range(10) if i != 3] + [tab20[2 * i + 1] for i in range(10) if i != 3]
    ax2 = ax.twinx()
    for i, s in enumerate(dict.fromkeys(r["session"] for r in history)):
        rows = [r for r in history if r["session"] == s]
        h = [float(r["hours"]) for r in rows]
        ax.plot(h, [float(r["val_psnr"]) for r in rows], "o-", color=colours[i % len(colours)],
                label=f"PSNR, session {s}: {rows[0]['hardware']}")
        ax2.plot(h, [float(r["val_lpips"]) for r in rows], "s--", color="C3", label="LPIPS-squeeze" if i == 0 else None)
        if i:  # where this session started: the previous one's last point
            ax.axvline(prev_end, color="gray", lw=0.8, ls=":")
        prev_end = h[-1]
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="upper center", ncol=2,
              bbox_to_anchor=(0.5, -0.16))  # below the axes: the curves fill the plot's corners
    ax.set_xlabel("cumulative training wall-clock hours (hardware per session: legend)")
    ax.set_ylabel("val PSNR (dB)", color="C0")
    ax2.set_ylabel("val LPIPS-squeeze", color="C3")
    ax.grid(alpha=0.3)
    atomic_write(out, lambda p: fig.savefig(p, dpi=110, format="png", bbox_inches="tight"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("history", help="the validation history CSV (weights/default/val_history.csv)")
    ap.add_argument("--append", metavar="LOG_CSV", help="add this run's validation rows as a new session")
    ap.add_argument("--hardware", default="", help="with --append: the machine it ran on, for the plot")
    ap.add_argument("--session", type=int, default=None,
                    help="with --append: the working session's number (default: the history's last plus one)")
    ap.add_argument("--until", type=int, default=None, metavar="STEP",
                    help="with --append: only the run's validation rows up to this step (the checkpoint kept)")
    ap.add_argument("-o", "--out", required=True, help="PNG to write")
    args = ap.parse_args()
    if (args.session is not None or args.until is not None) and not args.append:
        ap.error("--session and --until go with --append")
    history = read_csv(args.history)
    if args.append:
        history = append_run(history, args.append, args.hardware, args.session, args.until)

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=FIELDS)
                w.writeheader()
                w.writerows(history)

        atomic_write(Path(args.history), write)
    plot(history, Path(args.out))
    print(f"wrote {args.out} ({len(history)} validation points)")


if __name__ == "__main__":
    main()

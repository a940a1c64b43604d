"""Kill `latentkit train` with SIGKILL again and again; every resume must end where an unkilled run ends.

    python scripts/soak_train_kill.py --kills 20 [--steps 60] [--phases step,checkpoint,validation] [--json]

A micro model trains on a few small synthetic images (PatchGAN on from step 5, posterior samples, validation
every 6 steps, a checkpoint every 3), on CPU with one thread, first once without interruption, then again while
this script kills it with SIGKILL ``--kills`` times, cycling through the phases: ``step`` (a random moment while
training), ``checkpoint`` (the moment a checkpoint's temporary folder appears, i.e. during its write) and
``validation`` (after a validation step's log row, before its checkpoint exists). After each kill the run's latest
checkpoint must load, and ``latentkit train --resume`` continues it. At the end the killed run's final weights
(autoencoder, EMA, discriminator) must equal the uninterrupted run's bit for bit, and its log the same losses, one
row per step. Exit status 0 when they do, 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TRAIN = ["--batch-size", "2", "--crop", "32", "--lr", "1e-3", "--warmup", "0", "--perceptual-weight", "0",
         "--disc-start", "5", "--disc-width", "8", "--disc-layers", "2", "--mixed-precision", "no",
         "--no-channels-last", "--ckpt-every", "3", "--val-every", "6", "--log-every", "1", "--threads", "1",
         "--keep", "2", "--kl-weight", "1e-2"]
VAL_EVERY = 6


def child_env() -> dict:
    """The environment of every training process: one OpenMP thread (bit-exact on CPU), no warnings."""
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def make_data(root: Path) -> tuple[Path, Path, Path]:
    """(train folder, val folder, micro config file) under `root`."""
    from PIL import Image

    from latentkit.model import config_dict

    rng = np.random.default_rng(0)
    train, val = root / "train", root / "val"
    train.mkdir()
    val.mkdir()
    yy, xx = np.mgrid[0:48, 0:64] / 64.0
    for i in range(4):
        a = np.stack([np.sin(xx * (3 + i) + rng.uniform(0, 6)), np.cos(yy * (2 + i)), xx * yy], -1)
        Image.fromarray(((a + 1) / 2 * 255).clip(0, 255).astype(np.uint8)).save(train / f"{i}.png")
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(val / f"{i}.png")
    cfg = config_dict("tiny")
    cfg.update(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4)
    (root / "micro.json").write_text(json.dumps(cfg))
    return train, val, root / "micro.json"


def command(run: Path, data: tuple[Path, Path, Path], steps: int, resume: bool) -> list[str]:
    train, val, cfg = data
    # killed before its first checkpoint, a run has a log but nothing to resume: it starts again
    head = ["--resume", str(run)] if resume else ["--out", str(run), "--overwrite"]
    return [sys.executable, "-m", "latentkit.cli", "train", *head, "--data", str(train), "--val", str(val),
            "--config", str(cfg), "--steps", str(steps), *TRAIN]


def _last_logged_step(run: Path) -> int | None:
    try:
        lines = (run / "log.csv").read_text().splitlines()
    except OSError:
        return None
    for ln in reversed(lines[1:]):
        head = ln.split(",", 1)[0]
        if head.isdigit():
            return int(head)
    return None


def _in_phase(run: Path, phase: str) -> bool:
    ck = run / "checkpoints"
    if phase == "checkpoint":
        return ck.is_dir() and any(p.name.startswith(".step_") and p.is_dir() for p in ck.iterdir())
    if phase == "validation":
        s = _last_logged_step(run)
        return bool(s) and s % VAL_EVERY == 0 and not (ck / f"step_{s:07d}").exists() and not _in_phase(run, "checkpoint")
    return False


def run_and_kill(cmd: list[str], run: Path, phase: str, rng: random.Random, start_step: int,
                 timeout: float = 120.0) -> str:
    """Start `cmd`, kill it with SIGKILL in `phase`; returns the phase hit ('finished' if it ended first)."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env())
    t0, hit = time.time(), None
    delay = rng.uniform(0.0, 1.5)
    t_training = None
    while p.poll() is None and time.time() - t0 < timeout:
        s = _last_logged_step(run)
        if t_training is None and s is not None and s > start_step:
            t_training = time.time()  # past start-up: the steps are running
        if phase == "step" and t_training is not None and time.time() - t_training >= delay:
            hit = "step"
        elif phase in ("checkpoint", "validation") and t_training is not None and _in_phase(run, phase):
            hit = phase
        if hit:
            p.send_signal(signal.SIGKILL)
            p.wait()
            return hit
        time.sleep(0.001)
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return "timeout"
    return "finished"


def final_state(run: Path) -> dict:
    from safetensors.torch import load_file

    from latentkit.train import checkpoint

    ck = checkpoint.latest(run)
    return {f: load_file(ck / f) for f in (checkpoint.MODEL_FILE, checkpoint.EMA_FILE, checkpoint.DISC_FILE)}


def losses(run: Path) -> list[tuple[int, str]]:
    with open(run / "log.csv") as f:
        return [(int(r["step"]), r["loss"]) for r in csv.DictReader(f) if r["loss"]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--phases", default="step,checkpoint,validation", help="comma-separated, cycled through")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR (created; kept afterwards) instead of a temporary folder")
    args = ap.parse_args()
    import torch

    from latentkit.train import checkpoint

    phases = args.phases.split(",")
    rng = random.Random(args.seed)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        data = make_data(root)
        whole, killed = root / "whole", root / "killed"
        subprocess.run(command(whole, data, args.steps, resume=False), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=child_env())
        hits: list[dict] = []
        while len(hits) < args.kills:
            resume = (killed / "checkpoints" / "latest").is_file()
            start = checkpoint.load(checkpoint.latest(killed))["trainer"]["step"] if resume else 0
            if start >= args.steps:
                break
            phase = phases[len(hits) % len(phases)]
            hit = run_and_kill(command(killed, data, args.steps, resume), killed, phase, rng, start)
            if hit == "finished":
                break
            # the checkpoint a resume starts from must load whole (a kill before the first one leaves none)
            has = (killed / "checkpoints" / "latest").is_file()
            latest = checkpoint.load(checkpoint.latest(killed))["trainer"]["step"] if has else 0
            hits.append({"phase": hit, "resumed_from": start, "latest_after_kill": latest})
        last = command(killed, data, args.steps, (killed / "checkpoints" / "latest").is_file())
        subprocess.run(last, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,  # to the end
                       env=child_env())
        a, b = final_state(whole), final_state(killed)
        same_weights = all(a[f].keys() == b[f].keys() and all(torch.equal(a[f][k], b[f][k]) for k in a[f]) for f in a)
        la, lb = losses(whole), losses(killed)
        same_log = la == lb and [s for s, _ in lb] == list(range(1, args.steps + 1))
        leftovers = [p.name for p in (killed / "checkpoints").iterdir() if p.name.startswith(".step_")]
    result = {"kills": len(hits), "by_phase": {ph: sum(h["phase"] == ph for h in hits) for ph in
                                               sorted({h["phase"] for h in hits})},
              "steps": args.steps, "bit_exact_weights": same_weights, "same_losses": same_log,
              "stale_temp_folders": leftovers, "seconds": round(time.time() - t0, 1), "kills_detail": hits}
    ok = same_weights and same_log and len(hits) == args.kills
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{len(hits)} kills ({', '.join(f'{v} {k}' for k, v in result['by_phase'].items())}), {args.steps} "
              f"steps: weights {'bit-exact' if same_weights else 'DIFFER'}, losses "
              f"{'identical' if same_log else 'DIFFER'}, {result['seconds']} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

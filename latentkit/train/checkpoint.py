"""Atomic training checkpoints: ``RUN/checkpoints/step_NNNNNNN/`` and a ``latest`` pointer.

A checkpoint folder holds ``config.json`` (the AutoencoderKL config), ``model.safetensors`` (raw weights),
``ema.safetensors`` (the EMA weights, what :func:`latentkit.load_vae` loads), ``disc.safetensors`` and
``trainer.pt`` (optimizer states, step, RNG and data-generator states, the run's arguments). It is written
to a temporary folder and renamed, so a crash never leaves a half checkpoint behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import LatentkitError


def save(run_dir: Path, step: int, config: dict, model_sd: dict, ema_sd: dict, disc_sd: dict,
         trainer_state: dict, keep: int = 3) -> Path:
    """Write checkpoint ``step_NNNNNNN``, point ``latest`` at it, then delete all but the `keep` newest
    checkpoints (0: keep all) and the one ``best`` points at."""
    ckdir = run_dir / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=ckdir))
    cpu = lambda sd: {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}  # noqa: E731
    # the architecture only: diffusers' private keys (``_name_or_path`` of an --init model is a Path) stay out
    arch = {k: v for k, v in config.items() if not k.startswith("_")}
    (tmp / "config.json").write_text(json.dumps(arch, indent=2))
    save_file(cpu(model_sd), tmp / "model.safetensors")
    save_file(cpu(ema_sd), tmp / "ema.safetensors")
    save_file(cpu(disc_sd), tmp / "disc.safetensors")
    torch.save(trainer_state, tmp / "trainer.pt")
    final = ckdir / name
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    pointer = ckdir / ".latest.tmp"
    pointer.write_text(name)
    pointer.replace(ckdir / "latest")
    best = ckdir / "best"
    protected = {best.read_text().strip()} if best.is_file() else set()
    recent = sorted(p for p in ckdir.glob("step_*") if p.name not in protected)  # the new one comes last
    for p in recent[:-keep] if keep > 0 else []:  # keep the `keep` newest (and the best)
        shutil.rmtree(p, ignore_errors=True)
    return final


#: what a run folder holds besides its checkpoints (written by the trainer)
LOG_FILE, ARGS_FILE = "log.csv", "args.json"
RUN_FILES = (LOG_FILE, ARGS_FILE)
VAL_GRID = "val_step{step:07d}.png"  # validation grid of one step
VAL_GRIDS = "val_step*.png"


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` already holds a training run (checkpoints or a log)."""
    return (run_dir / "checkpoints").is_dir() or any((run_dir / f).is_file() for f in RUN_FILES)


def delete_run(run_dir: Path) -> None:
    """Delete a run's checkpoints, log, arguments and validation grids; other files stay."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    for f in RUN_FILES:
        (run_dir / f).unlink(missing_ok=True)
    for f in run_dir.glob(VAL_GRIDS):
        f.unlink()


def mark_best(run_dir: Path, ckpt: Path) -> None:
    pointer = run_dir / "checkpoints" / ".best.tmp"
    pointer.write_text(ckpt.name)
    pointer.replace(run_dir / "checkpoints" / "best")


def latest(run_dir: Path) -> Path:
    p = run_dir / "checkpoints" / "latest"
    if not p.is_file():
        raise LatentkitError(f"{run_dir} has no checkpoints to resume from (no checkpoints/latest)")
    return run_dir / "checkpoints" / p.read_text().strip()


def load(ckpt: Path) -> dict:
    return {
        "config": json.loads((ckpt / "config.json").read_text()),
        "model": load_file(ckpt / "model.safetensors"),
        "ema": load_file(ckpt / "ema.safetensors"),
        "disc": load_file(ckpt / "disc.safetensors"),
        "trainer": torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=False),
    }

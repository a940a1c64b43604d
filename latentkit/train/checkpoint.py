"""The layout of a training run folder, defined here once, and its atomic checkpoints.

``RUN/checkpoints/step_NNNNNNN/`` holds ``config.json`` (the AutoencoderKL config), ``model.safetensors`` (raw
weights), ``ema.safetensors`` (the EMA weights, what :func:`latentkit.load_vae` loads through :func:`find`),
``disc.safetensors`` and ``trainer.pt`` (optimizer states, step, RNG and data-generator states, the run's
arguments: tensors and plain Python values only, read with ``torch.load(weights_only=True)``, so a crafted run
folder cannot run code). ``RUN/checkpoints/latest`` and ``best`` name a checkpoint folder. A checkpoint is
written to a temporary folder and renamed, so a crash never leaves a half checkpoint behind.
"""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import LatentkitError

CKPT_DIR, LATEST, BEST = "checkpoints", "latest", "best"
CONFIG_FILE, MODEL_FILE, EMA_FILE = "config.json", "model.safetensors", "ema.safetensors"
DISC_FILE, TRAINER_FILE = "disc.safetensors", "trainer.pt"


def save(run_dir: Path, step: int, config: dict, model_sd: dict, ema_sd: dict, disc_sd: dict,
         trainer_state: dict, keep: int = 3) -> Path:
    """Write checkpoint ``step_NNNNNNN``, point ``latest`` at it, then delete all but the `keep` newest
    checkpoints (0: keep all) and the one ``best`` points at."""
    ckdir = run_dir / CKPT_DIR
    ckdir.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:07d}"
    for stale in ckdir.glob(".step_*"):  # temporary folders of writes a kill cut short (one writer per run)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=ckdir))
    cpu = lambda sd: {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}  # noqa: E731
    # the architecture only: diffusers' private keys (``_name_or_path`` of an --init model is a Path) stay out
    arch = {k: v for k, v in config.items() if not k.startswith("_")}
    (tmp / CONFIG_FILE).write_text(json.dumps(arch, indent=2))
    save_file(cpu(model_sd), tmp / MODEL_FILE)
    save_file(cpu(ema_sd), tmp / EMA_FILE)
    save_file(cpu(disc_sd), tmp / DISC_FILE)
    torch.save(trainer_state, tmp / TRAINER_FILE)
    final = ckdir / name
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    pointer = ckdir / f".{LATEST}.tmp"
    pointer.write_text(name)
    pointer.replace(ckdir / LATEST)
    best = ckdir / BEST
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
    return (run_dir / CKPT_DIR).is_dir() or any((run_dir / f).is_file() for f in RUN_FILES)


def delete_run(run_dir: Path) -> None:
    """Delete a run's checkpoints, log, arguments and validation grids; other files stay."""
    shutil.rmtree(run_dir / CKPT_DIR, ignore_errors=True)
    for f in RUN_FILES:
        (run_dir / f).unlink(missing_ok=True)
    for f in run_dir.glob(VAL_GRIDS):
        f.unlink()


def mark_best(run_dir: Path, ckpt: Path) -> None:
    pointer = run_dir / CKPT_DIR / f".{BEST}.tmp"
    pointer.write_text(ckpt.name)
    pointer.replace(run_dir / CKPT_DIR / BEST)


def latest(run_dir: Path) -> Path:
    """The checkpoint folder a run resumes from; raises :class:`LatentkitError` when there is none."""
    p = run_dir / CKPT_DIR / LATEST
    if not p.is_file():
        raise LatentkitError(f"{run_dir} has no checkpoints to resume from (no {CKPT_DIR}/{LATEST})")
    return run_dir / CKPT_DIR / p.read_text().strip()


def find(path: Path) -> Path | None:
    """The checkpoint folder `path` stands for (a checkpoint folder itself, or a run's latest), or None."""
    if (path / EMA_FILE).is_file():
        return path
    pointer = path / CKPT_DIR / LATEST
    if pointer.is_file():
        ckpt = path / CKPT_DIR / pointer.read_text().strip()
        if (ckpt / EMA_FILE).is_file():
            return ckpt
    return None


def load(ckpt: Path) -> dict:
    """Everything a checkpoint holds. ``trainer.pt`` is read with ``weights_only=True`` (no code runs)."""
    try:
        trainer = torch.load(ckpt / TRAINER_FILE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise LatentkitError(f"{ckpt / TRAINER_FILE} holds pickled objects beyond tensors and plain values (written "
                             "by an older latentkit, or crafted); it is not loaded, since unpickling can run code. "
                             "Start a new run with --init from the run folder instead") from None
    return {
        "config": json.loads((ckpt / CONFIG_FILE).read_text()),
        "model": load_file(ckpt / MODEL_FILE),
        "ema": load_file(ckpt / EMA_FILE),
        "disc": load_file(ckpt / DISC_FILE),
        "trainer": trainer,
    }

"""The training loop: latent-diffusion's autoencoder recipe on top of `accelerate`.

``accelerate launch -m latentkit.cli train ...`` runs it on several GPUs or machines unchanged; plain
``latentkit train`` runs on one CPU or GPU. See :class:`TrainArgs` for every knob.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import LatentkitError
from ..io import atomic_write, list_images, read_image
from ..model import config_dict, latent_shape, load_vae, make_vae, num_parameters
from ..runtime import cpu_has_bf16
from . import checkpoint
from .data import Prefetcher, RandomCrops
from .ema import EMA
from .losses import (PatchDiscriminator, adaptive_weight, generator_adv_loss, hinge_d_loss, kl_loss,
                     reconstruction_loss)


@dataclass
class TrainArgs:
    data: str = ""
    out: str = ""
    val: str | None = None
    config: str = "tiny"
    init: str | None = None            # start from any model load_vae accepts (fine-tuning)
    decoder_only: bool = False         # freeze encoder + quant_conv: the latent space stays as it is
    steps: int = 10000
    time_budget: float = 0.0           # minutes: end the run's schedule within this (sets steps; 0: off)
    batch_size: int = 8
    crop: int = 128
    lr: float = 5e-4
    min_lr_ratio: float = 0.1          # cosine decay ends at lr * this
    schedule: str = "constant"         # constant | cosine (after warm-up)
    warmup: int = 500
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    rec_loss: str = "l1"               # l1 | l2
    perceptual_weight: float = 1.0
    perceptual_start: int = 0          # step at which the LPIPS term switches on
    lpips_net: str = "squeeze"
    kl_weight: float = 1e-6            # per latent element (see losses.kl_loss)
    kl_warmup: int = 0                 # steps over which kl_weight ramps up from 0
    free_bits: float = 0.0             # nats per latent element and channel, not penalised
    disc_start: int = 50000            # step at which the adversarial term switches on
    disc_weight: float = 0.5
    disc_lr: float = 2e-4
    disc_width: int = 32
    disc_layers: int = 3
    sample_posterior: bool = True      # decode a posterior sample (True) or its mean while training
    denoise_sigma: float = 0.0         # > 0: corrupt inputs with Gaussian noise, reconstruct the clean image
    ema_decay: float = 0.999
    mixed_precision: str = "auto"      # auto (bf16 where supported) | bf16 | no
    channels_last: bool = True
    compile: bool = False
    seed: int = 0
    ckpt_every: int = 500
    val_every: int = 1000
    log_every: int = 25
    keep: int = 3
    threads: int = 0                   # torch CPU threads (0: torch's default)
    extra: dict = field(default_factory=dict)


def bf16_supported() -> bool:
    """Whether bf16 autocast runs natively here (a CUDA GPU with bf16, or a CPU with avx512_bf16/AMX)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


#: steps over which `time_budget` measures the speed of a step (after the first, slower ones)
BUDGET_PROBE = (10, 40)


def steps_for_budget(step: int, elapsed_s: float, s_per_step: float, budget_s: float, cap: int) -> int:
    """Total steps that end a run within `budget_s` seconds of training when `step` steps took `elapsed_s`
    and each further one takes `s_per_step`; 5% is left for checkpoints. At most `cap`, at least `step`."""
    more = int(max(0.0, 0.95 * budget_s - elapsed_s) / max(s_per_step, 1e-9))
    return max(step, min(cap, step + more))


def lr_at(args: TrainArgs, step: int) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if args.schedule == "cosine":
        t = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
        return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
    return args.lr


def _rng_state() -> dict:
    """Every RNG's state as tensors and plain values (so checkpoints load with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                      gauss),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    name, keys, pos, has_gauss, gauss = s["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _truncate_log(path: Path, step: int) -> None:
    """Drop the log rows after `step` (written after the checkpoint a run resumes from), atomically."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [ln for ln in lines[1:] if int(ln.split(",", 1)[0]) <= step]
    if len(kept) < len(lines):
        atomic_write(path, lambda tmp: tmp.write_text("".join(kept)))


class _AutoencoderPass(nn.Module):
    """Encode, take z = mean (``noise=None``) or mean + std * noise, decode; returns (mean, logvar, decoded),
    all in the model's [-1, 1] image space. One forward, so DistributedDataParallel can sync its gradients."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None):
        enc = self.vae.encode(x).latent_dist
        z = enc.mean if noise is None else enc.mean + enc.std * noise
        return enc.mean, enc.logvar, self.vae.decode(z).sample


class Trainer:
    def __init__(self, args: TrainArgs, resume: bool = False):
        from accelerate import Accelerator

        self.args = args
        self.run = Path(args.out)
        state = None
        if resume:
            state = checkpoint.load(checkpoint.latest(self.run))
            saved = state["trainer"]["args"]
            keep_new = {"steps", "ckpt_every", "val_every", "log_every", "threads", "compile", "keep",
                        "out", "data", "val"}
            for k, v in saved.items():
                if k not in keep_new or getattr(args, k) == getattr(TrainArgs, k, None):
                    setattr(args, k, v)
        if args.threads:
            torch.set_num_threads(args.threads)
        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its fastest kernels once
        mp = args.mixed_precision
        if mp == "auto":
            mp = "bf16" if bf16_supported() else "no"
        self.accel = Accelerator(mixed_precision=mp)
        torch.manual_seed(args.seed)
        random.seed(args.seed)
        np.random.seed(args.seed)

        if state is not None:
            self.vae = make_vae(state["config"])
            self.vae.load_state_dict(state["model"])
        elif args.init:
            self.vae = load_vae(args.init, dtype=torch.float32)
        else:
            self.vae = make_vae(config_dict(args.config), seed=args.seed)
        self.vae.train().requires_grad_(True)
        if args.decoder_only:
            self.vae.encoder.requires_grad_(False)
            if self.vae.quant_conv is not None:
                self.vae.quant_conv.requires_grad_(False)
        if args.channels_last:
            self.vae.to(memory_format=torch.channels_last)
        self.disc = PatchDiscriminator(width=args.disc_width, n_layers=args.disc_layers)
        params = [p for p in self.vae.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=args.weight_decay)
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=args.disc_lr, betas=(0.5, 0.9))
        self.lpips = None
        if args.perceptual_weight > 0:
            from ..metrics.lpips import LPIPS

            self.lpips = LPIPS(args.lpips_net)
        # the autoencoder pass is one module's forward, so DistributedDataParallel sees it and syncs gradients
        self.ae, self.disc, self.opt, self.opt_d = self.accel.prepare(_AutoencoderPass(self.vae), self.disc,
                                                                      self.opt, self.opt_d)
        self.vae = self.accel.unwrap_model(self.ae).vae
        self.ema = EMA(self.vae, args.ema_decay)
        if self.lpips is not None:
            self.lpips.to(self.accel.device)

        self.data = RandomCrops(args.data, args.crop, seed=args.seed + self.accel.process_index)
        self.step, self.wall, self.images_seen = 0, 0.0, 0
        self.best_score = -float("inf")
        if state is not None:
            self.vae.load_state_dict(state["model"])
            self.ema.load_state_dict(state["trainer"]["ema"], state["ema"])
            self.accel.unwrap_model(self.disc).load_state_dict(state["disc"])
            self.opt.load_state_dict(state["trainer"]["opt"])
            self.opt_d.load_state_dict(state["trainer"]["opt_d"])
            t = state["trainer"]
            self.step, self.wall, self.images_seen = t["step"], t["wall"], t["images_seen"]
            self.best_score = t.get("best_score", self.best_score)
            self.data.load_state_dict(t["data"])
            _set_rng_state(t["rng"])
            if self.accel.is_main_process:
                _truncate_log(self.run / checkpoint.LOG_FILE, self.step)
        self.val_files = list_images(args.val, recursive=True) if args.val else []
        for f in self.val_files:  # an unreadable validation image fails now, not an hour into the run
            read_image(f)
        self._forward = torch.compile(self.ae) if args.compile else self.ae
        self.run.mkdir(parents=True, exist_ok=True)
        (self.run / checkpoint.ARGS_FILE).write_text(json.dumps(asdict(args), indent=2))

    # -- one step ---------------------------------------------------------------------------------------
    def train_step(self, x01: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimizer step on a batch of images in [0, 1]; returns the losses as detached 0-d tensors (read
        them with ``float()`` only when needed: each read waits for a GPU to finish the step)."""
        a, step = self.args, self.step
        x = (x01 * 2 - 1).to(self.accel.device)
        if a.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x_in = x + a.denoise_sigma * 2 * torch.randn_like(x) if a.denoise_sigma > 0 else x
        for g in self.opt.param_groups:
            g["lr"] = lr_at(a, step)
        lat_shape = (x.shape[0], *latent_shape(self.vae, x.shape[3], x.shape[2]))
        noise = torch.randn(lat_shape, device=x.device) if a.sample_posterior else None
        with self.accel.autocast():
            mean, logvar, rec = self._forward(x_in, noise)
        rec = rec.float()
        logs: dict[str, torch.Tensor] = {}
        rec_l = reconstruction_loss(x, rec, a.rec_loss)
        nll = rec_l
        logs["rec"] = rec_l.detach()
        if self.lpips is not None and step >= a.perceptual_start:
            with self.accel.autocast():
                p = self.lpips((x + 1) / 2, (rec + 1) / 2).mean().float()
            nll = nll + a.perceptual_weight * p
            logs["lpips"] = p.detach()
        kl = kl_loss(mean, logvar, a.free_bits)
        klw = a.kl_weight * (min(1.0, step / a.kl_warmup) if a.kl_warmup else 1.0)
        loss = nll + klw * kl
        logs["kl"] = kl.detach()
        disc_on = step >= a.disc_start
        if disc_on:
            g_loss = generator_adv_loss(self.disc(rec))
            last = self.vae.decoder.conv_out.weight
            w = adaptive_weight(nll, g_loss, last) * a.disc_weight
            loss = loss + w * g_loss
            logs["g"], logs["d_weight"] = g_loss.detach(), w
        self.opt.zero_grad(set_to_none=True)
        self.accel.backward(loss)
        if a.grad_clip > 0:
            self.accel.clip_grad_norm_(self.ae.parameters(), a.grad_clip)
        self.opt.step()
        self.ema.update(self.vae)
        if disc_on:
            d_loss = hinge_d_loss(self.disc(x), self.disc(rec.detach()))
            self.opt_d.zero_grad(set_to_none=True)
            self.accel.backward(d_loss)
            self.opt_d.step()
            logs["d"] = d_loss.detach()
        logs["loss"] = loss.detach()
        self.step += 1
        self.images_seen += x.shape[0] * self.accel.num_processes
        return logs

    # -- validation, checkpoints ------------------------------------------------------------------------
    def ema_model(self):
        m = make_vae(self.vae.config, seed=None)
        self.ema.copy_to(m)
        return m.eval().requires_grad_(False).to(self.accel.device)

    def validate(self) -> dict[str, float]:
        """PSNR (8-bit) and LPIPS-squeeze of the EMA weights on the validation images at full resolution, and a
        grid of centre crops (original | reconstruction) written to the run folder."""
        from ..bench.evaluate import reconstructions
        from ..metrics.compare import compare

        ps, lp, grid = [], [], []
        for _, x, y in reconstructions(self.ema_model(), self.args.val, progress=False):
            m = compare(x, y, ("psnr", "lpips_squeeze"))[0]
            ps.append(m["psnr"])
            lp.append(m["lpips_squeeze"])
            if len(grid) < 4:
                c = min(192, x.shape[2], x.shape[3])
                h0, w0 = (x.shape[2] - c) // 2, (x.shape[3] - c) // 2
                grid.append(torch.cat([x[0, :, h0:h0 + c, w0:w0 + c], y[0, :, h0:h0 + c, w0:w0 + c]], 2).cpu())
        if grid:
            from PIL import Image

            g = torch.cat(grid, 1).permute(1, 2, 0).mul(255).round().byte().numpy()
            Image.fromarray(g).save(self.run / checkpoint.VAL_GRID.format(step=self.step))
        return {"val_psnr": float(np.mean(ps)), "val_lpips": float(np.mean(lp))}

    def save(self, data_state: dict | None = None) -> Path:
        """Write a checkpoint; `data_state` is the crop generator's state for the next batch (from the
        prefetcher while one runs)."""
        cfg = dict(self.vae.config)
        t = {"args": asdict(self.args), "step": self.step, "wall": self.wall, "images_seen": self.images_seen,
             "best_score": self.best_score, "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
             "opt_d": self.opt_d.state_dict(), "data": data_state or self.data.state_dict(), "rng": _rng_state()}
        return checkpoint.save(self.run, self.step, cfg, self.vae.state_dict(), self.ema.shadow,
                               self.accel.unwrap_model(self.disc).state_dict(), t, keep=self.args.keep)

    def fit(self) -> None:
        a = self.args
        log_path = self.run / checkpoint.LOG_FILE
        fields = ["step", "wall_s", "images_seen", "lr", "loss", "rec", "lpips", "kl", "g", "d", "d_weight",
                  "img_per_s", "val_psnr", "val_lpips"]
        main = self.accel.is_main_process
        new = not log_path.exists()
        logf = open(log_path, "a", newline="") if main else open(os.devnull, "w")
        writer = csv.DictWriter(logf, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        if main:
            n = num_parameters(self.vae)
            print(f"training {n / 1e6:.2f}M parameters on {self.accel.device} ({self.accel.mixed_precision}), "
                  f"{len(self.data)} images, step {self.step} -> {a.steps}", flush=True)
        prefetch = Prefetcher(self.data, a.batch_size)
        bar = tqdm(total=a.steps, initial=self.step, disable=not self.accel.is_main_process, dynamic_ncols=True,
                   mininterval=5)
        t_log, n_log = time.time(), 0
        t_fit, t_probe = time.time(), 0.0
        budget_step0 = self.step
        try:
            while self.step < a.steps:
                t0 = time.time()
                logs = self.train_step(prefetch.next())
                self.wall += time.time() - t0
                n_log += a.batch_size
                bar.update(1)
                if a.time_budget > 0 and self.step - budget_step0 in BUDGET_PROBE:
                    # size the run (and its cosine schedule, which reads a.steps) to the time budget
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    if self.step - budget_step0 == BUDGET_PROBE[0]:
                        t_probe = time.time()
                    else:
                        per_step = (time.time() - t_probe) / (BUDGET_PROBE[1] - BUDGET_PROBE[0])
                        a.steps = steps_for_budget(self.step, time.time() - t_fit, per_step,
                                                   a.time_budget * 60, a.steps)
                        bar.total = a.steps
                        bar.write(f"time budget {a.time_budget:g} min: {per_step:.3f} s/step -> {a.steps} steps")
                        # checkpoints keep the sized run: a resume continues it exactly rather than re-sizing
                        a.extra["time_budget_min"], a.time_budget = a.time_budget, 0.0
                if self.step % a.log_every == 0:
                    logs = {k: float(v) for k, v in logs.items()}
                    rate = n_log / (time.time() - t_log)
                    t_log, n_log = time.time(), 0
                    bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if k in ("rec", "lpips", "kl", "d")}
                                    | {"img/s": f"{rate:.1f}"})
                    writer.writerow({"step": self.step, "wall_s": round(self.wall, 1),
                                     "images_seen": self.images_seen, "lr": lr_at(a, self.step - 1),
                                     "img_per_s": round(rate, 2), **logs})
                    logf.flush()
                last = self.step == a.steps
                is_val = self.val_files and (self.step % a.val_every == 0 or last)
                if (self.step % a.ckpt_every == 0 or last or is_val) and self.accel.is_main_process:
                    v = self.validate() if is_val else None
                    if v:
                        writer.writerow({"step": self.step, "wall_s": round(self.wall, 1),
                                         "images_seen": self.images_seen, **v})
                        logf.flush()
                        bar.write(f"step {self.step}: val PSNR {v['val_psnr']:.2f} dB, "
                                  f"LPIPS {v['val_lpips']:.4f}")
                    ck = self.save(prefetch.state_dict())
                    if v:
                        score = v["val_psnr"] - 20 * v["val_lpips"]
                        if score > self.best_score:
                            self.best_score = score
                            checkpoint.mark_best(self.run, ck)
        finally:
            prefetch.close()
            bar.close()
            logf.close()


def train(args: TrainArgs, resume: bool = False, overwrite: bool = False) -> Path:
    """Run (or resume) training; returns the run folder. Raises LatentkitError on bad input.

    A new run (``resume=False``) refuses a folder that already holds a run unless ``overwrite``, which deletes
    that run's checkpoints, log and validation grids first (other files in the folder are kept)."""
    if not resume and not args.data:
        raise LatentkitError("--data is required")
    run = Path(args.out)
    if resume and not run.is_dir():
        raise LatentkitError(f"cannot resume: run folder {args.out} does not exist")
    if not resume and checkpoint.holds_run(run):
        if not overwrite:
            raise LatentkitError(f"{run} already holds a training run: pass --resume to continue it or "
                                 "--overwrite to start again from step 0 (deleting its checkpoints and log)")
        checkpoint.delete_run(run)
    Trainer(args, resume=resume).fit()
    return Path(args.out)

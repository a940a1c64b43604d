"""The training loop: latent-diffusion's autoencoder recipe on top of `accelerate`.

``accelerate launch -m latentkit.cli train ...`` runs it on several GPUs or machines unchanged; plain
``latentkit train`` runs on one CPU or GPU. Every knob: :class:`latentkit.train.args.TrainArgs`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import time
from dataclasses import asdict
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
from .args import BUDGET_PROBE, TrainArgs
from .data import Prefetcher, RandomCrops
from .ema import EMA
from .losses import (PatchDiscriminator, adaptive_weight, generator_adv_loss, hinge_d_loss, kl_loss,
                     reconstruction_loss)


def bf16_supported() -> bool:
    """Whether bf16 autocast runs natively here (a CUDA GPU with bf16, or a CPU with avx512_bf16/AMX)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


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
    """Drop the log rows after `step` (written after the checkpoint a run resumes from) and a last row cut short,
    atomically."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    # a row a kill cut short has no newline (and may have lost digits of its step): dropped
    kept = lines[:1] + [ln for ln in lines[1:] if ln.endswith("\n") and int(ln.split(",", 1)[0]) <= step]
    if len(kept) < len(lines):
        atomic_write(path, lambda tmp: tmp.write_text("".join(kept)))


class _AutoencoderPass(nn.Module):
    """Encode, take z = mean (``noise=None``) or mean + std * noise, decode; returns (mean, logvar, decoded,
    rate), the first three in the model's [-1, 1] image space, ``rate`` the codec rate loss
    (:func:`~latentkit.train.codec_noise.rate_loss`) when priced, else None. One forward, so
    DistributedDataParallel can sync its gradients."""

    def __init__(self, vae: nn.Module, quantizer=None, price_rate: bool = False):
        super().__init__()
        self.vae, self.quantizer, self.price_rate = vae, quantizer, price_rate

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None):
        enc = self.vae.encode(x).latent_dist
        z = enc.mean if noise is None else enc.mean + enc.std * noise
        rate = None
        if self.quantizer is not None:  # tuned for the codec: latents as the codec rounds them (straight-through)
            steps, levels = self.quantizer.draw(z.shape[0])
            z = self.quantizer.quantize(z, steps)
            if self.price_rate:
                from .codec_noise import rate_loss

                rate = rate_loss(z, steps, levels, x.shape[-2] * x.shape[-1])
        return enc.mean, enc.logvar, self.vae.decode(z).sample, rate


class Trainer:
    """One training run: build (or restore) the model, optimisers and data, then :meth:`fit`."""

    #: knobs a resumed run takes from the command line when given; every other one comes from the checkpoint
    RESUME_OVERRIDES = {"steps", "ckpt_every", "val_every", "log_every", "threads", "compile", "keep", "out", "data",
                        "val"}

    def __init__(self, args: TrainArgs, resume: bool = False):
        self.args, self.run = args, Path(args.out)
        state = checkpoint.load(checkpoint.latest(self.run)) if resume else None
        if state is not None:
            self._restore_args(state["trainer"]["args"])
        self._setup_runtime()
        self._build_model(state)
        self.data = RandomCrops(args.data, args.crop, seed=args.seed + self.accel.process_index)
        self._build_optimisers()
        self.step, self.wall, self.images_seen, self.best_score = 0, 0.0, 0, -float("inf")
        if state is not None:
            self._restore_state(state)
        self.val_files = list_images(args.val, recursive=True) if args.val else []
        for f in self.val_files:  # an unreadable validation image fails now, not an hour into the run
            read_image(f)
        self._forward = torch.compile(self.ae) if args.compile else self.ae
        self.run.mkdir(parents=True, exist_ok=True)
        (self.run / checkpoint.ARGS_FILE).write_text(json.dumps(asdict(args), indent=2))

    # -- building the run ------------------------------------------------------------------------------------
    def _restore_args(self, saved: dict) -> None:
        """Take the saved run's knobs, except those in RESUME_OVERRIDES given with a non-default value."""
        for k, v in saved.items():
            if k not in self.RESUME_OVERRIDES or getattr(self.args, k) == getattr(TrainArgs, k, None):
                setattr(self.args, k, v)

    def _setup_runtime(self) -> None:
        """Threads, cuDNN, mixed precision (``accelerate``) and the seeds."""
        from accelerate import Accelerator

        a = self.args
        if a.threads:
            torch.set_num_threads(a.threads)
        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its fastest kernels once
        mp = a.mixed_precision
        if mp == "auto":
            mp = "bf16" if bf16_supported() else "no"
        self.accel = Accelerator(mixed_precision=mp)
        torch.manual_seed(a.seed)
        random.seed(a.seed)
        np.random.seed(a.seed)

    def _build_model(self, state: dict | None) -> None:
        """The autoencoder (from the checkpoint, --init or --config) and the discriminator, trainable parts set."""
        a = self.args
        if state is not None:
            self.vae = make_vae(state["config"])
            self.vae.load_state_dict(state["model"])
        elif a.init:
            self.vae = load_vae(a.init, dtype=torch.float32)
        else:
            self.vae = make_vae(config_dict(a.config), seed=a.seed)
        self.vae.train().requires_grad_(True)
        if a.encoder_only:
            if a.decoder_only:
                raise LatentkitError("--encoder-only and --decoder-only exclude each other")
            if a.disc_start < a.steps:
                raise LatentkitError("--encoder-only trains without the adversarial term (its adaptive weight needs "
                                     "the decoder's gradients): set --disc-start beyond --steps")
            self.vae.decoder.requires_grad_(False)
            if self.vae.post_quant_conv is not None:
                self.vae.post_quant_conv.requires_grad_(False)
        if a.decoder_only:
            self.vae.encoder.requires_grad_(False)
            if self.vae.quant_conv is not None:
                self.vae.quant_conv.requires_grad_(False)
        if a.channels_last:
            self.vae.to(memory_format=torch.channels_last)
        self.disc = PatchDiscriminator(width=a.disc_width, n_layers=a.disc_layers)
        self.lpips = None
        if a.perceptual_weight > 0:
            from ..metrics.lpips import LPIPS

            self.lpips = LPIPS(a.lpips_net)

    def _build_optimisers(self) -> None:
        """AdamW for each network; everything handed to ``accelerate`` (devices, DDP); the EMA of the weights."""
        a = self.args
        groups = param_groups(self.vae, a.lr_scale)
        self.opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.99), weight_decay=a.weight_decay)
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=a.disc_lr, betas=(0.5, 0.9))
        # the autoencoder pass is one module's forward, so DistributedDataParallel sees it and syncs gradients
        self.ae, self.disc, self.opt, self.opt_d = self.accel.prepare(
            _AutoencoderPass(self.vae, self._codec_quantizer(), price_rate=a.codec_rate_weight > 0), self.disc,
            self.opt, self.opt_d)
        self.vae = self.accel.unwrap_model(self.ae).vae
        self.ema = EMA(self.vae, a.ema_decay)
        if self.lpips is not None:
            self.lpips.to(self.accel.device)

    def _codec_quantizer(self):
        """With --codec-qualities, the codec's quantization of the latents (None otherwise). The model gains it
        uses are measured once, with the starting weights on up to 16 training images, and kept in the run's
        args (``extra["codec_gains"]``), so a resumed run quantizes exactly as before."""
        a = self.args
        if a.codec_rate_weight > 0 and not a.codec_qualities:
            raise LatentkitError("--codec-rate-weight prices the bits of quantized latents: it needs --codec-qualities")
        if not a.codec_qualities:
            return None
        from .codec_noise import CodecQuantizer, model_gains, parse_qualities

        try:
            qualities = parse_qualities(a.codec_qualities)
        except (ValueError, LatentkitError) as e:
            raise LatentkitError(f"--codec-qualities: {e}") from None
        if a.sample_posterior:
            raise LatentkitError("--codec-qualities needs --no-sample-posterior (the codec quantizes the posterior "
                                 "mean)")
        if a.codec_rate_weight > 0 and (a.decoder_only or a.rec_loss != "l2"):
            raise LatentkitError("--codec-rate-weight prices the bits the encoder spends in squared error: it needs "
                                 "the encoder training (not --decoder-only) and --rec-loss l2")
        if "codec_gains" not in a.extra:
            step = max(1, len(self.data) // 16)
            images = [im.float().div(255) for im in self.data.images[::step][:16]]
            a.extra["codec_gains"] = model_gains(self.vae.eval(), images).tolist()
            self.vae.train()
        return CodecQuantizer(np.array(a.extra["codec_gains"]), qualities, a.codec_clean)

    def _restore_state(self, state: dict) -> None:
        """Optimisers, EMA, discriminator, counters, data generator and RNGs of the checkpoint; the log is cut
        back to its step."""
        t = state["trainer"]
        self.ema.load_state_dict(t["ema"], state["ema"])
        self.accel.unwrap_model(self.disc).load_state_dict(state["disc"])
        self.opt.load_state_dict(t["opt"])
        self.opt_d.load_state_dict(t["opt_d"])
        self.step, self.wall, self.images_seen = t["step"], t["wall"], t["images_seen"]
        self.best_score = t.get("best_score", self.best_score)
        self.data.load_state_dict(t["data"])
        _set_rng_state(t["rng"])
        if self.accel.is_main_process:
            _truncate_log(self.run / checkpoint.LOG_FILE, self.step)

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
            g["lr"] = lr_at(a, step) * g.get("lr_scale", 1.0)  # checkpoints before --lr-scale have none
        lat_shape = (x.shape[0], *latent_shape(self.vae, x.shape[3], x.shape[2]))
        noise = torch.randn(lat_shape, device=x.device) if a.sample_posterior else None
        with self.accel.autocast():
            mean, logvar, rec, rate = self._forward(x_in, noise)
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
        if rate is not None:
            loss = loss + a.codec_rate_weight * rate
            logs["rate"] = rate.detach()
        disc_on = step >= a.disc_start
        if step >= a.disc_start + a.disc_warmup:
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

    #: the columns of log.csv
    LOG_FIELDS = ["step", "wall_s", "images_seen", "lr", "loss", "rec", "lpips", "kl", "g", "d", "d_weight",
                  "img_per_s", "val_psnr", "val_lpips", "rate"]

    def fit(self) -> None:
        """Train up to ``args.steps``: log every ``log_every`` steps, validate and checkpoint on schedule."""
        a = self.args
        self._open_log()
        if self.accel.is_main_process:
            print(f"training {num_parameters(self.vae) / 1e6:.2f}M parameters on {self.accel.device} "
                  f"({self.accel.mixed_precision}), {len(self.data)} images, step {self.step} -> {a.steps}",
                  flush=True)
        prefetch = Prefetcher(self.data, a.batch_size)
        self.bar = tqdm(total=a.steps, initial=self.step, disable=not self.accel.is_main_process,
                        dynamic_ncols=True, mininterval=5)
        self._t_log, self._n_log = time.time(), 0
        budget = _BudgetProbe(self.step) if a.time_budget > 0 else None
        try:
            while self.step < a.steps:
                t0 = time.time()
                logs = self.train_step(prefetch.next())
                self.wall += time.time() - t0
                self._n_log += a.batch_size
                self.bar.update(1)
                if budget is not None and budget.observe(self.step):
                    self._size_run(budget)
                    budget = None
                if self.step % a.log_every == 0:
                    self._log_losses(logs)
                last = self.step == a.steps
                is_val = self.val_files and (self.step % a.val_every == 0 or last)
                if (self.step % a.ckpt_every == 0 or last or is_val) and self.accel.is_main_process:
                    self._checkpoint(prefetch.state_dict(), validate=bool(is_val))
        finally:
            prefetch.close()
            self.bar.close()
            self._logf.close()

    def _open_log(self) -> None:
        path = self.run / checkpoint.LOG_FILE
        new = not path.exists()
        self._logf = open(path, "a", newline="") if self.accel.is_main_process else open(os.devnull, "w")
        self._writer = csv.DictWriter(self._logf, fieldnames=self.LOG_FIELDS, extrasaction="ignore")
        if new:
            self._writer.writeheader()

    def _log_row(self, row: dict) -> None:
        self._writer.writerow({"step": self.step, "wall_s": round(self.wall, 1), "images_seen": self.images_seen,
                               **row})
        self._logf.flush()

    def _log_losses(self, logs: dict[str, torch.Tensor]) -> None:
        """A log.csv row of the step's losses, the learning rate and the images/s since the last row."""
        values = {k: float(v) for k, v in logs.items()}
        rate = self._n_log / (time.time() - self._t_log)
        self._t_log, self._n_log = time.time(), 0
        self.bar.set_postfix({k: f"{v:.4f}" for k, v in values.items() if k in ("rec", "lpips", "kl", "d", "rate")}
                             | {"img/s": f"{rate:.1f}"})
        self._log_row({"lr": lr_at(self.args, self.step - 1), "img_per_s": round(rate, 2), **values})

    def _size_run(self, budget: "_BudgetProbe") -> None:
        """Set ``steps`` (and so the cosine schedule, which reads it) to what fits ``time_budget``."""
        a = self.args
        per_step = budget.seconds_per_step()
        a.steps = steps_for_budget(self.step, budget.elapsed(), per_step, a.time_budget * 60, a.steps)
        self.bar.total = a.steps
        self.bar.write(f"time budget {a.time_budget:g} min: {per_step:.3f} s/step -> {a.steps} steps")
        # checkpoints keep the sized run: a resume continues it exactly rather than re-sizing
        a.extra["time_budget_min"], a.time_budget = a.time_budget, 0.0

    def _checkpoint(self, data_state: dict, validate: bool) -> None:
        """Validate (if due), write a checkpoint, and mark it best when its validation score is the best."""
        v = None
        if validate:  # leaves the RNGs alone: the first validation of a process builds LPIPS (a random init)
            with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
                v = self.validate()
        if v:
            self._log_row(v)
            self.bar.write(f"step {self.step}: val PSNR {v['val_psnr']:.2f} dB, LPIPS {v['val_lpips']:.4f}")
        ck = self.save(data_state)
        if v:
            score = v["val_psnr"] - 20 * v["val_lpips"]
            if score > self.best_score:
                self.best_score = score
                checkpoint.mark_best(self.run, ck)


def param_groups(model: torch.nn.Module, lr_scale: str) -> list[dict]:
    """The optimizer's parameter groups: the trainable parameters of `model`, split by ``--lr-scale``
    (``"REGEX=FACTOR;..."``: a parameter whose name matches REGEX, the first that does, gets ``lr_scale`` FACTOR;
    the rest 1). Each group has an ``lr_scale`` key, which the schedule multiplies its learning rate by."""
    rules = []
    for part in filter(None, (p.strip() for p in lr_scale.split(";"))):
        pattern, _, factor = part.rpartition("=")
        try:
            if not pattern:
                raise ValueError
            rules.append((re.compile(pattern), float(factor)))
        except (re.error, ValueError):
            raise LatentkitError(f"--lr-scale: {part!r} is not REGEX=FACTOR (a regular expression and a number)") \
                from None
    groups = [{"params": [], "lr_scale": f} for _, f in rules] + [{"params": [], "lr_scale": 1.0}]
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        i = next((i for i, (rx, _) in enumerate(rules) if rx.search(name)), len(rules))
        groups[i]["params"].append(p)
    for (rx, _), g in zip(rules, groups):
        if not g["params"]:
            raise LatentkitError(f"--lr-scale: {rx.pattern!r} matches no trainable parameter")
    return [g for g in groups if g["params"]]


class _BudgetProbe:
    """Times the steps BUDGET_PROBE[0]..BUDGET_PROBE[1] after `start_step` (the first steps are slower)."""

    def __init__(self, start_step: int):
        self.start_step, self.t_start, self.t_probe = start_step, time.time(), 0.0

    def observe(self, step: int) -> bool:
        """Call after each step; True once the probe is complete."""
        k = step - self.start_step
        if k not in BUDGET_PROBE:
            return False
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if k == BUDGET_PROBE[0]:
            self.t_probe = time.time()
            return False
        self.t_end = time.time()
        return True

    def seconds_per_step(self) -> float:
        return (self.t_end - self.t_probe) / (BUDGET_PROBE[1] - BUDGET_PROBE[0])

    def elapsed(self) -> float:
        return self.t_end - self.t_start


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

"""The ``encode-dataset`` job: every process encodes its shards (see :mod:`latentkit.data.items`), process 0
writes the index when all are done.

One process per device under ``accelerate launch`` (rank, world size, device and barriers from
``accelerate.PartialState``); a plain run is one process on the GPU if there is one, else the CPU. Images are
decoded and resized in DataLoader workers; the main thread groups them by output size, encodes full batches,
and hands each finished shard to a writer thread (at most two shards wait for it), so decoding, the model and
writing overlap.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import LatentkitError
from . import items as I
from . import shards as S
from .geometry import Resize, make_resize
from .loading import Loaded, SourceImages, collate, load_resized

#: --dtype names -> storage dtypes of latents and std
STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: shards that may wait for the writer thread before the encoder waits for it
MAX_PENDING_WRITES = 2


@dataclass
class Options:
    """An ``encode-dataset`` run. ``size``/``resize``/``buckets`` as :func:`latentkit.data.geometry.make_resize`
    takes them; ``batch_size``: images per model call; ``shard_size``: images per shard; ``sample``: store a
    posterior draw (seeded by ``seed`` and the shard) instead of the mean; ``with_std``: also store the posterior
    std (mean only); ``dtype``: storage dtype name (fp32, fp16, bf16); ``workers``: DataLoader workers per process
    (None: from the CPU count); ``verify``: fully re-read every shard (bad existing ones are encoded again);
    ``preview``: decode this many images to ``OUT_DIR/preview``; ``overwrite``: replace an output folder of a
    different job; ``max_pixels``: skip larger sources (None: no limit)."""

    out_dir: str
    source: str = ""
    model: str | None = None
    allow_pickle: bool = False
    size: str | None = None
    resize: str = "center-crop"
    buckets: str | None = None
    batch_size: int = 8
    shard_size: int = 1000
    sample: bool = False
    seed: int = 0
    with_std: bool = False
    dtype: str = "fp32"
    workers: int | None = None
    verify: bool = False
    preview: int = 0
    overwrite: bool = False
    max_pixels: int | None = None


@dataclass
class _Shard:
    """One shard being filled: images wait per output size until a batch is full."""

    shard: int
    fp: str
    generator: torch.Generator | None
    pending: dict[str, list[Loaded]] = field(default_factory=dict)
    latents: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    std: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)


class _Job:
    def __init__(self, paths: list[str], opts: Options):
        from ..model import downsampling_factor, load_vae, model_id

        self.t0 = time.perf_counter()
        self.paths, self.opts = paths, opts
        self.state = _state()
        self.rank, self.world = self.state.process_index, self.state.num_processes
        self.device = self.state.device
        self.out = Path(opts.out_dir)
        cpus = max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", self.world)))
        if self.device.type == "cpu" and self.world > 1 and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(cpus)
        self.workers = opts.workers if opts.workers is not None else (
            min(8, cpus) if self.device.type == "cuda" else max(1, cpus // 2))
        self.vae = load_vae(opts.model, device=self.device, allow_pickle=opts.allow_pickle, standalone=True)
        self.resize: Resize = make_resize(opts.size, opts.resize, opts.buckets, downsampling_factor(self.vae))
        self.dtype = STORAGE_DTYPES[opts.dtype]
        self.job = {"model_id": model_id(self.vae).hex(), "resize": self.resize.to_json(),
                    "kind": "sample" if opts.sample else "mean", "with_std": opts.with_std,
                    "dtype": str(self.dtype).removeprefix("torch."), "shard_size": opts.shard_size,
                    "version": S.VERSION}
        if opts.sample:  # draws depend on the seed and on how images are batched
            self.job.update(seed=opts.seed, batch_size=opts.batch_size)
        self.n_shards = I.num_shards(len(paths), opts.shard_size)
        self.problems: list[str] = []

    # -- setup -----------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Check that OUT_DIR is this job's (or new); process 0 clears what an interrupted run or, with
        --overwrite, another job left; then all processes start together."""
        self.out.mkdir(parents=True, exist_ok=True)
        previous = S.read_json(self.out / S.JOB_FILE)
        other = isinstance(previous, dict) and previous.get("job") != self.job
        if other and not self.opts.overwrite:
            raise LatentkitError(f"{self.out} holds a dataset encoded with other settings (model, size, dtype, "
                                 "--sample/--with-std or --shard-size); choose a new folder or pass --overwrite")
        if self.state.is_main_process:
            if other:
                S.remove_leftovers(self.out, 0)
                for name in (S.INDEX_FILE, S.FAILED_FILE):
                    (self.out / name).unlink(missing_ok=True)
            S.remove_leftovers(self.out)
            S.write_json(self.out / S.JOB_FILE, {"job": self.job})
        self.state.wait_for_everyone()

    def fingerprint(self, shard: int) -> str:
        return S.fingerprint(self.job, [self.paths[i] for i in I.shard_items(shard, len(self.paths),
                                                                               self.opts.shard_size)])

    # -- the encode loop -------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Encode this process's unfinished shards; returns its figures."""
        from tqdm import tqdm

        opts, n = self.opts, len(self.paths)
        mine = I.rank_shards(self.n_shards, self.rank, self.world)
        todo, kept_images, kept_failed, verified = [], 0, 0, 0
        for k in mine:
            sidecar = S.finished(self.out, k, self.fingerprint(k))
            if sidecar is not None and opts.verify:
                verified += 1
                bad = S.verify(self.out, sidecar)
                if bad:
                    print(f"latentkit: {'; '.join(bad)}: encoding it again", file=sys.stderr, flush=True)
                    sidecar = None
            if sidecar is None:
                todo.append(k)
            else:
                kept_images, kept_failed = kept_images + sidecar["count"], kept_failed + sidecar["failed_count"]
        work = [(k, i, self.paths[i]) for k in todo for i in I.shard_items(k, n, opts.shard_size)]
        total = sum(len(I.shard_items(k, n, opts.shard_size)) for k in mine)
        stats = dict(rank=self.rank, images=0, failed=0, bytes=0, shards_written=0, shards_kept=len(mine) - len(todo),
                     images_kept=kept_images, failed_kept=kept_failed, verified=verified, encode_seconds=0.0)
        loader = torch.utils.data.DataLoader(
            SourceImages(work, self.resize, opts.max_pixels), batch_size=opts.batch_size, collate_fn=collate,
            num_workers=self.workers, prefetch_factor=4 if self.workers else None)
        desc = "encode-dataset" + (f" [rank {self.rank}/{self.world}]" if self.world > 1 else "")
        t_loop = time.perf_counter()
        writes: deque[Future] = deque()
        writer = ThreadPoolExecutor(1, thread_name_prefix="shard-writer")
        bar = tqdm(total=total, initial=total - len(work), unit="img", desc=desc, dynamic_ncols=True)

        def collect(wait: int) -> None:
            """Take the writes that are done (and wait until at most `wait` are pending); a failed write
            raises here."""
            while writes and (writes[0].done() or len(writes) > wait):
                self._collect(writes.popleft().result(), stats)

        def finish(shard: _Shard) -> None:
            tensors, records, failed = self._close(shard)
            writes.append(writer.submit(self._write, shard.shard, tensors, records, failed, shard.fp))
            collect(MAX_PENDING_WRITES)

        try:
            current: _Shard | None = None
            for batch in loader:
                for item in batch:
                    if current is None or item.shard != current.shard:
                        if current is not None:
                            finish(current)
                        current = self._new_shard(item.shard)
                    self._add(current, item)
                    stats["failed"] += item.error is not None
                bar.update(len(batch))
                bar.set_postfix(failed=stats["failed"] + kept_failed, refresh=False)
                collect(MAX_PENDING_WRITES)
            if current is not None:
                finish(current)
            collect(0)
        finally:  # on Ctrl-C or an error, the write under way ends (whole, or its temporary file removed)
            writer.shutdown(wait=True, cancel_futures=True)
            bar.close()
        stats["encode_seconds"] = time.perf_counter() - t_loop
        return stats

    def _new_shard(self, shard: int) -> _Shard:
        gen = torch.Generator().manual_seed(self.opts.seed * 1_000_003 + shard) if self.opts.sample else None
        return _Shard(shard, self.fingerprint(shard), gen)

    def _add(self, shard: _Shard, item: Loaded) -> None:
        if item.error is not None:
            shard.failed.append({"index": item.index, "path": item.path, "reason": item.error})
            return
        group = S.group_name(item.out)
        queue = shard.pending.setdefault(group, [])
        queue.append(item)
        if len(queue) >= self.opts.batch_size:
            self._encode(shard, group)

    def _encode(self, shard: _Shard, group: str) -> None:
        from ..model import encode

        batch = shard.pending.pop(group, [])
        if not batch:
            return
        x = torch.stack([b.pixels for b in batch]).to(self.device, non_blocking=True)
        if self.opts.sample:
            z, std = encode(self.vae, x, sample=True, generator=shard.generator), None
        elif self.opts.with_std:
            z, std = encode(self.vae, x, with_std=True)
        else:
            z, std = encode(self.vae, x), None
        rows = shard.latents.setdefault(group, [])
        first = sum(len(t) for t in rows)
        rows.append(z.to("cpu", self.dtype))
        if std is not None:
            shard.std.setdefault(group, []).append(std.to("cpu", self.dtype))
        for r, b in enumerate(batch):
            shard.records.append({"index": b.index, "path": b.path, "size": list(b.size),
                                  "crop": [round(c, 3) for c in b.crop], "group": group, "row": first + r})

    def _close(self, shard: _Shard) -> tuple[dict[str, torch.Tensor], list[dict], list[dict]]:
        for group in sorted(shard.pending):
            self._encode(shard, group)
        tensors = {f"latents.{g}": torch.cat(t) for g, t in shard.latents.items()}
        tensors.update({f"std.{g}": torch.cat(t) for g, t in shard.std.items()})
        return tensors, sorted(shard.records, key=lambda r: r["index"]), shard.failed

    def _write(self, shard: int, tensors: dict, records: list[dict], failed: list[dict], fp: str) -> dict:
        sidecar = S.write_shard(self.out, shard, tensors, records, failed, fp, rank=self.rank)
        if self.opts.verify:
            self.problems += S.verify(self.out, sidecar)
        return sidecar

    def _collect(self, sidecar: dict, stats: dict) -> None:
        stats["images"] += sidecar["count"]
        stats["bytes"] += sidecar["bytes"] + S.sidecar_path(self.out, sidecar["shard"]).stat().st_size
        stats["shards_written"] += 1

    # -- after all processes -------------------------------------------------------------------------------
    def index_header(self) -> dict:
        from .. import __version__
        from ..model import downsampling_factor

        cfg = {k: v for k, v in dict(self.vae.config).items() if not k.startswith("_")}
        return {"model": {"path": self.opts.model or "default", "id": self.job["model_id"], "config": cfg},
                "scaling_factor": cfg.get("scaling_factor"), "shift_factor": cfg.get("shift_factor"),
                "downsampling": downsampling_factor(self.vae), "latent_channels": cfg.get("latent_channels"),
                "kind": self.job["kind"], "with_std": self.opts.with_std, "dtype": self.job["dtype"],
                "resize": self.resize.to_json(), "source": self.opts.source, "shard_size": self.opts.shard_size,
                "seed": self.opts.seed if self.opts.sample else None, "latentkit_version": __version__}

    def write_index(self) -> dict:
        """Process 0, after all finished: every shard's sidecar, stale files removed, index.json, failed.txt."""
        sidecars = []
        for k in range(self.n_shards):
            sidecar = S.finished(self.out, k, self.fingerprint(k))
            if sidecar is None:
                raise LatentkitError(f"{S.shard_name(k)} is missing after the run (did a process fail?); rerun "
                                     "with the same arguments to encode what is missing")
            sidecars.append(sidecar)
        S.remove_leftovers(self.out, self.n_shards)
        return S.write_index(self.out, self.index_header(), sidecars)

    def preview(self, n: int) -> dict:
        """Decode the first `n` images into ``OUT_DIR/preview/NNNNNN.png``: the encoded source crop on the left,
        the decoded latents on the right. Returns the count and their mean PSNR (dB)."""
        from ..io import Image, write_image
        from ..metrics.psnr import psnr
        from ..model import decode
        from .dataset import LatentDataset

        ds = LatentDataset(self.out)
        folder = self.out / "preview"
        folder.mkdir(exist_ok=True)
        values = []
        for i in range(min(n, len(ds))):
            item = ds.items[i]
            source = load_resized(item["path"], self.resize, self.opts.max_pixels)[0][None]
            back = decode(self.vae, ds[i]["latents"][None].to(self.device)).cpu()
            values.append(float(psnr(source, back)[0]))
            write_image(Image(torch.cat([source, back], dim=-1)[0]), folder / f"{i:06d}.png")
        return {"preview_images": len(values),
                "preview_psnr_db": round(sum(values) / len(values), 3) if values else None}


def _state():
    """accelerate's view of the processes. Without a CUDA GPU (or with ``accelerate launch --cpu``) the processes
    are CPU ones, joined over gloo: accelerate needs ``cpu=True`` for that, else every process of a torchrun /
    ``accelerate launch --multi_gpu`` start on a CPU machine would think it is alone."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != state.num_processes:
        raise LatentkitError(f"started as {launched} processes, but accelerate sees {state.num_processes}")
    return state


def encode_dataset(paths: list[str], opts: Options) -> tuple[int, dict | None]:
    """Run the job over `paths` (every process of an ``accelerate launch`` calls it with the same arguments).
    Returns (exit status 0, summary): the summary, on process 0 only (None elsewhere), has all processes'
    figures: images, failed, bytes, seconds, images per second. Raises :class:`LatentkitError` when no image
    could be encoded, or when --verify finds a shard it just wrote bad."""
    from accelerate.utils import gather_object

    job = _Job(paths, opts)
    job.prepare()
    stats = job.run()
    everyone = gather_object([stats])  # (a collective: every process has finished its shards)
    problems = [p for s in gather_object([job.problems]) for p in s]
    summary: dict = {"out": str(job.out), "processes": job.world, "device": job.device.type}
    images = sum(s["images"] + s["images_kept"] for s in everyone)
    error = None
    if job.state.is_main_process:
        try:
            index = job.write_index()
            counts = index["counts"]
            on_disk = counts["bytes"] + counts["sidecar_bytes"]
            summary.update(items=counts["items"], images=counts["images"], failed=counts["failed"],
                           shards=counts["shards"], bytes_total=on_disk,
                           bytes_per_image=round(on_disk / max(1, counts["images"]), 1),
                           latent_bytes_per_image=round(counts["bytes"] / max(1, counts["images"]), 1))
            if opts.preview and images:
                summary.update(job.preview(opts.preview))
        except LatentkitError as e:  # raised after the barrier, so that no process waits for this one forever
            error = e
    encoded = sum(s["images"] for s in everyone)
    seconds = max(s["encode_seconds"] for s in everyone)
    summary.update(encoded=encoded, failed_now=sum(s["failed"] for s in everyone),
                   shards_written=sum(s["shards_written"] for s in everyone),
                   shards_kept=sum(s["shards_kept"] for s in everyone),
                   verified=sum(s["verified"] for s in everyone) + sum(s["shards_written"] for s in everyone)
                   * opts.verify, bytes_written=sum(s["bytes"] for s in everyone),
                   encode_seconds=round(seconds, 3), images_per_second=round(encoded / seconds, 3) if seconds else 0.0,
                   seconds=round(time.perf_counter() - job.t0, 3))
    job.state.wait_for_everyone()
    if error is not None:
        raise error
    if problems:
        raise LatentkitError(f"--verify found {len(problems)} problem(s) in shards just written: {problems[0]}")
    if images == 0:
        raise LatentkitError(f"no image could be encoded ({len(paths)} failed; reasons in {job.out / S.FAILED_FILE})")
    return 0, summary if job.state.is_main_process else None

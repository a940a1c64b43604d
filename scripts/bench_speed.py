"""Speed and memory of latentkit against stock diffusers, measured in the same run (alternating rounds, medians).

Sections (``--sections``, all but ``models`` by default):

- ``inproc``: in one process, for each ``--sizes``: stock diffusers fp32 (``vae.encode(x).latent_dist.mean`` /
  ``vae.decode(z).sample`` under ``torch.no_grad``, as a user writes it) against ``latentkit.encode`` /
  ``decode`` (the fast path), alternating, ``--rounds`` each; medians, ratios, the model's FLOPs
  (``torch.utils.flop_counter``) and latentkit's achieved GFLOP/s, and the fast path's PSNR against fp32;
- ``peak``: the machine's measured bf16 and fp32 matmul peak (GFLOP/s), to put the achieved figure in context;
- ``process``: whole processes (start, imports, model load, work, exit) of ``latentkit roundtrip / encode /
  decode`` against the same jobs in ``scripts/stock_vae.py`` on ``--image``, alternating, medians, ratios; and
  ``encode --psnr``, which also decodes the file for the PSNR it prints (a whole decoder pass that stock's encode
  does not do);
- ``help``: wall time of ``latentkit --help``;
- ``rss``: peak RSS of a ``latentkit roundtrip`` of a ``--big`` x ``--big`` image (the child process alone);
- ``tiled``: decode of a ``--tiled-size`` square photo mosaic (``--image`` repeated) tiled vs untiled: times
  (alternating) and PSNR between them; also tiled with halos in the statistics pass (as before session 20);
- ``levers``: each speed lever of the fast path alone and together, decode and encode of the first ``--sizes``
  entry (fp32 no_grad, inference_mode, channels_last input, channels_last weights, bf16 autocast with and without
  channels_last and bf16 weights where the CPU has native bf16, then latentkit's path through its standalone
  network (in-place SiLU and residual sums), also on 1 thread instead of the default), alternating, medians,
  ratios to stock, PSNR against fp32;
- ``compile``: ``torch.compile`` (inductor) of the fast-path decode, in fresh processes: the first call with an
  empty cache (a CLI user's first command), the first call of a second process with the cache filled (every later
  command), and the steady-state call, against the eager fast path.
- ``int8``: what int8 convolutions could buy the decoder (first ``--sizes`` entry): every convolution of one
  fast-path decode timed at its own input shape, as the fast path runs it (bf16 autocast, channels_last) and as an
  int8 oneDNN convolution (per-channel int8 weights, uint8 activations), the latter alone and with the quantize /
  dequantize of its input and output that a decoder whose GroupNorm and SiLU stay in floating point needs; their
  sums against the whole decode, the whole-decode speed-up they bound, and the int8 weights' own PSNR cost
  (weights quantized and dequantized, computed in fp32).
- ``malloc``: latentkit as shipped (its fast path makes glibc keep freed memory, process-wide:
  ``latentkit.runtime.keep_freed_memory``) against stock diffusers fp32 with glibc's defaults (as a user's script
  runs) and against latentkit with ``LATENTKIT_KEEP_FREED_MEMORY=0``, each contender in its own fresh process,
  the processes alternating (``--rounds`` rounds each inside, medians over processes of their medians), for
  each ``--sizes``; minor page faults per call. (``inproc`` runs with ``LATENTKIT_KEEP_FREED_MEMORY=0``: once
  latentkit has run, the setting would speed up the stock calls of the same process too.)
- ``codec``: where a ``.latent`` encode and decode of ``--image`` at ``--quality`` spend their time in one
  process (the file's model, as ``latentkit encode`` picks it): encode = encoder network + decoder gains + RD
  step search + entropy coding (plan and range coding), decode = entropy decoding (incl. the check that the
  payload is what the encoder writes) + decoder network; parts alternating, medians, shares of each total; with
  the CLI's ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it.
- ``models``: two models on latentkit's fast path, ``--model`` against ``--against`` (e.g. a deeper config
  against the shipped one: the capacity rule "decode within 2x of today's"), encode and decode of each
  ``--sizes`` entry, alternating, medians, the ratios and each model's parameters and FLOPs.

Prints the CPU, human-readable lines, then one JSON line per figure (``{"bench": "speed", "section": ...}``).
On a shared machine compare the ratios of one run, not absolute figures across runs.

    python scripts/bench_speed.py [--model M] [--sizes 512x512,768x512] [--rounds 5] [--sections inproc,process]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent
#: latentkit.runtime.KEEP_MEMORY_ENV (not imported: that would load torch in this parent process)
KEEP_ENV = "LATENTKIT_KEEP_FREED_MEMORY"
SECTIONS = ("inproc", "malloc", "peak", "process", "help", "rss", "tiled", "levers", "compile", "int8", "codec",
            "models")
#: what a plain run measures: all but ``models``, which needs a second model (--against)
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s != "models")


def cpu_name() -> str:
    sys.path.insert(0, str(SCRIPTS))
    from bench_onnx import cpu_name as name

    return name()


def _image(w: int, h: int):
    """A deterministic test image with structure at several scales, 1 x 3 x h x w in [0, 1]."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, max(1, h // 16), max(1, w // 16), generator=g)
    return torch.nn.functional.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def _alternate(contenders: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each contender over `rounds` rounds, run in turn each round (after one warm-up)."""
    for f in contenders.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for k, f in contenders.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _ops(vae, x, z) -> dict[str, dict]:
    """{"stock" | "latentkit": {"encode" | "decode": callable}} for image x (1 x 3 x H x W in [0, 1]) and latent z:
    stock diffusers fp32 under ``torch.no_grad`` as a user writes it, and latentkit's fast path."""
    import torch

    import latentkit

    def stock_enc():
        with torch.no_grad():
            return vae.encode(x * 2 - 1).latent_dist.mean

    def stock_dec():
        with torch.no_grad():
            return vae.decode(z).sample

    return {"stock": {"encode": stock_enc, "decode": stock_dec},
            "latentkit": {"encode": lambda: latentkit.encode(vae, x), "decode": lambda: latentkit.decode(vae, z)}}


def _flops(f) -> int:
    """Floating-point operations of one call of `f` under ``torch.no_grad`` (``torch.utils.flop_counter``)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        f()
    return counter.get_total_flops()


def inproc(w: int, h: int, model: str | None, rounds: int) -> dict:
    import torch

    import latentkit
    from latentkit.metrics.psnr import psnr

    vae = latentkit.load_vae(model)
    x = _image(w, h)
    with torch.no_grad():
        z = vae.encode(x * 2 - 1).latent_dist.mean
    flops = {"encode": _flops(lambda: vae.encode(x * 2 - 1)), "decode": _flops(lambda: vae.decode(z))}

    ops = _ops(vae, x, z)
    med = _alternate({"stock_encode": ops["stock"]["encode"], "latentkit_encode": ops["latentkit"]["encode"],
                      "stock_decode": ops["stock"]["decode"], "latentkit_decode": ops["latentkit"]["decode"]},
                     rounds)
    fast_psnr = psnr(latentkit.decode(vae, z, fast=False), latentkit.decode(vae, z)).item()
    rec = {"section": "inproc", "width": w, "height": h, "rounds": rounds, "threads": torch.get_num_threads(),
           **{f"{k}_s": round(v, 4) for k, v in med.items()},
           "encode_ratio": round(med["stock_encode"] / med["latentkit_encode"], 3),
           "decode_ratio": round(med["stock_decode"] / med["latentkit_decode"], 3),
           "encode_decode_ratio": round((med["stock_encode"] + med["stock_decode"]) /
                                        (med["latentkit_encode"] + med["latentkit_decode"]), 3),
           "encode_gflop": round(flops["encode"] / 1e9, 2), "decode_gflop": round(flops["decode"] / 1e9, 2),
           "latentkit_encode_gflops": round(flops["encode"] / 1e9 / med["latentkit_encode"], 1),
           "latentkit_decode_gflops": round(flops["decode"] / 1e9 / med["latentkit_decode"], 1),
           "fast_vs_fp32_decode_psnr_db": round(fast_psnr, 2)}
    return rec


def models(w: int, h: int, model: str | None, other: str, rounds: int) -> dict:
    """The ``models`` section at one size: latentkit's encode / decode of `model` against `other`, alternating."""
    import torch

    import latentkit

    x = _image(w, h)
    ops, rec = {}, {"section": "models", "width": w, "height": h, "rounds": rounds, "threads": torch.get_num_threads(),
                    "model": model or "default", "against": other}
    for key, name in (("model", model), ("against", other)):
        vae = latentkit.load_vae(name)
        with torch.no_grad():
            z = vae.encode(x * 2 - 1).latent_dist.mean
        rec[f"{key}_params"] = sum(p.numel() for p in vae.parameters())
        rec[f"{key}_decode_gflop"] = round(_flops(lambda vae=vae, z=z: vae.decode(z)) / 1e9, 2)
        ops[f"{key}_encode"] = lambda vae=vae: latentkit.encode(vae, x)
        ops[f"{key}_decode"] = lambda vae=vae, z=z: latentkit.decode(vae, z)
    med = _alternate(ops, rounds)
    rec.update({f"{k}_s": round(v, 4) for k, v in med.items()})
    for op in ("encode", "decode"):
        rec[f"{op}_time_ratio"] = round(med[f"model_{op}"] / med[f"against_{op}"], 3)
    return rec


def one_contender(contender: str, w: int, h: int, model: str | None, rounds: int) -> dict:
    """One process of the malloc section: `contender` ("stock" or "latentkit") encoding and decoding a w x h
    image `rounds` times after a warm-up; medians and minor page faults per call."""
    import resource

    import torch

    import latentkit

    vae = latentkit.load_vae(model)
    x = _image(w, h)
    with torch.no_grad():
        z = vae.encode(x * 2 - 1).latent_dist.mean
    out = {}
    for op, f in _ops(vae, x, z)[contender].items():
        f()
        times, faults = [], []
        for _ in range(rounds):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            times.append(_timed(f))
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        out[f"{op}_s"], out[f"{op}_faults"] = statistics.median(times), statistics.median(faults)
    return out


def malloc(w: int, h: int, model: str, rounds: int, processes: int = 3) -> dict:
    """The malloc section (module docstring) at one size."""
    contenders = {"stock": ("stock", "1"), "latentkit": ("latentkit", "1"), "latentkit_no_keep": ("latentkit", "0")}
    runs: dict[str, list[dict]] = {k: [] for k in contenders}
    for _ in range(processes):
        for name, (who, keep) in contenders.items():
            env = {**os.environ, KEEP_ENV: keep}
            runs[name] += _child("one", model, who, str(w), str(h), str(rounds), env=env)
    rec: dict = {"section": "malloc", "width": w, "height": h, "rounds": rounds, "processes": processes}
    for name, recs in runs.items():
        for key in ("encode_s", "decode_s", "encode_faults", "decode_faults"):
            vals = [r[key] for r in recs if key in r]
            rec[f"{name}_{key}"] = round(statistics.median(vals), 4) if vals else None
    for op in ("encode", "decode"):
        s, k, n = (rec[f"{c}_{op}_s"] for c in ("stock", "latentkit", "latentkit_no_keep"))
        if s and k and n:
            rec[f"{op}_ratio_vs_stock"] = round(s / k, 3)
            rec[f"{op}_keep_gain"] = round(n / k, 3)
    return rec


def peak() -> dict:
    import torch

    out = {"section": "peak", "threads": torch.get_num_threads()}
    n = 2048
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        with torch.inference_mode():
            best = min(_timed(lambda: torch.mm(a, b)) for _ in range(8))
        out[f"{name}_matmul_gflops"] = round(2 * n ** 3 / best / 1e9, 1)
    return out


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return time.perf_counter() - t0


def process(image: str, model: str | None, rounds: int) -> list[dict]:
    lk = [sys.executable, "-m", "latentkit.cli"]
    stock = [sys.executable, str(SCRIPTS / "stock_vae.py")]
    m_lk = ["--model", model] if model else []
    m_st = ["--model", model] if model else []
    recs = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        _run([*lk, "encode", image, "-o", str(t / "a.latent"), "--overwrite", *m_lk])
        _run([*stock, "encode", image, str(t / "a.npy"), *m_st])
        jobs = {
            "roundtrip": ([*lk, "roundtrip", image, "-o", str(t / "r.png"), "--overwrite", *m_lk],
                          [*stock, "roundtrip", image, str(t / "s.png"), *m_st]),
            "encode": ([*lk, "encode", image, "-o", str(t / "b.latent"), "--overwrite", *m_lk],
                       [*stock, "encode", image, str(t / "b.npy"), *m_st]),
            # more work than stock's (image -> latent file): a decode for the PSNR it prints
            "encode --psnr": ([*lk, "encode", image, "-o", str(t / "c.latent"), "--overwrite", "--psnr", *m_lk],
                              [*stock, "encode", image, str(t / "c.npy"), *m_st]),
            "decode": ([*lk, "decode", str(t / "a.latent"), "-o", str(t / "d.png"), "--overwrite", *m_lk],
                       [*stock, "decode", str(t / "a.npy"), str(t / "e.png"), *m_st]),
        }
        for job, (mine, theirs) in jobs.items():
            med = _alternate({"latentkit": lambda c=mine: _run(c), "stock": lambda c=theirs: _run(c)}, rounds)
            recs.append({"section": "process", "job": job, "image": image, "rounds": rounds,
                         "latentkit_s": round(med["latentkit"], 3), "stock_s": round(med["stock"], 3),
                         "ratio": round(med["stock"] / med["latentkit"], 3)})
    return recs


def help_time(rounds: int) -> dict:
    ts = [_run([sys.executable, "-m", "latentkit.cli", "--help"]) for _ in range(rounds)]
    return {"section": "help", "rounds": rounds, "seconds": round(statistics.median(ts), 3)}


def rss(size: int, model: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        from latentkit import io as lkio

        src = Path(tmp) / "big.png"
        lkio.write_image(lkio.Image(_image(size, size)[0]), src)
        cmd = [sys.executable, "-m", "latentkit.cli", "roundtrip", str(src), "-o", str(Path(tmp) / "out.png"),
               *(["--model", model] if model else [])]
        # a fresh parent whose only child is the roundtrip: RUSAGE_CHILDREN's peak is that child's alone
        probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                 "r = subprocess.run(sys.argv[1:], capture_output=True); "
                 "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)")
        out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True).stdout.split()
    return {"section": "rss", "width": size, "height": size, "returncode": int(out[0]),
            "peak_rss_mb": round(int(out[1]) / 1024), "seconds": round(float(out[2]), 1)}


def _mosaic(image: str, size: int):
    """A `size` x `size` photo mosaic, 1 x 3 x size x size in [0, 1]: `image` repeated, every other copy mirrored
    (photo statistics for the tiled-vs-untiled agreement; a smooth synthetic image flatters it)."""
    import torch

    from latentkit import io as lkio

    x = lkio.read_image(image).rgb
    row = torch.cat([x if i % 2 == 0 else x.flip(-1) for i in range(-(-size // x.shape[-1]))], -1)
    grid = torch.cat([row if i % 2 == 0 else row.flip(-2) for i in range(-(-size // x.shape[-2]))], -2)
    return grid[None, :, :size, :size].contiguous()


def tiled(size: int, model: str | None, rounds: int, image: str) -> dict:
    import torch

    import latentkit
    from latentkit.metrics.psnr import psnr

    from latentkit import tiling

    vae = latentkit.load_vae(model)
    z = latentkit.encode(vae, _mosaic(image, size), tile=False)
    shipped = tiling.CORE_STATS_MIN_RATIO

    def tiled_with(ratio: float):
        """Tiled decode with the statistics pass on bare cores from `ratio` x the halo (inf: always with halos)."""
        tiling.CORE_STATS_MIN_RATIO = ratio
        try:
            return latentkit.decode(vae, z, tile=True)
        finally:
            tiling.CORE_STATS_MIN_RATIO = shipped

    runs = {"untiled": lambda: latentkit.decode(vae, z, tile=False), "tiled": lambda: tiled_with(shipped),
            "tiled_halo_stats": lambda: tiled_with(math.inf)}
    med = _alternate(runs, rounds)
    ref = runs["untiled"]()
    agree = {k: round(psnr(ref, runs[k]()).item(), 2) for k in ("tiled", "tiled_halo_stats")}
    return {"section": "tiled", "width": size, "height": size, "rounds": rounds, "threads": torch.get_num_threads(),
            "untiled_s": round(med["untiled"], 2), "tiled_s": round(med["tiled"], 2),
            "tiled_over_untiled": round(med["tiled"] / med["untiled"], 3), "psnr_tiled_vs_untiled_db": agree["tiled"],
            "halo_stats_over_untiled": round(med["tiled_halo_stats"] / med["untiled"], 3),
            "psnr_halo_stats_vs_untiled_db": agree["tiled_halo_stats"]}


def codec(image: str, quality: int, model: str | None, rounds: int) -> dict:
    """The codec section (module docstring): seconds and shares of encode's and decode's parts."""
    import torch

    from latentkit import model as lkmodel
    from latentkit.codec import allocate, entropy, quant
    from latentkit.codec.api import LatentEncoder, decode_latent, resolve_vae
    from latentkit.io import read_image

    im = read_image(image)
    vae = resolve_vae(model)
    enc = LatentEncoder(im, vae)
    exps = allocate.choose_exponents(enc.latent, enc.gains, quality)
    q = quant.quantize(enc.latent, exps)
    data = enc.pack(quality)
    _, latent, _ = decode_latent(data, vae)

    def entropy_encode():
        entropy.encode_symbols(q, entropy.choose_model(q))

    parts = {"encoder_network": lambda: lkmodel.encode(vae, im.batch()),
             "decoder_gains": lambda: allocate.decoder_gains(vae, enc.latent),
             "rd_search": lambda: allocate.choose_exponents(enc.latent, enc.gains, quality),
             "entropy_encode": entropy_encode,
             "entropy_decode": lambda: decode_latent(data, vae),
             "decoder_network": lambda: lkmodel.decode(vae, latent)}
    med = _alternate(parts, rounds)
    enc_parts, dec_parts = list(parts)[:4], list(parts)[4:]
    enc_s, dec_s = sum(med[k] for k in enc_parts), sum(med[k] for k in dec_parts)
    return {"section": "codec", "image": Path(image).name, "width": im.width, "height": im.height,
            "quality": quality, "bytes": len(data), "rounds": rounds, "threads": torch.get_num_threads(),
            "encode_s": round(enc_s, 3), "decode_s": round(dec_s, 3),
            **{f"{k}_s": round(med[k], 4) for k in parts},
            **{f"{k}_share": round(med[k] / enc_s, 3) for k in enc_parts},
            **{f"{k}_share": round(med[k] / dec_s, 3) for k in dec_parts}}


def levers(w: int, h: int, model: str | None, rounds: int) -> list[dict]:
    """Each lever alone and together (see the module docstring), decode and encode, in this process."""
    import copy

    import torch

    import latentkit
    from latentkit.metrics.psnr import psnr
    from latentkit.model import move
    from latentkit.runtime import cpu_has_bf16
    from latentkit.standalone import view_of

    vae = latentkit.load_vae(model)
    x = _image(w, h) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        ref = {"decode": vae.decode(z).sample, "encode": z}
    cl = torch.channels_last
    vae_cl = copy.deepcopy(vae).to(memory_format=cl)
    # without native bf16 (AVX2) bf16 is emulated, hundreds of times slower: those levers are left out there, and
    # latentkit's path is fp32, as latentkit.runtime runs it
    bf16 = cpu_has_bf16()
    if bf16:
        vae_bf16 = move(copy.deepcopy(vae), dtype=torch.bfloat16).to(memory_format=cl)  # move: no diffusers warning
    threads = torch.get_num_threads()

    def run(m, inp, op: str, *, grad_off=torch.inference_mode, autocast=False, layout=None, dtype=None):
        def f():
            t = inp if layout is None else inp.contiguous(memory_format=layout)
            t = t if dtype is None else t.to(dtype)
            with grad_off(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = m.decode(t).sample if op == "decode" else m.encode(t).latent_dist.mean
            return out.float()
        return f

    def one_thread(f):
        def g():
            torch.set_num_threads(1)
            try:
                return f()
            finally:
                torch.set_num_threads(threads)
        return g

    recs = []
    ours = "+ standalone network, in-place SiLU and sums (latentkit)"
    for op, inp in (("decode", z), ("encode", x)):
        variants = {
            "fp32 no_grad (stock)": run(vae, inp, op, grad_off=torch.no_grad),
            "fp32 inference_mode": run(vae, inp, op),
            "fp32 + channels_last input": run(vae, inp, op, layout=cl),
            "fp32 + channels_last input and weights": run(vae_cl, inp, op, layout=cl),
        }
        if bf16:
            variants |= {
                "bf16 autocast, contiguous": run(vae, inp, op, autocast=True),
                "bf16 autocast + channels_last": run(vae, inp, op, autocast=True, layout=cl),
                "bf16 weights + channels_last": run(vae_bf16, inp, op, layout=cl, dtype=torch.bfloat16),
            }
        variants[ours] = run(view_of(vae), inp, op, autocast=bf16, layout=cl)
        variants["latentkit, 1 thread"] = one_thread(variants[ours])
        med = _alternate(variants, rounds)
        base = med["fp32 no_grad (stock)"]
        for name, f in variants.items():
            out = f()
            if op == "decode":  # image PSNR; for the latent its SNR against the fp32 latent
                q = psnr(((out + 1) / 2).clamp(0, 1), ((ref[op] + 1) / 2).clamp(0, 1)).item()
            else:
                q = 10 * math.log10(ref[op].var().item() / max((out - ref[op]).pow(2).mean().item(), 1e-30))
            recs.append({"section": "levers", "op": op, "lever": name, "width": w, "height": h, "rounds": rounds,
                         "threads": 1 if "1 thread" in name else threads, "seconds": round(med[name], 4),
                         "ratio_to_stock": round(base / med[name], 3),
                         ("psnr_vs_fp32_db" if op == "decode" else "latent_snr_vs_fp32_db"): round(q, 2)})
    return recs


def compiled(w: int, h: int, model: str | None, rounds: int) -> dict:
    """One process: the fast-path decode compiled with inductor; first-call and steady-state seconds."""
    import torch

    import latentkit
    from latentkit import runtime

    vae = latentkit.load_vae(model)
    z = latentkit.encode(vae, _image(w, h)).contiguous(memory_format=torch.channels_last)
    eager = lambda: latentkit.decode(vae, z)  # noqa: E731
    fn = torch.compile(lambda t: vae.decode(t).sample)

    def comp():
        with runtime.inference("cpu"):
            return fn(z)

    t0 = time.perf_counter()
    comp()
    first = time.perf_counter() - t0
    med = _alternate({"eager": eager, "compiled": comp}, rounds)
    return {"section": "compile", "width": w, "height": h, "rounds": rounds, "first_call_s": round(first, 2),
            "eager_s": round(med["eager"], 4), "compiled_s": round(med["compiled"], 4),
            "compiled_speedup": round(med["eager"] / med["compiled"], 3)}


def int8(w: int, h: int, model: str | None, rounds: int) -> dict:
    """The int8 section (module docstring): conv time by conv, bf16 fast path vs int8 oneDNN, and its bound."""
    import copy
    import warnings

    import torch
    import torch.ao.nn.quantized as nnq

    import latentkit
    from latentkit.metrics.psnr import psnr

    warnings.filterwarnings("ignore", category=UserWarning)  # quantized tensors are deprecated in torch 2.13
    torch.backends.quantized.engine = "onednn"
    vae = latentkit.load_vae(model)
    z = latentkit.encode(vae, _image(w, h))
    shapes: list[tuple[torch.nn.Conv2d, torch.Size]] = []
    hooks = [m.register_forward_pre_hook(lambda m, a: shapes.append((m, a[0].shape)))
             for m in vae.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    latentkit.decode(vae, z)
    for hk in hooks:
        hk.remove()
    decode_s = _alternate({"decode": lambda: latentkit.decode(vae, z)}, rounds)["decode"]
    tot = {"bf16": 0.0, "int8": 0.0, "int8_qdq": 0.0}
    for conv, shape in shapes:
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        wt = conv.weight.detach().float()
        scale = wt.abs().amax(dim=(1, 2, 3)).clamp_min(1e-8) / 127
        q = nnq.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
        q.set_weight_bias(torch.quantize_per_channel(wt, scale, torch.zeros_like(scale, dtype=torch.long), 0,
                                                     torch.qint8), conv.bias.detach().float())
        q.scale, q.zero_point = 0.05, 128
        xq = torch.quantize_per_tensor(x, 0.02, 128, torch.quint8)

        def bf16(conv=conv, x=x):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return conv(x)

        med = _alternate({"bf16": bf16, "int8": lambda q=q, xq=xq: q(xq),
                          "int8_qdq": lambda q=q, x=x: q(torch.quantize_per_tensor(x, 0.02, 128, torch.quint8))
                          .dequantize()}, rounds)
        for k in tot:
            tot[k] += med[k]
    fake = copy.deepcopy(vae)  # int8 weights' own error: quantize-dequantize every decoder conv, decode in fp32
    with torch.no_grad():
        for m in fake.decoder.modules():
            if isinstance(m, torch.nn.Conv2d):
                s = m.weight.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8) / 127
                m.weight.copy_((m.weight / s).round().clamp(-127, 127) * s)
    ref = latentkit.decode(vae, z, fast=False)
    wq_psnr = psnr(latentkit.decode(fake, z, fast=False).clamp(0, 1), ref.clamp(0, 1)).item()
    best = decode_s - tot["bf16"] + tot["int8_qdq"]
    return {"section": "int8", "width": w, "height": h, "rounds": rounds, "convs": len(shapes),
            "decode_s": round(decode_s, 4), "conv_bf16_s": round(tot["bf16"], 4),
            "conv_int8_s": round(tot["int8"], 4), "conv_int8_qdq_s": round(tot["int8_qdq"], 4),
            "conv_share_of_decode": round(tot["bf16"] / decode_s, 3),
            "decode_speedup_bound": round(decode_s / best, 3), "int8_weights_psnr_db": round(wq_psnr, 2)}


def compile_cold_warm(w: int, h: int, model: str, rounds: int) -> list[dict]:
    """Two fresh processes sharing one new inductor cache folder: cold (empty) then warm (filled)."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        return [{**rec, "cache": label} for label in ("cold cache", "warm cache")
                for rec in _child("compile", model, str(w), str(h), str(rounds), env=env)]


def _size(s: str) -> tuple[int, int]:
    w, _, h = s.lower().partition("x")
    return int(w), int(h or w)


def _child(section: str, *params: str, env: dict | None = None) -> list[dict]:
    """Run one section in a fresh interpreter (its own imports, threads and peak RSS; `env`: its environment)."""
    out = subprocess.run([sys.executable, __file__, "--_child", section, *params], capture_output=True, text=True,
                         env=env)
    if out.returncode:
        return [{"section": section, "error": (out.stderr.strip().splitlines() or ["no output"])[-1]}]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="anything latentkit.load_vae accepts (default: the shipped weights)")
    p.add_argument("--sizes", default="512x512,768x512", help="in-process sizes WxH, comma-separated")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported (default: 5)")
    p.add_argument("--image", default=str(ROOT / "docs" / "demo" / "kodim23.png"), help="image of the process runs")
    p.add_argument("--big", type=int, default=4096, help="side of the peak-RSS roundtrip (default: %(default)s)")
    p.add_argument("--tiled-size", type=int, default=2048, help="side of the tiled-vs-untiled decode")
    p.add_argument("--quality", type=int, default=50, help="quality of the codec section (default: %(default)s)")
    p.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                   help=f"comma-separated from {', '.join(SECTIONS)} (default: all but models)")
    p.add_argument("--against", default=None, metavar="M",
                   help="the second model of the models section (its times are the ratios' denominators)")
    p.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        section, *params = args._child
        model = None if params[0] == "-" else params[0]
        recs = {"inproc": lambda: [inproc(int(params[1]), int(params[2]), model, int(params[3]))],
                "peak": lambda: [peak()],
                "tiled": lambda: [tiled(int(params[1]), model, int(params[2]), params[3])],
                "levers": lambda: levers(int(params[1]), int(params[2]), model, int(params[3])),
                "compile": lambda: [compiled(int(params[1]), int(params[2]), model, int(params[3]))],
                "int8": lambda: [int8(int(params[1]), int(params[2]), model, int(params[3]))],
                "one": lambda: [one_contender(params[1], int(params[2]), int(params[3]), model, int(params[4]))],
                "codec": lambda: [codec(params[1], int(params[2]), model, int(params[3]))],
                "models": lambda: [models(int(params[1]), int(params[2]), model, params[3], int(params[4]))]}[section]()
        for r in recs:
            print(json.dumps(r))
        return 0
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {', '.join(sorted(unknown))}")
    if "models" in sections and not args.against:
        p.error("the models section needs --against M (the model to compare --model with)")
    m = args.model or "-"
    records: list[dict] = []
    print(f"CPU: {cpu_name()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; "
          f"load average {os.getloadavg()[0]:.2f}")
    for section in sections:
        if section == "inproc":  # compute alone: the malloc setting would speed up stock's calls here too
            for s in args.sizes.split(","):
                records += _child("inproc", m, *map(str, _size(s)), str(args.rounds),
                                  env={**os.environ, KEEP_ENV: "0"})
        elif section == "malloc":
            for s in args.sizes.split(","):
                records.append(malloc(*_size(s), m, args.rounds))
        elif section == "peak":
            records += _child("peak", m)
        elif section == "process":
            records += process(args.image, args.model, args.rounds)
        elif section == "help":
            records.append(help_time(args.rounds))
        elif section == "rss":
            records.append(rss(args.big, args.model))
        elif section == "tiled":
            records += _child("tiled", m, str(args.tiled_size), str(max(1, args.rounds // 2)), args.image)
        elif section == "levers":
            records += _child("levers", m, *map(str, _size(args.sizes.split(",")[0])), str(args.rounds))
        elif section == "compile":
            records += compile_cold_warm(*_size(args.sizes.split(",")[0]), m, args.rounds)
        elif section == "int8":
            records += _child("int8", m, *map(str, _size(args.sizes.split(",")[0])), str(args.rounds))
        elif section == "codec":  # with the OpenMP setting the CLI makes (unless the environment has one)
            from latentkit.cli import OPENMP_ENV

            env = {**OPENMP_ENV, **os.environ}
            records += _child("codec", m, args.image, str(args.quality), str(args.rounds), env=env)
        elif section == "models":
            for s in args.sizes.split(","):
                records += _child("models", m, *map(str, _size(s)), args.against, str(args.rounds))
        for r in records:
            if r.get("_printed"):
                continue
            r["_printed"] = True
            print("  " + ", ".join(f"{k}={v}" for k, v in r.items() if k != "_printed"))
    for r in records:
        r.pop("_printed", None)
        print(json.dumps({"bench": "speed", **r}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

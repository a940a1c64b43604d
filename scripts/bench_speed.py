"""Speed and memory of latentkit against stock diffusers, measured in the same run (alternating rounds, medians).

Sections (``--sections``, all by default):

- ``inproc``: in one process, for each ``--sizes``: stock diffusers fp32 (``vae.encode(x).latent_dist.mean`` /
  ``vae.decode(z).sample`` under ``torch.no_grad``, as a user writes it) against ``latentkit.encode`` /
  ``decode`` (the fast path), alternating, ``--rounds`` each; medians, ratios, the model's FLOPs
  (``torch.utils.flop_counter``) and latentkit's achieved GFLOP/s, and the fast path's PSNR against fp32;
- ``peak``: the machine's measured bf16 and fp32 matmul peak (GFLOP/s), to put the achieved figure in context;
- ``process``: whole processes (start, imports, model load, work, exit) of ``latentkit roundtrip / encode /
  decode`` against the same jobs in ``scripts/stock_vae.py`` on ``--image``, alternating, medians, ratios;
- ``help``: wall time of ``latentkit --help``;
- ``rss``: peak RSS of a ``latentkit roundtrip`` of a ``--big`` x ``--big`` image (the child process alone);
- ``tiled``: decode of a ``--tiled-size`` square latent tiled vs untiled: times (alternating) and PSNR between them.

Prints the CPU, human-readable lines, then one JSON line per figure (``{"bench": "speed", "section": ...}``).
On a shared machine compare the ratios of one run, not absolute figures across runs.

    python scripts/bench_speed.py [--model M] [--sizes 512x512,768x512] [--rounds 5] [--sections inproc,process]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent
SECTIONS = ("inproc", "peak", "process", "help", "rss", "tiled")


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


def inproc(w: int, h: int, model: str | None, rounds: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import latentkit
    from latentkit.metrics.psnr import psnr

    vae = latentkit.load_vae(model)
    x = _image(w, h)
    with torch.no_grad():
        z = vae.encode(x * 2 - 1).latent_dist.mean
    flops = {}
    for op, f in (("encode", lambda: vae.encode(x * 2 - 1)), ("decode", lambda: vae.decode(z))):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            f()
        flops[op] = counter.get_total_flops()

    def stock_enc():
        with torch.no_grad():
            return vae.encode(x * 2 - 1).latent_dist.mean

    def stock_dec():
        with torch.no_grad():
            return vae.decode(z).sample

    med = _alternate({"stock_encode": stock_enc, "latentkit_encode": lambda: latentkit.encode(vae, x),
                      "stock_decode": stock_dec, "latentkit_decode": lambda: latentkit.decode(vae, z)}, rounds)
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


def tiled(size: int, model: str | None, rounds: int) -> dict:
    import torch

    import latentkit
    from latentkit.metrics.psnr import psnr

    vae = latentkit.load_vae(model)
    z = latentkit.encode(vae, _image(size, size), tile=True)
    med = _alternate({"untiled": lambda: latentkit.decode(vae, z, tile=False),
                      "tiled": lambda: latentkit.decode(vae, z, tile=True)}, rounds)
    agree = psnr(latentkit.decode(vae, z, tile=False), latentkit.decode(vae, z, tile=True)).item()
    return {"section": "tiled", "width": size, "height": size, "rounds": rounds, "threads": torch.get_num_threads(),
            "untiled_s": round(med["untiled"], 2), "tiled_s": round(med["tiled"], 2),
            "tiled_over_untiled": round(med["tiled"] / med["untiled"], 3), "psnr_tiled_vs_untiled_db": round(agree, 2)}


def _size(s: str) -> tuple[int, int]:
    w, _, h = s.lower().partition("x")
    return int(w), int(h or w)


def _child(section: str, *params: str) -> list[dict]:
    """Run one section in a fresh interpreter (its own imports, threads and peak RSS)."""
    out = subprocess.run([sys.executable, __file__, "--_child", section, *params], capture_output=True, text=True)
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
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated from {', '.join(SECTIONS)}")
    p.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        section, *params = args._child
        model = None if params[0] == "-" else params[0]
        recs = {"inproc": lambda: [inproc(int(params[1]), int(params[2]), model, int(params[3]))],
                "peak": lambda: [peak()],
                "tiled": lambda: [tiled(int(params[1]), model, int(params[2]))]}[section]()
        for r in recs:
            print(json.dumps(r))
        return 0
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {', '.join(sorted(unknown))}")
    m = args.model or "-"
    records: list[dict] = []
    print(f"CPU: {cpu_name()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; "
          f"load average {os.getloadavg()[0]:.2f}")
    for section in sections:
        if section == "inproc":
            for s in args.sizes.split(","):
                records += _child("inproc", m, *map(str, _size(s)), str(args.rounds))
        elif section == "peak":
            records += _child("peak", m)
        elif section == "process":
            records += process(args.image, args.model, args.rounds)
        elif section == "help":
            records.append(help_time(args.rounds))
        elif section == "rss":
            records.append(rss(args.big, args.model))
        elif section == "tiled":
            records += _child("tiled", m, str(args.tiled_size), str(max(1, args.rounds // 2)))
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

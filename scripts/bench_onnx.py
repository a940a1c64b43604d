"""ONNX Runtime (CPU) vs PyTorch for the exported encoder and decoder graphs.

Exports the model with ``latentkit export --format onnx`` semantics into a temporary folder, then times, in
alternating rounds (so drift in machine load hits every contender alike), at each ``--sizes``:

- ``torch-fp32``: stock PyTorch, what the graphs compute (``latentkit.encode/decode(fast=False)``);
- ``torch-fast``: latentkit's fast CPU path (bf16 autocast where the CPU has it, channels_last);
- ``onnxruntime``: the exported graphs in ONNX Runtime's CPU provider (all cores, default graph optimisations).

Prints medians (seconds) and the ratio of each to ``torch-fp32``, the CPU name, then one JSON line.

    python scripts/bench_onnx.py [--model M] [--sizes 512x512] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical cores)"
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="anything latentkit.load_vae accepts (default: shipped weights)")
    ap.add_argument("--sizes", default="512x512", help="comma-separated WxH list (multiples of 8)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch

    import latentkit
    from latentkit.onnx_export import DECODER_FILE, ENCODER_FILE, export_onnx

    vae = latentkit.load_vae(args.model)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(vae, tmp, verify=False)
        sessions = {name: ort.InferenceSession(os.path.join(tmp, name), providers=["CPUExecutionProvider"])
                    for name in (ENCODER_FILE, DECODER_FILE)}
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.lower().split("x"))
            x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
            z = latentkit.encode(vae, x, fast=False)
            contenders = {
                ("encode", "torch-fp32"): lambda: latentkit.encode(vae, x, fast=False),
                ("encode", "torch-fast"): lambda: latentkit.encode(vae, x),
                ("encode", "onnxruntime"): lambda: sessions[ENCODER_FILE].run(None, {"image": x.numpy()}),
                ("decode", "torch-fp32"): lambda: latentkit.decode(vae, z, fast=False),
                ("decode", "torch-fast"): lambda: latentkit.decode(vae, z),
                ("decode", "onnxruntime"): lambda: sessions[DECODER_FILE].run(None, {"latent": z.numpy()}),
            }
            for f in contenders.values():  # warm-up: first-call allocations and kernel selection
                f()
            times: dict[tuple[str, str], list[float]] = {k: [] for k in contenders}
            for _ in range(args.rounds):
                for key, f in contenders.items():
                    t0 = time.perf_counter()
                    f()
                    times[key].append(time.perf_counter() - t0)
            for (op, impl), ts in times.items():
                med = statistics.median(ts)
                base = statistics.median(times[(op, "torch-fp32")])
                records.append({"bench": "onnx", "op": op, "impl": impl, "width": w, "height": h,
                                "median_s": round(med, 4), "speedup_vs_torch_fp32": round(base / med, 3)})
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, onnxruntime {ort.__version__}; "
          f"{args.rounds} alternating rounds, medians")
    for r in records:
        print(f"{r['width']}x{r['height']} {r['op']:6s} {r['impl']:12s} {r['median_s']:.3f} s  "
              f"x{r['speedup_vs_torch_fp32']:.2f} vs torch-fp32")
    print(json.dumps({"bench": "onnx", "cpu": cpu_name(), "records": records}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

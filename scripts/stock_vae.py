"""What a user writes with stock diffusers alone: the baseline that ``scripts/bench_speed.py`` times latentkit's
commands against (whole processes: interpreter start, imports, model load, the work, exit).

    python scripts/stock_vae.py roundtrip IN.png OUT.png [--model DIR]   # image -> latent -> image
    python scripts/stock_vae.py encode IN.png OUT.npy [--model DIR]      # image -> posterior mean (numpy file)
    python scripts/stock_vae.py decode IN.npy OUT.png [--model DIR]      # latent -> image

fp32, ``torch.no_grad``, ``AutoencoderKL.from_pretrained``; sizes must be multiples of 8. Default model: the
shipped ``weights/default``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent.parent / "weights" / "default"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("op", choices=("roundtrip", "encode", "decode"))
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--model", default=str(DEFAULT))
    args = ap.parse_args()

    import numpy as np
    import torch
    from diffusers import AutoencoderKL
    from PIL import Image

    vae = AutoencoderKL.from_pretrained(args.model, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        if args.op in ("roundtrip", "encode"):
            rgb = np.asarray(Image.open(args.input).convert("RGB"), dtype=np.float32) / 255
            x = torch.from_numpy(rgb).permute(2, 0, 1)[None] * 2 - 1
            z = vae.encode(x).latent_dist.mean
            if args.op == "encode":
                np.save(args.output, z.numpy())
                return 0
        else:
            z = torch.from_numpy(np.load(args.input))
        y = ((vae.decode(z).sample[0] + 1) / 2).clamp(0, 1)
        Image.fromarray((y.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

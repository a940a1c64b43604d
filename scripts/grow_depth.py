"""Deepen a trained autoencoder without changing what it computes: one more resnet per block.

Issue 16 item 3 (capacity per CPU-hour) ruled out the wider configs by decode speed; a second resnet per block
at the same widths decodes 1.10x slower. A from-scratch run of a deeper model costs the 15 CPU-hours the
shipped one took, so this grows the trained model instead: ``layers_per_block`` + 1, every existing weight copied
to where it was, and each new resnet (appended after the block's last one, before its down/upsampler) starts as
the identity: its second convolution is zero, so its residual adds nothing until training moves it.

    python scripts/grow_depth.py weights/default runs/grown   # then train it: --phase joint --init runs/grown

The new folder is a diffusers model folder (fp32); the script encodes and decodes a random image with both models
and prints the largest difference (0: the same function).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from latentkit.errors import LatentkitError
from latentkit.model import load_vae, make_vae, save_vae

# A resnet's index inside an encoder down block or a decoder up block; those past the old count are new.
RESNET_KEY = re.compile(r"^(encoder\.down_blocks|decoder\.up_blocks)\.\d+\.resnets\.(\d+)\.")


def grow(src, seed: int = 0):
    """The model at `src` with one more resnet per encoder and decoder block, computing the same function."""
    old = load_vae(src, dtype=torch.float32)
    cfg = {k: v for k, v in dict(old.config).items() if not k.startswith("_")}
    lpb = int(cfg["layers_per_block"])
    cfg["layers_per_block"] = lpb + 1
    new = make_vae(cfg, seed=seed)
    old_sd = old.state_dict()
    new_sd = new.state_dict()
    for key in new_sd:
        m = RESNET_KEY.match(key)
        if m:
            per_block = lpb if m.group(1).startswith("encoder") else lpb + 1  # diffusers' decoder has one more
            if int(m.group(2)) >= per_block:
                if ".conv2." in key:
                    new_sd[key].zero_()  # the residual branch adds nothing: the block is the identity
                continue
        if key not in old_sd or old_sd[key].shape != new_sd[key].shape:
            raise LatentkitError(f"{key}: no weight of that shape in {src}")
        new_sd[key].copy_(old_sd[key])
    new.load_state_dict(new_sd)
    return old, new.eval()


def largest_difference(a, b, size: int = 64) -> float:
    """The largest absolute difference between two models' posterior means and decodes of a random image."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        za, zb = a.encode(x).latent_dist.mean, b.encode(x).latent_dist.mean
        return max((za - zb).abs().max().item(), (a.decode(za).sample - b.decode(za).sample).abs().max().item())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="model to grow (a model folder, training run or shipped name)")
    ap.add_argument("out", type=Path, help="new diffusers model folder (fp32; must not exist)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the new resnets' first convolutions")
    args = ap.parse_args()
    try:
        if args.out.exists():
            raise LatentkitError(f"{args.out} exists; give a new folder")
        old, new = grow(args.src, args.seed)
        diff = largest_difference(old, new)
        save_vae(new, args.out)
    except LatentkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n_old, n_new = (sum(p.numel() for p in m.parameters()) for m in (old, new))
    print(f"{args.out}: layers_per_block {old.config.layers_per_block} -> {new.config.layers_per_block}, "
          f"{n_old:,} -> {n_new:,} parameters; largest output difference on a random image {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

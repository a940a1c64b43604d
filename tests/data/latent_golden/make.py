"""Rebuild the golden `.latent` files and golden.json (run from the repository root; only when the format changes).

    python tests/data/latent_golden/make.py

The files are encoded with the shipped default weights from crops of docs/demo/kodim23.png: RGB, grayscale and
RGBA, odd sizes, three qualities. golden.json stores, per file, the latent shape the header implies and the
sha256 of the entropy-decoded integer symbols (int64, C order): the integer part of decoding, which must give
the same symbols on every machine (tests/test_codec_golden.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from latentkit import io as lkio
from latentkit.codec import compress, entropy, format
from latentkit.model import load_vae

HERE = Path(__file__).parent
CASES = {"rgb_q50_64x48.latent": ("rgb", (300, 200, 64, 48), 50),
         "rgb_q60_256x192.latent": ("rgb", (200, 150, 256, 192), 60),
         "gray_q20_41x23.latent": ("gray", (100, 300, 41, 23), 20),
         "rgba_q90_33x17.latent": ("rgba", (500, 100, 33, 17), 90)}


def symbols_of(data: bytes) -> tuple[tuple[int, int, int], np.ndarray]:
    c = format.parse(data)
    shape = (len(c.exponents), -(-c.height // 8), -(-c.width // 8))
    return shape, entropy.decode_symbols(c.payload, shape, c.entropy_model, c.params)


def main() -> None:
    torch.set_num_threads(1)
    vae = load_vae()
    src = lkio.read_image("docs/demo/kodim23.png")
    golden = {}
    for name, (kind, (x, y, w, h), quality) in CASES.items():
        rgb = src.rgb[:, y:y + h, x:x + w].contiguous()
        if kind == "gray":
            image = lkio.Image(rgb.mean(0, keepdim=True).expand(3, -1, -1).contiguous(), grayscale=True)
        elif kind == "rgba":
            alpha = (np.arange(w)[None, :] * 255 // max(1, w - 1) * np.ones((h, 1))).astype(np.uint8)
            image = lkio.Image(rgb, alpha=alpha)
        else:
            image = lkio.Image(rgb)
        data = compress(image, vae, quality=quality)
        (HERE / name).write_bytes(data)
        shape, q = symbols_of(data)
        golden[name] = {"shape": list(shape), "symbols_sha256": hashlib.sha256(
            np.ascontiguousarray(q, dtype=np.int64).tobytes()).hexdigest(), "bytes": len(data)}
    (HERE / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    print(json.dumps(golden, indent=1))


if __name__ == "__main__":
    main()

"""Training data: every image under a folder (recursive, :func:`latentkit.io.list_images`), held in memory as uint8,
served as random crops with random horizontal flips.

Images smaller than the crop are upscaled just enough to fit. Unreadable files are skipped with one
warning each. Batches come out as float tensors in [0, 1], N x 3 x crop x crop.
"""

from __future__ import annotations

import queue
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import LatentkitError
from ..io import list_images

def load_rgb(path: Path) -> np.ndarray | None:
    """H x W x 3 uint8, or None (with a warning) when the file cannot be read."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - any unreadable file is skipped
        warnings.warn(f"skipping unreadable image {path}: {e}", stacklevel=2)
        return None


class RandomCrops:
    """Random crops of `crop` x `crop` pixels from all images under `root`, drawn with a seeded generator."""

    def __init__(self, root: str | Path, crop: int = 128, seed: int = 0):
        self.crop = crop
        self.images: list[torch.Tensor] = []
        for p in list_images(root, recursive=True):
            a = load_rgb(p)
            if a is None:
                continue
            t = torch.from_numpy(a.copy()).permute(2, 0, 1)
            if min(t.shape[1:]) < crop:
                scale = crop / min(t.shape[1:])
                size = [max(crop, round(s * scale)) for s in t.shape[1:]]
                t = torch.nn.functional.interpolate(t[None].float(), size=size, mode="bilinear",
                                                    antialias=False).round().clamp(0, 255).byte()[0]
            self.images.append(t)
        if not self.images:
            raise LatentkitError(f"no readable images under {root}")
        # sample images in proportion to their area, so every pixel is equally likely
        areas = torch.tensor([float(t.shape[1] * t.shape[2]) for t in self.images])
        self.weights = areas / areas.sum()
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        g, c = generator or self.generator, self.crop
        idx = torch.multinomial(self.weights, size, replacement=True, generator=g)
        out = torch.empty(size, 3, c, c, dtype=torch.uint8)
        for i, j in enumerate(idx.tolist()):
            im = self.images[j]
            y = int(torch.randint(0, im.shape[1] - c + 1, (1,), generator=g))
            x = int(torch.randint(0, im.shape[2] - c + 1, (1,), generator=g))
            patch = im[:, y:y + c, x:x + c]
            if torch.rand(1, generator=g).item() < 0.5:
                patch = patch.flip(-1)
            out[i] = patch
        return out.float().div_(255)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class Prefetcher:
    """Draws batches on a background thread, `depth` ahead, so cropping overlaps the training step.

    Order is deterministic (one producer); its state is the generator state *after* the batches already
    consumed, which the trainer reconstructs by replaying - see :meth:`state_dict`.
    """

    def __init__(self, source: RandomCrops, batch_size: int, depth: int = 2):
        self.source, self.batch_size = source, batch_size
        self._consumed_state = source.state_dict()
        self._after = False
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            state = self.source.state_dict()
            b = self.source.batch(self.batch_size)
            while not self._stop.is_set():
                try:
                    self._q.put((state, b), timeout=0.1)
                    break
                except queue.Full:
                    continue

    def next(self) -> torch.Tensor:
        state, b = self._q.get()
        self._consumed_state = {"generator": state["generator"]}
        self._after = True
        return b

    def state_dict(self) -> dict:
        """The generator state from which the *next* batch will be drawn."""
        # the batch last returned was drawn from _consumed_state; replay it to get the state after it
        probe = torch.Generator()
        probe.set_state(self._consumed_state["generator"])
        if self._after:
            self.source.batch(self.batch_size, generator=probe)
        return {"generator": probe.get_state()}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

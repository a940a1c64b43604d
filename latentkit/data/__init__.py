"""Encoded datasets: ``latentkit encode-dataset`` writes the latents of many images as safetensors shards, and
:class:`LatentDataset` reads them back for training (see docs/encode-dataset.md).

| module | one job |
|---|---|
| ``items.py`` | the source list (folder or text file) and its split into shards and processes |
| ``geometry.py`` | the size each image is encoded at: center-crop, short-side, aspect-ratio buckets |
| ``loading.py`` | decoding and resizing one image, in DataLoader workers |
| ``shards.py`` | the on-disk layout: atomic shard writes, sidecars, verification, ``index.json`` |
| ``encode.py`` | the job loop over processes (``accelerate``) |
| ``dataset.py`` | :class:`LatentDataset` and :class:`BucketBatchSampler` |

``LatentDataset`` and ``BucketBatchSampler`` are imported on first use, so ``latentkit.data.items`` and
``latentkit.data.geometry`` need no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BucketBatchSampler", "LatentDataset"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".dataset", __name__), name)
    raise AttributeError(f"module 'latentkit.data' has no attribute {name!r}")

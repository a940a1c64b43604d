"""The `.latent` image codec: quantization (:mod:`.quant`), entropy coding (:mod:`.entropy`), the container
(:mod:`.format`) and the public API (:mod:`.api`: :class:`LatentEncoder`, :func:`compress`, :func:`decompress`).

The API names are imported on first use, so ``latentkit.codec.quant`` alone needs no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["LatentEncoder", "compress", "decompress"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".api", __name__), name)
    raise AttributeError(f"module 'latentkit.codec' has no attribute {name!r}")

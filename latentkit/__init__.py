"""latentkit: Stable-Diffusion-style KL autoencoders as an image codec, a metrics kit and a diffusers VAE.

    >>> import latentkit
    >>> vae = latentkit.load_vae()                      # the shipped default weights
    >>> img = latentkit.io.read_image("kodim01.png")    # colour in [0, 1]
    >>> z = latentkit.encode(vae, img.batch())          # unscaled latents, 1 x 4 x H/8 x W/8
    >>> x = latentkit.decode(vae, z)                    # images in [0, 1]

The model functions are imported on first use, so ``import latentkit`` (and the CLI's start) stays cheap
for commands that never touch diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import LatentkitError

__version__ = "0.1.0"
_MODEL_NAMES = ("decode", "encode", "load_vae", "make_vae", "posterior", "reconstruct", "save_vae")
__all__ = ["LatentkitError", "io", *_MODEL_NAMES]


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        return getattr(importlib.import_module(".model", __name__), name)
    if name == "io":
        return importlib.import_module(".io", __name__)
    raise AttributeError(f"module 'latentkit' has no attribute {name!r}")

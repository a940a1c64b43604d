"""``compress`` / ``decompress``: an image <-> the bytes of a `.latent` file."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from diffusers import AutoencoderKL

from .. import model as lkmodel
from ..errors import LatentkitError
from ..io import DEFAULT_MAX_PIXELS, Image
from . import allocate, entropy, format, quant

VaeArg = AutoencoderKL | str | os.PathLike | None


def resolve_vae(vae: VaeArg) -> AutoencoderKL:
    """A loaded model as is; a path or name via :func:`latentkit.load_vae`; ``None``: the default weights."""
    return vae if isinstance(vae, AutoencoderKL) else lkmodel.load_vae(vae)


def latent_shape(vae: AutoencoderKL, width: int, height: int) -> tuple[int, int, int]:
    """C x h x w of the latent the model makes for an image of width x height (after padding)."""
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    return vae.config.latent_channels, math.ceil(height / f), math.ceil(width / f)


def analyse(image: Image, vae: AutoencoderKL) -> tuple[np.ndarray, np.ndarray]:
    """(posterior-mean latent C x h x w float32, per-channel decoder gains C) of an image."""
    z = lkmodel.encode(vae, image.batch())[0].float().cpu().numpy()
    return z, allocate.decoder_gains(vae, z)


def pack(image: Image, vae: AutoencoderKL, latent: np.ndarray, gains: np.ndarray, quality: int) -> bytes:
    """The `.latent` bytes for an analysed image (see :func:`analyse`) at one quality (1..100)."""
    exponents = allocate.choose_exponents(latent, gains, quality)
    symbols = quant.quantize(latent, exponents)
    plan = entropy.choose_model(symbols)
    payload = entropy.encode_symbols(symbols, plan)
    return format.pack(format.Container(
        image.width, image.height, exponents, plan.model, plan.params, lkmodel.model_id(vae), payload, image.alpha,
        image.icc_profile, image.grayscale, image.bit_depth))


def compress(image: Image, vae: VaeArg = None, quality: int = 75, bpp: float | None = None) -> bytes:
    """Encode an image to `.latent` bytes.

    ``quality``: integer 1..100, higher is better (the quantization steps halve every 16 points; see
    :mod:`latentkit.codec.quant`).
    ``bpp``: if given, the quality is searched (bisection) for the largest file of at most ``bpp`` bits per
    pixel (whole file bytes x 8 / (width x height)); raises :class:`LatentkitError` if even quality 1 is larger.
    """
    vae = resolve_vae(vae)
    latent, gains = analyse(image, vae)
    if bpp is None:
        return pack(image, vae, latent, gains, quant.check_quality(quality))
    budget = bpp * image.width * image.height / 8  # bytes
    lo, hi, best = 1, 100, None
    while lo <= hi:
        mid = (lo + hi) // 2
        data = pack(image, vae, latent, gains, mid)
        if len(data) <= budget:
            best, lo = data, mid + 1
        else:
            hi = mid - 1
    if best is None:
        smallest = len(pack(image, vae, latent, gains, 1)) * 8 / (image.width * image.height)
        raise LatentkitError(f"cannot reach {bpp} bpp: the smallest file (quality 1) is {smallest:.4f} bpp")
    return best


def decode_latent(data: bytes, vae: AutoencoderKL,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[format.Container, torch.Tensor]:
    """Parse `.latent` bytes and entropy-decode them: (container, latent 1 x C x h x w float32)."""
    c = format.parse(bytes(data), max_pixels)
    need = lkmodel.model_id(vae)
    if c.model_id != need:
        raise LatentkitError(f"this .latent file was made with model id {c.model_id.hex()}, but the model given "
                             f"has id {need.hex()}: pass --model with the weights of id {c.model_id.hex()}")
    shape = latent_shape(vae, c.width, c.height)
    if len(c.exponents) != shape[0]:
        raise LatentkitError(f"corrupt .latent file: {len(c.exponents)} latent channels, the model has {shape[0]}")
    symbols = entropy.decode_symbols(c.payload, shape, c.entropy_model, c.params)
    return c, torch.from_numpy(quant.dequantize(symbols, c.exponents)).unsqueeze(0)


def decompress(data: bytes, vae: VaeArg = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image:
    """Decode `.latent` bytes to an image (alpha, ICC profile, grayscale and 16-bit restored)."""
    vae = resolve_vae(vae)
    c, latent = decode_latent(data, vae, max_pixels)
    rgb = lkmodel.decode(vae, latent)[0, :, :c.height, :c.width].contiguous()
    return Image(rgb, c.alpha, c.grayscale, c.bit_depth, c.icc_profile)

"""``compress`` / ``decompress``: an image <-> the bytes of a `.latent` file."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Union

import numpy as np
import torch

from .. import model as lkmodel
from ..errors import LatentkitError
from ..io import DEFAULT_MAX_PIXELS, Image
from . import allocate, entropy, format, quant, refine

if TYPE_CHECKING:  # type hints only: commands run the model without importing diffusers
    from diffusers import AutoencoderKL

VaeArg = Union["AutoencoderKL", torch.nn.Module, str, os.PathLike, None]
#: The model the codec encodes with when none is given: the shipped codec model (``weights/codec``), encoder and
#: decoder trained for the codec (its latents are its own, not ``weights/default``'s)
CODEC_MODEL = "codec"


def resolve_vae(vae: VaeArg) -> AutoencoderKL:
    """A loaded model as is (diffusers' or :mod:`latentkit.standalone`'s); a path or name via
    :func:`latentkit.load_vae` (its standalone network, which skips diffusers' import); ``None``: the codec's
    model (:data:`CODEC_MODEL`)."""
    if isinstance(vae, torch.nn.Module):
        return vae
    return lkmodel.load_vae(CODEC_MODEL if vae is None else vae, standalone=True)


class LatentEncoder:
    """One image, analysed once (posterior-mean latent C x h x w float32 and per-channel decoder gains), packed
    at any number of qualities: what :func:`compress` does, without repeating the model passes per quality.

    ``LatentEncoder(image, vae).pack(60)`` gives the same bytes as ``compress(image, vae, quality=60)``."""

    def __init__(self, image: Image, vae: VaeArg = None, latent: np.ndarray | None = None,
                 gains: np.ndarray | None = None, refine_steps: int = 0, progress: bool = False):
        """``vae``: the model whose id the file carries (None: :data:`CODEC_MODEL`); ``latent`` / ``gains``: the
        analysis when already made (e.g. timed apart); computed when omitted. ``refine_steps``: gradient steps
        that refine the latent for each quality's quantization before it is coded (:mod:`latentkit.codec.refine`;
        0: the encoder's latent as it is); ``progress``: a progress bar over them."""
        self.refine_steps, self.progress = quant.check_refine_steps(refine_steps), progress
        if max(image.width, image.height) > format.MAX_SIDE:  # before the model runs, not when packing
            raise LatentkitError(f"a .latent file holds at most {format.MAX_SIDE} px a side; the image is "
                                 f"{image.width}x{image.height}")
        self.image, self.vae = image, resolve_vae(vae)
        if latent is None:
            latent = lkmodel.encode(self.vae, image.batch())[0].float().cpu().numpy()
        self.latent = latent
        self.gains = allocate.decoder_gains(self.vae, latent) if gains is None else gains

    def symbols(self, quality: int) -> tuple[np.ndarray, np.ndarray]:
        """(step exponents C, integer symbols C x h x w) at quality 1..100: what :meth:`pack` entropy-codes."""
        quality = quant.check_quality(quality)
        exponents = allocate.choose_exponents(self.latent, self.gains, quality)
        latent = refine.refine_latent(self.vae, self.image.batch(), self.latent, exponents, quality,
                                      self.refine_steps, self.progress)
        return exponents, quant.quantize(latent, exponents)

    def pack(self, quality: int) -> bytes:
        """The `.latent` bytes at quality 1..100 (higher is better)."""
        exponents, symbols = self.symbols(quality)
        plan = entropy.choose_model(symbols)
        payload = entropy.encode_symbols(symbols, plan)
        im = self.image
        return format.pack(format.Container(
            im.width, im.height, exponents, plan.model, plan.params, lkmodel.model_id(self.vae), payload, im.alpha,
            im.icc_profile, im.grayscale, im.bit_depth))

    def fit_bpp(self, bpp: float) -> tuple[int, bytes]:
        """(quality, bytes) of the largest file of at most `bpp` bits per pixel (whole file bytes x 8 / (width x
        height)), by bisection over the quality; raises :class:`LatentkitError` if even quality 1 is larger."""
        quant.check_bpp(bpp)
        pixels = self.image.width * self.image.height
        lo, hi, best = 1, 100, None
        while lo <= hi:
            mid = (lo + hi) // 2
            data = self.pack(mid)
            if len(data) * 8 <= bpp * pixels:
                best, lo = (mid, data), mid + 1
            else:
                hi = mid - 1
        if best is None:
            smallest = len(self.pack(1)) * 8 / pixels
            raise LatentkitError(f"cannot reach {bpp} bpp: the smallest file (quality 1) is {smallest:.4f} bpp")
        return best


def compress(image: Image, vae: VaeArg = None, quality: int = 75, bpp: float | None = None,
             refine_steps: int = 0) -> bytes:
    """Encode an image to `.latent` bytes.

    ``quality``: integer 1..100, higher is better (the quantization steps halve every 16 points; see
    :mod:`latentkit.codec.quant`).
    ``bpp``: if given, the quality is searched (bisection) for the largest file of at most ``bpp`` bits per
    pixel (whole file bytes x 8 / (width x height)); raises :class:`LatentkitError` if even quality 1 is larger.
    ``refine_steps``: refine the latent by this many gradient steps per quality tried (:mod:`.refine`; slower
    encoding, the same format; 0: off).
    """
    if bpp is None:
        quant.check_quality(quality)
        return LatentEncoder(image, vae, refine_steps=refine_steps).pack(quality)
    quant.check_bpp(bpp)
    return LatentEncoder(image, vae, refine_steps=refine_steps).fit_bpp(bpp)[1]


def decode_latent(data: bytes, vae: VaeArg = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  force_model: bool = False) -> tuple[format.Container, torch.Tensor, AutoencoderKL]:
    """Parse `.latent` bytes and entropy-decode them: (container, latent 1 x C x h x w float32, the model to
    decode it with).

    ``vae`` None: the shipped model (``default`` or ``codec``) whose id the file carries (or an earlier version's
    with the same decoding weights: :func:`latentkit.model.decodes_ids`; failing that, a later version that
    fine-tuned its decoder: :func:`latentkit.model.succeeds_ids`). A given model must have the file's id (or
    read its files: :func:`latentkit.model.reads_ids`) unless ``force_model`` (decode with the given model anyway:
    the picture is what that decoder makes of another model's latents, close only where the latent spaces are,
    e.g. ``default`` on a file of ``codec-v0.8``, which shares its encoder)."""
    c = format.parse(bytes(data), max_pixels)
    if vae is None:
        vae = lkmodel.shipped_model(c.model_id)
        if vae is None:
            ids = ", ".join(f"{name} {i.hex()}" for name, i in lkmodel.shipped_ids().items())
            raise LatentkitError(f"this .latent file was made with model id {c.model_id.hex()}, none of the shipped "
                                 f"models ({ids}): pass --model with the weights it was made with")
    else:
        vae = resolve_vae(vae)
        if c.model_id not in lkmodel.reads_ids(vae) and not force_model:
            raise LatentkitError(f"this .latent file was made with model id {c.model_id.hex()}, but the model given "
                                 f"has id {lkmodel.model_id(vae).hex()}: pass --model with the weights of id "
                                 f"{c.model_id.hex()} (or --force-model to decode with this one anyway)")
    shape = lkmodel.latent_shape(vae, c.width, c.height)
    if len(c.exponents) != shape[0]:
        raise LatentkitError(f"corrupt .latent file: {len(c.exponents)} latent channels, the model has {shape[0]}")
    symbols = entropy.decode_symbols(c.payload, shape, c.entropy_model, c.params)
    return c, torch.from_numpy(quant.dequantize(symbols, c.exponents)).unsqueeze(0), vae


def decompress(data: bytes, vae: VaeArg = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               force_model: bool = False) -> Image:
    """Decode `.latent` bytes to an image (alpha, ICC profile, grayscale and 16-bit restored).

    ``vae`` None: the shipped model whose id the file carries; ``force_model``: decode with the given ``vae``
    even if the file names other weights (see :func:`decode_latent`)."""
    c, latent, vae = decode_latent(data, vae, max_pixels, force_model)
    rgb = lkmodel.decode(vae, latent)[0, :, :c.height, :c.width].contiguous()
    return Image(rgb, c.alpha, c.grayscale, c.bit_depth, c.icc_profile)

"""The ``pca`` codec of ``bench rd``: the optimal linear autoencoder's coefficients, coded like latents.

An image's 8 x 8 x 3 patches are projected on the top :data:`~latentkit.latent.pca.CODEC_COMPONENTS` principal
components of the shipped basis (:mod:`latentkit.latent.pca`, fitted on ``../shared/data/train``): a
k x H/8 x W/8 coefficient map, shaped like a VAE latent. It then goes through the latent codec's own machinery
unchanged: rate-distortion optimised per-channel steps (:func:`latentkit.codec.allocate.choose_exponents`),
uniform quantization (:mod:`latentkit.codec.quant`), the context-modelled range coder
(:mod:`latentkit.codec.entropy`) and the `.latent` container (:mod:`latentkit.codec.format`, the basis id in the
model-id field). The decoder gains need no measuring: the components are orthonormal, so noise of variance v in
any coefficient adds v / 192 to the image's mean squared error (192 = 3 x 8 x 8 values per patch; clamping to
[0, 1] aside). The RD curve it gives is what the VAE's nonlinearity buys over the best linear transform of the
same shape.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import io as lkio
from ..codec import allocate, entropy, format, quant
from ..errors import LatentkitError
from ..latent.pca import CODEC_COMPONENTS, PCABasis, load_pca


class PCARoundtrip:
    """The ``pca`` codec as a :data:`latentkit.bench.rd.Roundtrip`: ``(image, quality 1..100) -> (file bytes,
    decoded 3 x H x W in [0, 1])``. One image's coefficients are computed once for all its qualities."""

    def __init__(self, basis: PCABasis | None = None, k: int = CODEC_COMPONENTS):
        self.basis, self.k = basis or load_pca(), k
        self.gains = np.full(k, 1.0 / self.basis.components.shape[1])  # orthonormal: v / D per unit variance v
        self._image, self._coeffs = None, None

    def coefficients(self, image: lkio.Image) -> np.ndarray:
        """The k x ceil(H/8) x ceil(W/8) coefficient map (float32) of an image."""
        if self._image is not image:
            self._image = image
            self._coeffs = self.basis.encode(image.batch(), self.k)[0].numpy()
        return self._coeffs

    def encode(self, image: lkio.Image, quality: int) -> bytes:
        """The file bytes at quality 1..100 (the latent codec's scale: steps halve every 16 points)."""
        coeffs = self.coefficients(image)
        exponents = allocate.choose_exponents(coeffs, self.gains, quant.check_quality(quality))
        symbols = quant.quantize(coeffs, exponents)
        plan = entropy.choose_model(symbols)
        return format.pack(format.Container(
            image.width, image.height, exponents, plan.model, plan.params, self.basis.basis_id(self.k),
            entropy.encode_symbols(symbols, plan), image.alpha, image.icc_profile, image.grayscale, image.bit_depth))

    def decode(self, data: bytes) -> torch.Tensor:
        """Decode a file made by :meth:`encode` to 3 x H x W in [0, 1]."""
        c = format.parse(data)
        if c.model_id != self.basis.basis_id(self.k) or len(c.exponents) != self.k:
            raise LatentkitError("this file was not made with this PCA basis")
        p = self.basis.patch
        shape = (self.k, math.ceil(c.height / p), math.ceil(c.width / p))
        symbols = entropy.decode_symbols(c.payload, shape, c.entropy_model, c.params)
        coeffs = torch.from_numpy(quant.dequantize(symbols, c.exponents))[None]
        return self.basis.decode(coeffs, c.height, c.width)[0]

    def __call__(self, image: lkio.Image, quality: int) -> tuple[bytes, torch.Tensor]:
        data = self.encode(image, quality)
        return data, self.decode(data)

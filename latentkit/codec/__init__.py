"""The `.latent` image codec: quantization (:mod:`.quant`), entropy coding (:mod:`.entropy`), the container
(:mod:`.format`) and the public API (:mod:`.api`)."""

from .api import LatentEncoder, compress, decompress

__all__ = ["LatentEncoder", "compress", "decompress"]

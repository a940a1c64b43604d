"""Entropy coding of quantized latents (format version 2), in three parts, as CompressAI separates entropy
models from latent codecs:

- :mod:`.tables`: the residual alphabet and its integer probability tables (identical on every machine);
- :mod:`.context`: the context model: causal neighbours, the linear prediction, the scale selection, and the
  encoder's weight fits and code-length estimates (:func:`channel_bits`);
- :mod:`.stream`: the coding plan (:func:`choose_model`) and the range-coded payload
  (:func:`encode_symbols` / :func:`decode_symbols`).
"""

from .context import FLOORS, NEIGHBOURS, channel_bits, wavefronts
from .stream import Plan, choose_model, decode_symbols, encode_symbols
from .tables import ALPHABET, NUM_OFFSETS, NUM_SCALES, tables

__all__ = ["ALPHABET", "FLOORS", "NEIGHBOURS", "NUM_OFFSETS", "NUM_SCALES", "Plan", "channel_bits", "choose_model",
           "decode_symbols", "encode_symbols", "tables", "wavefronts"]

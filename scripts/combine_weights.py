"""Write a model made of one model's encoder and another's decoder: how weights/codec follows weights/default.

    python scripts/combine_weights.py weights/codec --encoder weights/default --decoder runs/codec [--dtype fp16]

The encoder side (``encoder.``, ``quant_conv.``) and the config (so ``scaling_factor``) come from --encoder, the
decoding weights (``post_quant_conv.``, ``decoder.``: all a `.latent` file needs) from --decoder; both must have
the same architecture. The codec model shares the default model's encoder so that its latents are the default
model's (tests/test_default_weights.py checks it); when the default model's encoder changes, this rebuilds it
around the codec's tuned decoder. Other files in OUT (a README) are kept.
"""

from __future__ import annotations

import argparse
import sys

import torch

from diffusers import AutoencoderKL

from latentkit.errors import LatentkitError
from latentkit.model import DECODING_WEIGHTS, load_vae, save_vae

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def combine(encoder_model: str, decoder_model: str) -> AutoencoderKL:
    """A diffusers AutoencoderKL: `encoder_model` with the decoding weights of `decoder_model` (fp32)."""
    enc, dec = load_vae(encoder_model), load_vae(decoder_model)
    arch = [{k: v for k, v in m.config.items() if not k.startswith("_") and k != "scaling_factor"} for m in (enc, dec)]
    if arch[0] != arch[1]:
        raise LatentkitError(f"{encoder_model} and {decoder_model} have different architectures")
    sd = enc.state_dict()
    sd.update({k: v for k, v in dec.state_dict().items() if k.startswith(DECODING_WEIGHTS)})
    enc.load_state_dict(sd)
    return enc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output diffusers folder")
    ap.add_argument("--encoder", required=True, help="model whose encoder, quant_conv and config are kept")
    ap.add_argument("--decoder", required=True, help="model whose post_quant_conv and decoder are kept")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="fp16", help="weights dtype written")
    args = ap.parse_args()
    try:
        print(save_vae(combine(args.encoder, args.decoder), args.out, DTYPES[args.dtype]))
    except LatentkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

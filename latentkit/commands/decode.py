"""``latentkit decode IN.latent -o OUT.png``: decompress a `.latent` file to an image."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from . import _args, _batch

if TYPE_CHECKING:  # type hints only: the command runs the model without importing diffusers
    from diffusers import AutoencoderKL


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "decode", help="decompress a .latent file to an image",
        description="Decode a .latent file. Alpha, ICC profile, grayscale and 16-bit are restored. The file names "
                    "the model it was made with by an 8-byte id of its weights: without --model the shipped model "
                    "of that id decodes it (weights/codec, weights/default, or weights/codec-v0.8 for files of the "
                    "codec model before session 19); a --model given must have that id, "
                    "unless --force-model. IN and OUT may be - "
                    "(stdin / stdout; stdout gets a PNG); several inputs or a folder go to an output folder "
                    "(a.latent -> OUT/a.png).")
    _batch.add_batch_args(p, ".latent files", image_output=True)
    _args.add_model(p, "the shipped model whose id the file carries")
    p.add_argument("--force-model", action="store_true",
                   help="decode with --model even if the file names other weights, e.g. `--model default "
                        "--force-model` shows what the plain decoder makes of a file made with `--model "
                        "codec-v0.8` (they share the encoder); a model with another latent space (the current "
                        "codec model's latents are its own) gives a poor picture or garbage")
    _args.add_max_pixels(p, "files that declare")
    _args.add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..codec import format
    from ..errors import LatentkitError
    from ..io import image_bytes, image_format

    if args.force_model and args.model is None:
        raise LatentkitError("--force-model needs --model: the weights to decode with")

    pairs = _batch.plan(args, "." + args.format.lstrip("."), input_suffix=".latent")
    if args.single:  # a bad output name, a damaged or foreign file fail here, before the model loads
        _args.check_paths(args, image_output=True)
        format.parse(_args.read_input(args.input), _args.max_pixels(args))

    from ..codec import decompress  # torch from here on

    vae = None if args.model is None else _args.load_model(args)

    def work(src: str, dst: str) -> tuple[dict, str]:
        data = _args.read_input(src)
        t0 = time.perf_counter()
        image = decompress(data, vae, max_pixels=_args.max_pixels(args), force_model=args.force_model)
        seconds = time.perf_counter() - t0
        _args.write_output(dst, image_bytes(image, "PNG" if dst == _args.STDIO else image_format(dst)), inputs=(src,))
        made_with = format.parse(data).model_id
        successor = _successor(made_with, vae)
        figures = {"input": src, "output": dst, "width": image.width, "height": image.height, "bytes": len(data),
                   "seconds": round(seconds, 3), "fine_tuned_decoder": successor is not None}
        note = (f"; made with model {made_with.hex()}, decoded with {successor}, whose decoder was fine-tuned from "
                f"that model's (nearly its picture, not bit for bit)" if successor else "")
        return figures, f"{dst}: {image.width}x{image.height} ({seconds:.2f} s){note}"

    return _batch.run_all(args, pairs, work)


def _successor(made_with: bytes, vae: "AutoencoderKL | None") -> str | None:
    """The id (hex) of the model that decoded a file made with `made_with` when that model is a later version that
    fine-tuned the file's decoder (:func:`latentkit.model.succeeds_ids`), else None."""
    from .. import model as lkmodel

    vae = vae if vae is not None else lkmodel.shipped_model(made_with)
    if made_with in lkmodel.decodes_ids(vae) or made_with not in lkmodel.succeeds_ids(vae):
        return None
    return lkmodel.model_id(vae).hex()

"""Arguments and input/output rules that several commands share, spelled once.

Nothing here imports torch or diffusers, so building the parser (``latentkit --help``) stays light.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: Pillow's decompression-bomb limit (pixels), the default of --max-pixels (0: no limit)
DEFAULT_MAX_PIXELS = 89_478_485
#: --dtype choices -> torch dtype names
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
#: named model configs (latentkit.model.CONFIGS, spelled here so that --help needs no torch)
CONFIG_NAMES = ("tiny", "small", "sd")
#: LPIPS backbones (latentkit.metrics.lpips.NETS, spelled here so that --help needs no torch)
LPIPS_NETS = ("squeeze", "alex", "vgg")
#: the file name that stands for standard input / output
STDIO = "-"


def add_model(p: argparse.ArgumentParser, default: str = "the shipped weights/default") -> None:
    """``--model`` and ``--allow-pickle``, as every command that loads a VAE spells them; `default` says what no
    --model means."""
    p.add_argument("--model", default=None, metavar="M",
                   help="'default', 'codec' or 'codec-v0.8' (the shipped weights/default, weights/codec, "
                        "weights/codec-v0.8), or anything "
                        "latentkit.load_vae accepts: a diffusers folder, a pipeline folder with vae/, a training run "
                        f"or checkpoint folder (EMA weights), or an SD/LDM .safetensors file (default: {default})")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow loading .ckpt/.pt pickle checkpoints (they can run code: only trusted files)")


def add_json(p: argparse.ArgumentParser, what: str = "the figures") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as one JSON object on stdout")


def add_max_pixels(p: argparse.ArgumentParser, what: str = "images") -> None:
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"refuse {what} with more pixels, a decompression-bomb guard (default: %(default)s; "
                        "0: no limit)")


def max_pixels(args: argparse.Namespace) -> int | None:
    """--max-pixels as the library takes it: None for no limit (0 on the command line)."""
    from ..errors import LatentkitError

    if args.max_pixels < 0:
        raise LatentkitError(f"--max-pixels must be 0 (no limit) or positive, got {args.max_pixels}")
    return args.max_pixels or None


def add_dtype(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="weights dtype of the written files (default: as loaded, normally fp32)")


def torch_dtype(name: str | None):
    """--dtype value -> torch.dtype, or None."""
    import torch

    return None if name is None else getattr(torch, DTYPES[name])


def model_path(model: str | None) -> Path:
    """The path a --model argument names (None or a shipped model's name: its weights folder), e.g. to never
    write over it."""
    from ..model import SHIPPED_MODELS

    return SHIPPED_MODELS.get(model or "default", Path(model or "default"))


def load_model(args: argparse.Namespace, device: str | None = None, default: str = "default",
               standalone: bool = True):
    """The model --model / --allow-pickle name (no --model: the shipped model named `default`). ``standalone``
    (:func:`latentkit.load_vae`'s: the network without diffusers' import) for every command that only runs the
    network; False where diffusers' own model is needed (export)."""
    from ..model import load_vae

    return load_vae(args.model or default, device=device, allow_pickle=args.allow_pickle, standalone=standalone)


def check_input_file(path: str, what: str = "input file") -> None:
    """Raise a one-line :class:`LatentkitError` unless `path` is ``-`` (stdin) or an existing file."""
    from ..errors import LatentkitError

    if path == STDIO:
        return
    p = Path(path)
    if p.is_dir():
        raise LatentkitError(f"{what} {p} is a folder; give one file")
    if not p.is_file():
        raise LatentkitError(f"{what} {p} does not exist")


_stdin: dict[int, bytes] = {}  # standard input, read once (keyed by the stream, which tests replace)


def read_input(path: str) -> bytes:
    """The bytes of an input file, or of standard input for ``-`` (read once, then the same bytes again)."""
    check_input_file(path)
    if path != STDIO:
        return Path(path).read_bytes()
    key = id(sys.stdin)
    if key not in _stdin:
        _stdin.clear()
        _stdin[key] = sys.stdin.buffer.read()
    return _stdin[key]


def check_output(path: str, inputs: tuple = (), binary: bool = True) -> None:
    """Raise unless `path` can be written: ``-`` (stdout, refused when it is a terminal and the output is
    binary), or a file in an existing folder that is none of `inputs`."""
    from ..errors import LatentkitError
    from ..io import check_output as check_file

    if path == STDIO:
        if binary and sys.stdout.isatty():
            raise LatentkitError("refusing to write binary data to a terminal; redirect stdout or pass -o FILE")
        return
    check_file(path, inputs=tuple(i for i in inputs if i != STDIO))


def check_new_output(path: str, overwrite: bool) -> None:
    """Raise unless `path` is ``-`` or does not exist yet, or `overwrite` allows replacing it."""
    if path != STDIO and Path(path).exists() and not overwrite:
        from ..errors import LatentkitError

        raise LatentkitError(f"output {path} already exists; pass --overwrite to replace it")


def check_paths(args: argparse.Namespace, image_output: bool = False) -> None:
    """Check a command's IN (``args.input``) and OUT (``args.output``) before any work: IN exists (or is ``-``),
    OUT can be written, is not IN, and is new unless ``--overwrite``; with `image_output`, OUT's suffix is an
    image type Pillow writes (stdout gets PNG)."""
    if image_output and args.output != STDIO:
        from ..io import image_format

        image_format(args.output)
    check_input_file(args.input)
    check_output(args.output, inputs=(args.input,))
    check_new_output(args.output, getattr(args, "overwrite", False))


def write_output(path: str, data: bytes, inputs: tuple = ()) -> None:
    """Write `data` to `path` atomically (temporary file + rename), or to standard output for ``-``."""
    from ..io import atomic_write

    if path == STDIO:
        check_output(path)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), inputs=tuple(i for i in inputs if i != STDIO))


def report(args: argparse.Namespace, figures: dict, line: str) -> None:
    """Print a command's result: `figures` as JSON with --json, else `line`; on stderr when the command's
    output goes to stdout (``-o -``), so it never mixes with the data."""
    stream = sys.stderr if getattr(args, "output", None) == STDIO else sys.stdout
    print(json.dumps(figures) if args.json else line, file=stream)

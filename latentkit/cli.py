"""The ``latentkit`` command. Each subcommand lives in ``latentkit/commands/<name>.py`` and defines
``register(subparsers)``, which adds its parser and sets ``func`` to the function that runs it.

User errors (:class:`LatentkitError`) print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand modules, in the order ``--help`` lists them
COMMANDS = [
    "roundtrip", "encode", "decode", "metrics", "info", "init_model", "train", "eval_model",
    "bench", "export", "scale_factor", "fetch",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentkit",
        description="Stable-Diffusion-style KL autoencoders: compress images to .latent files, measure "
                    "quality (PSNR, SSIM, LPIPS), train VAEs and swap them into diffusers pipelines.",
    )
    parser.add_argument("--version", action="version", version="latentkit " + _version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"latentkit.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"latentkit.commands.{name}":
                continue  # not written yet
            raise
        module.register(sub)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    from .errors import LatentkitError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LatentkitError as e:
        print(f"latentkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latentkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The ``latentkit`` command. Each subcommand lives in ``latentkit/commands/<name>.py`` and defines
``register(subparsers)``, which adds its parser and sets ``func`` to the function that runs it.

User errors (:class:`LatentkitError`) print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

#: subcommand modules, in the order ``--help`` lists them
COMMANDS = [
    "roundtrip", "encode", "decode", "metrics", "info", "init_model", "train", "eval_model",
    "bench", "export", "scale_factor", "fetch", "interpolate", "sample", "anomaly", "latent_stats",
    "encode_dataset",
]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (``latentkit encode: error: ...; see --help``), not the whole
    usage block: the same one-line form as every other error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="latentkit",
        description="Stable-Diffusion-style KL autoencoders: compress images to .latent files, measure "
                    "quality (PSNR, SSIM, LPIPS), train VAEs and swap them into diffusers pipelines.",
    )
    parser.add_argument("--version", action="version", version="latentkit " + _version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"latentkit.commands.{name}").register(sub)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


#: exit status when the reader of stdout went away (128 + SIGPIPE, what a shell shows for `yes | head`)
EXIT_BROKEN_PIPE = 141


#: OpenMP threads that wait for work sleep instead of spinning: on a machine whose other cores are busy, a spinning
#: thread steals the time the busy core's thread needs, and every parallel region waits for the slowest thread
#: (README "Performance"). Set before torch loads; a value in the environment wins.
OPENMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 2 user error, 130 interrupted, 141 stdout closed)."""
    from .errors import LatentkitError

    if "torch" not in sys.modules:
        for key, value in OPENMP_ENV.items():
            os.environ.setdefault(key, value)

    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except LatentkitError as e:
        print(f"latentkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latentkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # e.g. `latentkit info --json | head -c 100`: stop quietly, as Unix tools do; what is still buffered
        # for stdout goes nowhere, so the interpreter's final flush cannot fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def console() -> None:
    """The ``latentkit`` command: :func:`main`, then exit without the interpreter's teardown.

    Freeing torch's and diffusers' modules at exit takes ~1 s, an eighth of a short command (measured on the
    2-core AMX Xeon: a 768x512 roundtrip 8.38 s -> 7.30 s). Nothing is lost by skipping it: outputs are renamed
    into place before a command returns, atexit handlers still run and both streams are flushed here."""
    import atexit

    status = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, OSError, ValueError):  # a closed pipe: as main() reports it
            status = status or EXIT_BROKEN_PIPE
    os._exit(status)


if __name__ == "__main__":
    console()

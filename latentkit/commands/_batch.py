"""Many inputs for one command (encode, decode, roundtrip): which output each input gets, and running them all with
one progress bar, a line per failure (the others go on), ``--json`` per file and a summary.

One input file (or ``-``) with an OUT that is not a folder is the single-file case: the same work, and a failure
is the command's one-line error. Otherwise OUT is a folder (created if missing) and every input file, or every
matching file of an input folder (``--recursive``: below it, keeping the relative paths), gets OUT/NAME with the
command's output suffix. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import LatentkitError
from . import _args

#: work(input, output) -> (figures for --json, the human-readable line)
Work = Callable[[str, str], tuple[dict, str]]


def add_batch_args(p: argparse.ArgumentParser, what: str, image_output: bool = False) -> None:
    """IN... (files, folders or -), -o OUT, --recursive, --jobs, --overwrite; with `image_output`, --format."""
    p.add_argument("inputs", nargs="+", metavar="IN", help=f"{what}: files, folders of them, or - (standard input)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file (one input), - for standard output, or a folder (several inputs or a folder; "
                        "names are kept, with the output's suffix)")
    p.add_argument("--recursive", action="store_true", help="take input folders' files from all their subfolders "
                                                            "(the output keeps the relative paths)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="files processed at once (default: 1)")
    exists = p.add_mutually_exclusive_group()
    exists.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    exists.add_argument("--skip-existing", action="store_true",
                        help="with an output folder: leave inputs whose output exists alone (counted as skipped, not "
                             "failed), so a rerun of an interrupted batch does only what is left; outputs are "
                             "written atomically, so an existing one is whole")
    if image_output:
        p.add_argument("--format", default="png", metavar="EXT",
                       help="image type written into an output folder (default: %(default)s, which keeps alpha, "
                            "16-bit and ICC); one output file's type follows its suffix, and - gets PNG")


def _folder_files(folder: Path, recursive: bool, input_suffix: str | None) -> list[Path]:
    if input_suffix is None:
        from ..io import list_images

        return list_images(folder, recursive=recursive)
    found = folder.rglob(f"*{input_suffix}") if recursive else folder.glob(f"*{input_suffix}")
    files = sorted(p for p in found if p.is_file())
    if not files:
        raise LatentkitError(f"no {input_suffix} files {'under' if recursive else 'in'} {folder}")
    return files


def plan(args: argparse.Namespace, out_suffix: str, input_suffix: str | None = None) -> list[tuple[str, str]]:
    """(input, output) pairs for the command's arguments (``input_suffix`` None: input folders hold images);
    sets ``args.single`` (one input file to one output: the single-file case) and then ``args.input``."""
    inputs, out = args.inputs, args.output
    args.single = len(inputs) == 1 and not Path(inputs[0]).is_dir() and not Path(out).is_dir()
    if args.single:  # (a missing file fails in the command's checks)
        args.input = inputs[0]
        return [(inputs[0], out)]
    if out == _args.STDIO:
        raise LatentkitError("several inputs need an output folder (-o DIR), not -")
    if _args.STDIO in inputs:
        raise LatentkitError("- (standard input) can only be the one input")
    if Path(out).exists() and not Path(out).is_dir():
        raise LatentkitError(f"several inputs need an output folder, but {out} is a file")
    pairs, seen = [], {}
    for i in inputs:
        p = Path(i)
        if p.is_dir():
            pairs += [(str(f), str(Path(out) / f.relative_to(p).with_suffix(out_suffix)))
                      for f in _folder_files(p, args.recursive, input_suffix)]
        else:
            pairs.append((i, str(Path(out) / (p.stem + out_suffix))))  # a missing file fails in its turn
    for src, dst in pairs:
        if dst in seen:
            raise LatentkitError(f"{seen[dst]} and {src} would both be written to {dst}; rename one")
        seen[dst] = src
    return pairs


def run_all(args: argparse.Namespace, pairs: list[tuple[str, str]], work: Work, binary: bool = True) -> int:
    """Run `work` on every pair; returns the exit status (0, or 2 when any file failed). ``binary``: the output
    is binary (refused on a terminal)."""
    if args.jobs < 1:
        raise LatentkitError(f"--jobs must be at least 1, got {args.jobs}")
    single = args.single

    def one(pair: tuple[str, str]) -> tuple[dict, str]:
        src, dst = pair
        _args.check_input_file(src)
        _args.check_new_output(dst, args.overwrite)
        if not single:
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
        _args.check_output(dst, inputs=(src,), binary=binary)
        return work(src, dst)

    if single:
        figures, line = one(pairs[0])
        _args.report(args, figures, line)
        return 0
    from tqdm import tqdm

    skipped = 0
    if args.skip_existing:
        kept = [(src, dst) for src, dst in pairs if not Path(dst).exists()]
        skipped, pairs = len(pairs) - len(kept), kept

    if args.jobs > 1:
        import torch

        torch.set_num_threads(max(1, torch.get_num_threads() // args.jobs))
    failed = 0
    with ThreadPoolExecutor(args.jobs) as pool, tqdm(total=len(pairs), unit="file", disable=args.json,
                                                     desc=args.command) as bar:
        futures = [(pair, pool.submit(one, pair)) for pair in pairs]
        for (src, _), future in futures:
            try:
                figures, line = future.result()
            except LatentkitError as e:
                failed += 1
                bar.write(f"latentkit: error: {src}: {e}", file=sys.stderr)
                if args.json:
                    print(json.dumps({"input": src, "error": str(e)}))
            else:
                if args.json:
                    print(json.dumps(figures))
                else:
                    bar.write(line)
            bar.update()
    print(f"{len(pairs) - failed} of {len(pairs) + skipped} files written to {args.output}"
          + (f", {skipped} skipped (output exists)" if skipped else "")
          + (f", {failed} failed" if failed else ""), file=sys.stderr if args.json else sys.stdout)
    return 2 if failed else 0

"""Coverage-guided fuzzing of `.latent` parsing and entropy decoding with atheris (libFuzzer for Python).

    pip install "latentkit[fuzz]"          # atheris + coverage
    python scripts/fuzz_latent_atheris.py --seconds 1800 [--corpus DIR] [--json]

The target is everything a `.latent` decoder does before the neural network: ``format.parse`` (header, sizes,
CRC), the model-id and channel checks, and the range decoder with its context model (``decode_latent``), for
a micro model (random weights: only its id and latent shape matter here). The fuzzer starts from the valid
files of ``scripts/fuzz_latent.py`` (RGB, RGBA, grayscale, 16-bit, ICC, 1x1, several qualities) and mutates
them guided by the branch coverage of latentkit's codec code; the target recomputes each input's CRC first
(so mutations reach the parser and the entropy decoder instead of stopping at the checksum; a wrong CRC is
its own, trivially covered, refusal). Anything but a one-line ``LatentkitError`` is a crash: libFuzzer stops,
writes ``crash-*`` into the corpus folder and this script exits 1. Limits: 10 s per input (``-timeout``), 1.5 GB for any
single allocation (``-malloc_limit_mb``) and 3 GB for the fuzzing process (``-rss_limit_mb``: atheris'
instrumentation and libFuzzer's tables alone grow it to ~1.5 GB over 15 minutes; replaying the same inputs
without them stays at ~430 MB).

Afterwards the corpus the fuzzer kept is replayed under ``coverage`` (line coverage of ``codec/format.py``
and ``codec/entropy/``, in a separate process without atheris' instrumentation) and the outcome of every
corpus file is counted (refused / accepted).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # fuzz_latent's seeds
SOURCES = ("latentkit/codec/format.py", "latentkit/codec/entropy/stream.py", "latentkit/codec/entropy/context.py",
           "latentkit/codec/entropy/tables.py")


def micro_vae():
    from latentkit.model import config_dict, make_vae

    cfg = config_dict("tiny")
    cfg.update(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4)
    return make_vae(cfg, seed=0).eval().requires_grad_(False)  # the same weights as fuzz_latent's seeds


def with_crc(data: bytes) -> bytes:
    """The bytes with their last 4 replaced by the CRC32 of the rest (as `.latent` files end)."""
    return data if len(data) < 5 else data[:-4] + zlib.crc32(data[:-4]).to_bytes(4, "little")


def _fuzz(corpus: str, libfuzzer_args: list[str]) -> None:
    """The fuzzing process: atheris instruments latentkit.codec and runs libFuzzer on the target."""
    import atheris
    import torch

    torch.set_num_threads(1)
    with atheris.instrument_imports(include=["latentkit.codec"]):
        from latentkit.codec.api import decode_latent
    from latentkit.errors import LatentkitError

    vae = micro_vae()

    def target(data: bytes) -> None:
        try:
            decode_latent(with_crc(data), vae)
        except LatentkitError as e:
            if "\n" in str(e):
                raise AssertionError(f"multi-line error message: {e!r}") from None

    atheris.Setup([sys.argv[0], corpus, *libfuzzer_args], target)
    atheris.Fuzz()


def _replay(corpus: str) -> None:
    """Replay every corpus file under coverage; print one JSON line (outcomes and coverage per file)."""
    import coverage

    root = HERE.parent
    cov = coverage.Coverage(include=[str(root / s) for s in SOURCES], branch=False)
    cov.start()
    from latentkit.codec.api import decode_latent
    from latentkit.errors import LatentkitError

    vae = micro_vae()
    outcome = {"refused": 0, "accepted": 0}
    for f in sorted(Path(corpus).iterdir()):
        if f.is_file() and not f.name.startswith(("crash-", "timeout-", "oom-")):
            try:
                decode_latent(with_crc(f.read_bytes()), vae)
                outcome["accepted"] += 1
            except LatentkitError:
                outcome["refused"] += 1
    cov.stop()
    lines = {}
    for s in SOURCES:
        _, statements, _, missing, _ = cov.analysis2(str(root / s))
        lines[s] = {"statements": len(statements), "missing": len(missing),
                    "percent": round(100 * (1 - len(missing) / max(1, len(statements))), 1)}
    print(json.dumps({"corpus_files": sum(outcome.values()), **outcome, "coverage": lines}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=600, help="fuzzing time (libFuzzer -max_total_time)")
    ap.add_argument("--corpus", help="corpus folder (kept; default: a temporary one)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--_fuzz", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_replay", action="store_true", help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args._fuzz:
        _fuzz(args.corpus, rest)
        return 0
    if args._replay:
        _replay(args.corpus)
        return 0
    try:
        import atheris  # noqa: F401
        import coverage  # noqa: F401
    except ImportError:
        print('error: needs atheris and coverage: pip install "latentkit[fuzz]"', file=sys.stderr)
        return 2
    from fuzz_latent import make_seeds

    corpus = Path(args.corpus or tempfile.mkdtemp(prefix="latent-corpus-"))
    corpus.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(make_seeds()):
        (corpus / f"seed{i}.latent").write_bytes(s)
    fuzz = subprocess.run([sys.executable, __file__, "--_fuzz", "--corpus", str(corpus),
                           f"-max_total_time={args.seconds}", "-timeout=10", "-rss_limit_mb=3072",
                           "-malloc_limit_mb=1500",
                           "-print_final_stats=1", f"-artifact_prefix={corpus}/"],
                          capture_output=True, text=True)
    stats = {}
    for line in fuzz.stderr.splitlines():  # libFuzzer's final stats: "stat::number_of_executed_units: 12345"
        if line.startswith("stat::"):
            k, v = line[6:].split(":", 1)
            stats[k.strip()] = int(v)
    crashes = sorted(p.name for p in corpus.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    replay = subprocess.run([sys.executable, __file__, "--_replay", "--corpus", str(corpus)],
                            capture_output=True, text=True, check=True)
    result = {"seconds": args.seconds, "executions": stats.get("number_of_executed_units"),
              "peak_rss_mb": stats.get("peak_rss_mb"), "crashes": crashes, "fuzzer_exit": fuzz.returncode,
              **json.loads(replay.stdout.strip().splitlines()[-1]), "corpus": str(corpus)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['executions']} executions in {args.seconds} s, peak RSS {result['peak_rss_mb']} MB, "
              f"{len(crashes)} crashes/timeouts/OOMs (fuzzer exit {fuzz.returncode}); corpus {corpus}: "
              f"{result['corpus_files']} files, {result['refused']} refused, {result['accepted']} accepted")
        for s, c in result["coverage"].items():
            print(f"  {s}: {c['percent']}% of {c['statements']} lines")
        if crashes or fuzz.returncode not in (0,):
            print(fuzz.stderr[-3000:], file=sys.stderr)
    return 1 if crashes or fuzz.returncode != 0 else 0


if __name__ == "__main__":
    sys.exit(main())

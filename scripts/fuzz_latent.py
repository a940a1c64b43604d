"""Mutation fuzzing of `.latent` decoding: every damaged file must give a clean LatentkitError.

    python scripts/fuzz_latent.py --cases 100000 --seed 0 [--fix-crc both|yes|no] [--time-limit 10]
                                  [--memory-mb 1500] [--json]

Seeds: valid files made here with a micro model (random weights, so decoding is fast; the parser and the entropy
decoder do not care what the weights are): RGB, RGBA, grayscale, 16-bit grayscale, an ICC profile, 1x1 and odd
sizes, at several qualities. Each case mutates one seed (truncation, bit flips, byte insertion / deletion,
header fields set to 0 / huge / negative-looking, version and channel-count edits, a splice of two files,
trailing garbage, random bytes, empty input) and, with ``--fix-crc``, recomputes the CRC so the checksum no
longer hides the parser (as a coverage-guided fuzzer's mutations get through). Cases run in a worker process
under a time limit (SIGALRM) and an address-space limit (RLIMIT_AS); a worker that dies is replaced.

Classes counted: ``refused`` (LatentkitError, one line), ``accepted`` (decoded without error: fine only when
the bytes are a valid file, e.g. a flip in a step exponent, so they are listed by mutation), ``error`` (any other
exception: a bug), ``hang`` (over the time limit), ``memory`` (MemoryError or the worker killed over the
limit). Exit status 1 when any case is ``error``, ``hang`` or ``memory``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import signal
import sys
import time
import zlib
from collections import Counter

import numpy as np

KINDS = ("truncate", "bitflip", "insert", "delete", "header_zero", "header_huge", "header_ff", "version",
         "channels", "splice", "trailing", "random", "empty")


def make_seeds() -> list[bytes]:
    """Valid `.latent` files of several kinds, from the test suite's micro model."""
    import torch
    from PIL import Image as PILImage

    from latentkit.codec import compress
    from latentkit.io import from_pil
    from latentkit.model import config_dict, make_vae

    cfg = config_dict("tiny")
    cfg.update(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4)
    vae = make_vae(cfg, seed=0).eval().requires_grad_(False)
    rng = np.random.default_rng(0)
    rgb = PILImage.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
    rgba = PILImage.fromarray(rng.integers(0, 256, (17, 23, 4), dtype=np.uint8), "RGBA")
    gray = PILImage.fromarray(rng.integers(0, 256, (31, 9), dtype=np.uint8), "L")
    g16 = PILImage.fromarray(rng.integers(0, 65536, (16, 16), dtype=np.uint16))
    icc = rgb.copy()
    icc.info["icc_profile"] = b"not a real profile but carried" * 8
    one = PILImage.fromarray(np.full((1, 1, 3), 200, dtype=np.uint8))
    seeds = []
    with torch.no_grad():
        for im, q in ((rgb, 1), (rgb, 60), (rgb, 100), (rgba, 40), (gray, 75), (g16, 90), (icc, 50), (one, 75)):
            seeds.append(compress(from_pil(im), vae, quality=q))
    return seeds


def mutate(seeds: list[bytes], rng: np.random.Generator) -> tuple[str, bytes, int]:
    """(kind, mutated bytes, index of the seed) of one random mutation, before any CRC fix."""
    k = int(rng.integers(len(seeds)))
    data = bytearray(seeds[k])
    kind = KINDS[int(rng.integers(len(KINDS)))]
    n = len(data)
    if kind == "truncate":
        data = data[:int(rng.integers(0, n))]
    elif kind == "bitflip":
        for _ in range(int(rng.integers(1, 5))):
            b = int(rng.integers(0, n * 8))
            data[b // 8] ^= 1 << (b % 8)
    elif kind == "insert":
        at = int(rng.integers(0, n + 1))
        data[at:at] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
    elif kind == "delete":
        at = int(rng.integers(0, n))
        del data[at:at + int(rng.integers(1, 9))]
    elif kind in ("header_zero", "header_huge", "header_ff"):  # the fields after magic + version + flags
        at = int(rng.integers(3, min(n, 24)))
        run = int(rng.integers(1, 5))
        fill = {"header_zero": 0x00, "header_huge": 0xFF, "header_ff": 0x80}[kind]
        data[at:at + run] = bytes([fill]) * len(data[at:at + run])
    elif kind == "version":
        data[2] = int(rng.integers(0, 256))
    elif kind == "channels":  # the channel count follows the two size varints: find it by parsing them
        pos = 4
        for _ in range(2):
            while pos < n and data[pos] & 0x80:
                pos += 1
            pos += 1
        if pos < n:
            data[pos] = int(rng.integers(0, 256))
    elif kind == "splice":
        other = seeds[int(rng.integers(len(seeds)))]
        data = data[:int(rng.integers(0, n))] + other[int(rng.integers(0, len(other))):]
    elif kind == "trailing":
        data += rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    elif kind == "random":
        data = bytearray(rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
        if rng.integers(2):
            data[:2] = b"LK"
    else:  # empty
        data = bytearray()
    return kind, bytes(data), k


def fix_crc(data: bytes) -> bytes:
    """The same bytes with their last 4 replaced by the CRC32 of the rest (as `.latent` files end)."""
    if len(data) < 5:
        return data
    return data[:-4] + zlib.crc32(data[:-4]).to_bytes(4, "little")


def _worker(jobs, results, time_limit: float, memory_mb: int) -> None:
    """Decode the cases it is sent; report (case id, class, detail)."""
    import torch

    from latentkit.errors import LatentkitError

    torch.set_num_threads(1)
    limit = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from latentkit.codec import decompress
    from latentkit.model import config_dict, make_vae

    cfg = config_dict("tiny")
    cfg.update(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4)
    vae = make_vae(cfg, seed=0).eval().requires_grad_(False)

    def on_alarm(signum, frame):
        raise TimeoutError

    signal.signal(signal.SIGALRM, on_alarm)
    while True:
        job = jobs.get()
        if job is None:
            return
        case, data = job
        signal.setitimer(signal.ITIMER_REAL, time_limit)
        try:
            with torch.no_grad():
                decompress(data, vae)
            result = ("accepted", "")
        except LatentkitError as e:
            result = ("refused", "") if "\n" not in str(e) else ("error", "multi-line message: " + repr(str(e)))
        except TimeoutError:
            result = ("hang", "")
        except MemoryError:
            result = ("memory", "")
        except Exception as e:  # noqa: BLE001 - counting what escapes is the point
            result = ("error", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        results.put((case, *result))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fix-crc", choices=("both", "yes", "no"), default="both",
                    help="recompute the CRC after mutating: both (alternate), yes, no")
    ap.add_argument("--time-limit", type=float, default=10.0, help="seconds per case")
    ap.add_argument("--memory-mb", type=int, default=1500, help="address-space limit of the worker")
    ap.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    args = ap.parse_args()
    from tqdm import tqdm

    seeds = make_seeds()
    rng = np.random.default_rng(args.seed)
    ctx = mp.get_context("spawn")
    counts: Counter = Counter()
    by_kind: dict[str, Counter] = {}
    examples: dict[str, list[str]] = {}
    t0 = time.time()

    def start():
        jobs, results = ctx.Queue(), ctx.Queue()
        w = ctx.Process(target=_worker, args=(jobs, results, args.time_limit, args.memory_mb), daemon=True)
        w.start()
        return w, jobs, results

    worker, jobs, results = start()
    for case in tqdm(range(args.cases), desc="fuzz", unit="case", mininterval=5):
        kind, data, k = mutate(seeds, rng)
        crc = args.fix_crc == "yes" or (args.fix_crc == "both" and case % 2 == 0)
        if crc:
            data = fix_crc(data)
        label = kind + ("+crc" if crc else "")
        if data == seeds[k]:
            cls, detail = "unchanged", ""
        else:
            jobs.put((case, data))
            try:
                _, cls, detail = results.get(timeout=args.time_limit + 120)  # start-up included
            except Exception:  # noqa: BLE001 - the worker died (killed over the memory limit) or stalled
                cls, detail = ("memory" if not worker.is_alive() else "hang"), "worker lost"
                worker.kill()
                worker, jobs, results = start()
        counts[cls] += 1
        by_kind.setdefault(label, Counter())[cls] += 1
        if cls in ("error", "hang", "memory", "accepted") and len(examples.setdefault(cls, [])) < 5:
            examples[cls].append(f"case {case} {label} seed {k}: {detail}")
    jobs.put(None)
    worker.join(timeout=10)
    out = {"cases": args.cases, "seed": args.seed, "fix_crc": args.fix_crc, "seconds": round(time.time() - t0, 1),
           "counts": dict(counts), "by_mutation": {k: dict(v) for k, v in sorted(by_kind.items())},
           "examples": examples}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.cases} cases in {out['seconds']} s: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        for k, v in sorted(by_kind.items()):
            print(f"  {k:<18} " + ", ".join(f"{c} {n}" for c, n in sorted(v.items())))
        for cls, lines in examples.items():
            print(f"{cls}:", *lines, sep="\n  ")
    return 1 if counts["error"] or counts["hang"] or counts["memory"] else 0


if __name__ == "__main__":
    sys.exit(main())

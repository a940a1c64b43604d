"""What an ``encode-dataset`` job encodes and who encodes it: the source list and its split into shards and ranks.

The items are numbered 0..n-1 in a fixed order (a folder: every image below it, sorted by path; a text file:
its lines in order). Shard ``k`` holds the contiguous items ``[k * shard_size, (k + 1) * shard_size)``, and
process ``rank`` of ``world`` writes the shards ``k`` with ``k % world == rank``. So the shards' contents do not
depend on the number of processes (a job can be resumed with a different one), every item lands in exactly one
shard, and every shard is written by exactly one process. Nothing here imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import LatentkitError


def list_sources(src: str | os.PathLike, limit: int | None = None) -> list[str]:
    """The image paths `src` names, in job order: a folder gives every image below it (recursive, sorted; see
    :func:`latentkit.io.list_images`), a text file gives one path per line (blank lines and lines starting with
    ``#`` skipped; relative paths are taken relative to the text file's folder). The first `limit` if given.
    Raises :class:`LatentkitError` when `src` is missing or lists nothing."""
    from ..io import list_images

    p = Path(src)
    if p.is_dir():
        return [str(f) for f in list_images(p, recursive=True, limit=limit)]
    if not p.is_file():
        raise LatentkitError(f"source {p} does not exist (give a folder of images or a text file of paths)")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LatentkitError(f"cannot read the path list {p}: {str(e).splitlines()[0]}") from None
    paths = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            paths.append(line if os.path.isabs(line) else str(p.parent / line))
            if limit is not None and len(paths) >= limit:
                break
    if not paths:
        raise LatentkitError(f"the path list {p} names no files")
    return paths


def num_shards(n_items: int, shard_size: int) -> int:
    """How many shards `n_items` items fill at `shard_size` items per shard (the last one may be short)."""
    return -(-n_items // shard_size)


def shard_items(shard: int, n_items: int, shard_size: int) -> range:
    """The item numbers that shard `shard` holds."""
    return range(shard * shard_size, min(n_items, (shard + 1) * shard_size))


def rank_shards(n_shards: int, rank: int, world: int) -> list[int]:
    """The shards process `rank` (0-based) of `world` processes writes: those with ``shard % world == rank``."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    return list(range(rank, n_shards, world))


def rank_items(n_items: int, shard_size: int, rank: int, world: int) -> list[int]:
    """Every item number process `rank` of `world` encodes (the items of its shards, in order)."""
    return [i for k in rank_shards(num_shards(n_items, shard_size), rank, world)
            for i in shard_items(k, n_items, shard_size)]

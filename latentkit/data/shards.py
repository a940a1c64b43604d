"""The on-disk layout of an encoded dataset: shards, their sidecars, ``job.json``, ``index.json``, ``failed.txt``.

``OUT_DIR/shard-000042.safetensors`` holds, for each output size ``WxH`` (pixels) among its images, the tensor
``latents.WxH`` (N x C x H/f x W/f, unscaled) and, with ``--with-std``, ``std.WxH`` (the posterior's standard
deviation, same shape). ``shard-000042.json`` (the sidecar) lists its items in source order: path, item number,
source size, crop box, group and row, plus the images that failed and why, the file's byte count and sha256.

Writing is atomic and ordered so that a reader never takes a partial shard for a whole one: the tensors go to a
temporary ``.shard-000042.*.tmp`` file, the sidecar (which names that file's size, sha256 and a random token
that is also in the tensors' header) is written atomically, and only then is the temporary file renamed into
place. A shard counts as finished only when its sidecar belongs to this job (the fingerprint of the job's
settings and the shard's paths) and the tensor file's size and header token match the sidecar.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write, current_umask

FORMAT = "latentkit-latent-dataset"
VERSION = 1
INDEX_FILE = "index.json"
JOB_FILE = "job.json"
FAILED_FILE = "failed.txt"
_SHARD_RE = re.compile(r"shard-(\d{6,})\.(safetensors|json)")


def shard_name(shard: int) -> str:
    """``shard-000042``: the stem of shard 42's files."""
    return f"shard-{shard:06d}"


def tensor_path(out_dir: str | os.PathLike, shard: int) -> Path:
    return Path(out_dir) / f"{shard_name(shard)}.safetensors"


def sidecar_path(out_dir: str | os.PathLike, shard: int) -> Path:
    return Path(out_dir) / f"{shard_name(shard)}.json"


def group_name(size: tuple[int, int]) -> str:
    """The group of images encoded at width x height pixels: ``"WxH"``."""
    return f"{size[0]}x{size[1]}"


def fingerprint(job: dict[str, Any], paths: list[str]) -> str:
    """sha256 (hex) of a job's settings and one shard's source paths: equal iff the shard's content would be."""
    text = json.dumps({"job": job, "paths": paths}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 1) -> None:
    """JSON to `path`, atomically."""
    text = json.dumps(data, indent=indent) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path: str | os.PathLike) -> Any | None:
    """The JSON in `path`, or None when it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_shard(out_dir: str | os.PathLike, shard: int, tensors: dict[str, torch.Tensor], items: list[dict],
                failed: list[dict], fp: str, rank: int = 0) -> dict:
    """Write shard `shard` (``tensors``: ``latents.WxH`` / ``std.WxH`` -> N x C x h x w; ``items``: one record
    per encoded image in source order; ``failed``: one per unreadable image; ``rank``: the process writing it,
    recorded) atomically, as the module docstring describes. Returns the sidecar."""
    out = Path(out_dir)
    final = tensor_path(out, shard)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=out)
    os.close(fd)
    try:
        token = secrets.token_hex(8)
        _save(tensors, tmp, {"format": FORMAT, "shard": str(shard), "token": token, "count": str(len(items))})
        os.chmod(tmp, 0o666 & ~current_umask())  # (after the save, which may create the file anew)
        groups: dict[str, dict] = {}
        for name, t in sorted(tensors.items()):
            kind, group = name.split(".", 1)
            if kind == "latents":
                groups[group] = {"count": int(t.shape[0]), "latent_shape": list(t.shape[1:])}
        sidecar = {"format": FORMAT + "-shard", "version": VERSION, "shard": shard, "fingerprint": fp,
                   "token": token, "file": final.name, "bytes": os.path.getsize(tmp), "sha256": sha256_file(tmp),
                   "count": len(items), "failed_count": len(failed), "groups": groups, "rank": rank,
                   "dtype": str(next(iter(tensors.values())).dtype).removeprefix("torch.") if tensors else None,
                   "items": items, "failed": failed}
        write_json(sidecar_path(out, shard), sidecar, indent=None)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sidecar


def _save(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=metadata)


def finished(out_dir: str | os.PathLike, shard: int, fp: str) -> dict | None:
    """The sidecar of shard `shard` when the shard is whole and belongs to fingerprint `fp`, else None. Reads
    the sidecar and the tensor file's header only (see :func:`verify` for a full check)."""
    sidecar = read_json(sidecar_path(out_dir, shard))
    path = tensor_path(out_dir, shard)
    if not isinstance(sidecar, dict) or sidecar.get("fingerprint") != fp or not path.is_file():
        return None
    if path.stat().st_size != sidecar.get("bytes") or _header(path).get("token") != sidecar.get("token"):
        return None
    return sidecar


def _header(path: Path) -> dict[str, str]:
    """The safetensors metadata of `path` ({} when it cannot be read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception:  # noqa: BLE001 - any unreadable header means: not a finished shard
        return {}


def verify(out_dir: str | os.PathLike, sidecar: dict) -> list[str]:
    """Re-read a shard completely: the file's size and sha256, the header token, every tensor's name, count,
    shape and dtype against the sidecar, and that all values are finite. Returns the problems (empty: good)."""
    from safetensors import safe_open

    shard = sidecar.get("shard")
    path = Path(out_dir) / str(sidecar.get("file"))
    name = path.name
    if not path.is_file():
        return [f"{name}: missing"]
    problems = []
    if path.stat().st_size != sidecar.get("bytes"):
        problems.append(f"{name}: {path.stat().st_size} bytes, the sidecar says {sidecar.get('bytes')}")
    if sha256_file(path) != sidecar.get("sha256"):
        problems.append(f"{name}: checksum differs from the sidecar's")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta, keys = f.metadata() or {}, set(f.keys())
            if meta.get("token") != sidecar.get("token") or meta.get("shard") != str(shard):
                problems.append(f"{name}: header does not match its sidecar")
            groups = sidecar.get("groups", {})
            expected = {f"latents.{g}" for g in groups} | {f"std.{g}" for g in groups if f"std.{g}" in keys}
            if keys != expected:
                problems.append(f"{name}: tensors {sorted(keys)}, expected {sorted(expected)}")
            for key in sorted(keys & expected):
                t = f.get_tensor(key)
                g = groups[key.split(".", 1)[1]]
                if list(t.shape) != [g["count"], *g["latent_shape"]]:
                    problems.append(f"{name}: {key} has shape {list(t.shape)}, expected "
                                    f"{[g['count'], *g['latent_shape']]}")
                if not bool(torch.isfinite(t).all()):
                    problems.append(f"{name}: {key} holds non-finite values")
    except Exception as e:  # noqa: BLE001 - a file safetensors cannot parse is a bad shard
        problems.append(f"{name}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    counts = sum(g["count"] for g in sidecar.get("groups", {}).values())
    if counts != sidecar.get("count") or len(sidecar.get("items", [])) != counts:
        problems.append(f"{name}: sidecar counts disagree ({counts} in groups, {len(sidecar.get('items', []))} "
                        f"items, count {sidecar.get('count')})")
    return problems


def remove_leftovers(out_dir: str | os.PathLike, n_shards: int | None = None) -> list[Path]:
    """Delete temporary files an interrupted run left (``.shard-*.tmp``, ``.*.json.*.tmp*``) and, given
    `n_shards`, the shard files numbered ``n_shards`` and above (from a run over a longer source list). Call only
    while no process of the job is writing. Returns what was removed."""
    removed = []
    for p in Path(out_dir).iterdir():
        m = _SHARD_RE.fullmatch(p.name)
        stale = m is not None and n_shards is not None and int(m[1]) >= n_shards
        if stale or (p.name.startswith(".") and ".tmp" in p.name and p.is_file()):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_index(out_dir: str | os.PathLike, header: dict, sidecars: list[dict]) -> dict:
    """Write ``index.json`` (the job's `header` plus counts and the shard list) and ``failed.txt`` (one line per
    unreadable image: path, a tab, the reason), both atomically. Returns the index."""
    out = Path(out_dir)
    groups: dict[str, int] = {}
    for s in sidecars:
        for g, info in s["groups"].items():
            groups[g] = groups.get(g, 0) + info["count"]
    failed = [f for s in sidecars for f in s["failed"]]
    index = dict(header, format=FORMAT, version=VERSION,
                 counts={"items": sum(s["count"] + s["failed_count"] for s in sidecars),
                         "images": sum(s["count"] for s in sidecars), "failed": len(failed),
                         "shards": len(sidecars), "bytes": sum(s["bytes"] for s in sidecars),
                         "sidecar_bytes": sum(sidecar_path(out, s["shard"]).stat().st_size for s in sidecars)},
                 groups=dict(sorted(groups.items())),
                 shards=[{"shard": s["shard"], "file": s["file"], "sidecar": sidecar_path(out, s["shard"]).name,
                          "count": s["count"], "failed": s["failed_count"], "bytes": s["bytes"], "sha256": s["sha256"],
                          "groups": {g: info["count"] for g, info in s["groups"].items()}} for s in sidecars])
    text = "".join(f"{f['path']}\t{f['reason']}\n" for f in sorted(failed, key=lambda f: f["index"]))
    atomic_write(out / FAILED_FILE, lambda tmp: tmp.write_text(text))
    write_json(out / INDEX_FILE, index)
    return index

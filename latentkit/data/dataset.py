"""Reading an encoded dataset back: :class:`LatentDataset` (a torch Dataset over the shards) and
:class:`BucketBatchSampler` (batches of one output size, for datasets encoded with ``--buckets``/``short-side``).

Shards are opened with ``safetensors.safe_open``, which memory-maps the file: an item reads only its own rows.
Open files are kept per process (so DataLoader workers each open their own), at most ``max_open`` at a time.
"""

from __future__ import annotations

import os
import random
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import LatentkitError
from . import shards as S


class LatentDataset(torch.utils.data.Dataset):
    """The images of an ``encode-dataset`` output folder, in source order (failed images left out).

    ``ds[i]`` is a dict: ``latents`` (C x h x w; unscaled unless ``scaled``), ``std`` (same shape, when the
    dataset was encoded ``--with-std`` and ``sample`` is off), ``index`` (the image's number in the source list)
    and ``path`` (its source file). ``ds.items[i]`` has the rest of its record: ``size`` (source width, height in
    pixels), ``crop`` (the box of the source that was encoded: left, top, right, bottom, pixels), ``group``
    (``"WxH"``, the size it was encoded at), ``shard`` and ``row``.

    ``sample``: return a fresh draw ``mean + std * noise`` from the posterior each time (needs ``--with-std``;
    the noise comes from torch's global generator, which DataLoader seeds per worker). ``scaled``: return
    ``(latents - shift_factor) * scaling_factor``, what a diffusion model trains on (the factors are in
    ``ds.scaling_factor`` / ``ds.shift_factor``, from the model's config). ``dtype``: of the returned tensors
    (None: as stored). Raises :class:`LatentkitError` when the folder is not a finished dataset or a shard has
    changed since its ``index.json`` was written.
    """

    def __init__(self, root: str | os.PathLike, *, sample: bool = False, scaled: bool = False,
                 dtype: torch.dtype | None = torch.float32, max_open: int = 64):
        self.root = Path(root)
        index = S.read_json(self.root / S.INDEX_FILE)
        if not isinstance(index, dict) or index.get("format") != S.FORMAT:
            raise LatentkitError(f"{self.root} is not a finished encode-dataset folder (no valid {S.INDEX_FILE})")
        self.index: dict[str, Any] = index
        self.has_std: bool = bool(index.get("with_std"))
        if sample and not self.has_std:
            raise LatentkitError(f"{self.root} holds no posterior std (encode it with --with-std to sample)")
        self.sample, self.scaled, self.dtype, self.max_open = sample, scaled, dtype, max_open
        self.scaling_factor: float = float(index.get("scaling_factor") or 1.0)
        self.shift_factor: float = float(index.get("shift_factor") or 0.0)
        self.items: list[dict] = []
        for entry in index["shards"]:
            sidecar = S.read_json(self.root / entry["sidecar"])
            if not isinstance(sidecar, dict) or sidecar.get("sha256") != entry["sha256"]:
                raise LatentkitError(f"{entry['sidecar']} in {self.root} is missing or changed since {S.INDEX_FILE} "
                                     "was written; rerun encode-dataset with the same arguments")
            self.items += [dict(item, shard=entry["file"]) for item in sidecar["items"]]
        self._open: OrderedDict[str, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        f = self._file(item["shard"])
        row = item["row"]
        z = f.get_slice(f"latents.{item['group']}")[row:row + 1][0]
        out: dict[str, Any] = {"index": item["index"], "path": item["path"]}
        std = f.get_slice(f"std.{item['group']}")[row:row + 1][0] if self.has_std else None
        if self.sample:
            z = z.float() + std.float() * torch.randn(z.shape)
            std = None
        if self.scaled:
            z = (z.float() - self.shift_factor) * self.scaling_factor
        out["latents"] = z if self.dtype is None else z.to(self.dtype)
        if std is not None:
            out["std"] = (std.float() * self.scaling_factor if self.scaled else std)
            out["std"] = out["std"] if self.dtype is None else out["std"].to(self.dtype)
        return out

    def groups(self) -> dict[str, list[int]]:
        """Dataset indices by output size (``"WxH"``), in order."""
        found: dict[str, list[int]] = {}
        for i, item in enumerate(self.items):
            found.setdefault(item["group"], []).append(i)
        return found

    def batch_sampler(self, batch_size: int, shuffle: bool = True, seed: int = 0,
                      drop_last: bool = False) -> BucketBatchSampler:
        """Batches whose latents all have one shape (pass as ``DataLoader(ds, batch_sampler=...)``)."""
        return BucketBatchSampler(self.groups(), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)

    def _file(self, name: str):
        from safetensors import safe_open

        f = self._open.get(name)
        if f is None:
            f = safe_open(str(self.root / name), framework="pt")
            self._open[name] = f
            if len(self._open) > self.max_open:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(name)
        return f

    def __getstate__(self) -> dict:  # open files stay behind when a DataLoader sends the dataset to its workers
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of at most `batch_size` indices from one group at a time. With `shuffle`, each epoch shuffles the
    indices within each group and the order of the batches, seeded by ``seed + epoch`` (``set_epoch``; an epoch
    also advances by itself after each full pass)."""

    def __init__(self, groups: dict[str, list[int]], batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.groups, self.batch_size, self.shuffle = groups, batch_size, shuffle
        self.seed, self.drop_last, self.epoch = seed, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        batches = []
        for _, indices in sorted(self.groups.items()):
            order = list(indices)
            if self.shuffle:
                rng.shuffle(order)
            for k in range(0, len(order), self.batch_size):
                batch = order[k:k + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        b = self.batch_size
        return sum(len(i) // b if self.drop_last else -(-len(i) // b) for i in self.groups.values())

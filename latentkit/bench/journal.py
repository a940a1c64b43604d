"""A crash-safe record of the points a rate-distortion sweep has finished, so that a killed run resumes.

``OUT/points.partial.jsonl``: the first line is the run's key (data folder, model id, metrics), then one JSON
object a finished point, each written whole, flushed and fsynced before the next point starts. A rerun of
``bench rd`` with the same ``--out`` and the same key takes those points instead of recomputing them (a line cut
short by a kill is dropped); a different key starts afresh. The file is removed once the sweep's results are
written, so a finished run leaves only its results.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..io import atomic_write

FILE = "points.partial.jsonl"


class PointJournal:
    """Finished points of one sweep, by (image, codec, quality)."""

    def __init__(self, out_dir: str | os.PathLike, key: dict[str, Any]):
        """Open the journal in `out_dir` (an existing folder), taking the points of an earlier run with `key`."""
        self.path = Path(out_dir) / FILE
        self.key = key
        self.done: dict[tuple[str, str, int], dict[str, Any]] = {}
        if self.path.exists():
            lines = self.path.read_text(errors="replace").splitlines()
            if lines and _loads(lines[0]) == {"key": key}:
                for line in lines[1:]:
                    row = _loads(line)
                    if not isinstance(row, dict):
                        break  # the line a kill cut short, and nothing after it
                    self.done[(row["image"], row["codec"], int(row["quality"]))] = row
        # start the file again from what is whole (drops a torn last line or another run's points), atomically
        text = "".join(json.dumps(r) + "\n" for r in [{"key": key}, *self.done.values()])
        atomic_write(self.path, lambda tmp: tmp.write_text(text))
        self._f = open(self.path, "a")

    def get(self, image: str, codec: str, quality: int) -> dict[str, Any] | None:
        """The finished point, or None."""
        return self.done.get((image, codec, int(quality)))

    def add(self, row: dict[str, Any]) -> None:
        """Record a finished point durably (written, flushed, fsynced)."""
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done[(row["image"], row["codec"], int(row["quality"]))] = row

    def finish(self) -> None:
        """The sweep's results are written: the journal goes."""
        self._f.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        self._f.close()


def _loads(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None

"""Where weight files are found: an explicit path, then the shipped `weights/` (the repository's, or the copy
inside an installed wheel), then standard caches.

Nothing here downloads. A file that is nowhere raises :class:`LatentkitError` naming the file, every place
that was searched and how to get it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import LatentkitError



def _shipped_weights() -> Path:
    """The shipped weights folder: the repository's ``weights/`` in a clone or editable install, else the copy
    a wheel carries inside the package (``latentkit/_weights``, see pyproject.toml)."""
    here = Path(__file__).resolve().parent
    repo = here.parent / "weights"
    return repo if (repo / "default").is_dir() else here / "_weights"


REPO_WEIGHTS = _shipped_weights()


def cache_dirs() -> list[Path]:
    """Standard cache folders searched after the repository's `weights/`, in order."""
    dirs: list[Path] = []
    if os.environ.get("LATENTKIT_WEIGHTS"):
        dirs.append(Path(os.environ["LATENTKIT_WEIGHTS"]))
    xdg = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    dirs.append(xdg / "latentkit")
    torch_home = Path(os.environ.get("TORCH_HOME", xdg / "torch"))
    dirs.append(torch_home / "hub" / "checkpoints")
    return dirs


def search_path(subdir: str = "") -> list[Path]:
    """Folders searched for a weight file of `subdir` (e.g. ``"lpips"``): repo weights first, then caches."""
    return [REPO_WEIGHTS / subdir] + [d / subdir for d in cache_dirs()] + cache_dirs()


def resolve(name: str, subdir: str = "", explicit: str | os.PathLike | None = None, how_to_get: str = "") -> Path:
    """Find weight file `name`.

    Args:
        name: file name, e.g. ``"lin_squeeze_v0.1.pth"``.
        subdir: folder below `weights/` (and below each cache) where it lives, e.g. ``"lpips"``.
        explicit: a path given by the user; if set it must exist and nothing else is searched.
        how_to_get: one sentence appended to the error when the file is missing.
    """
    if explicit is not None:
        p = Path(explicit).expanduser()
        if p.is_file():
            return p
        raise LatentkitError(f"weight file {p} does not exist. {how_to_get}".strip())
    searched = []
    for d in search_path(subdir):
        p = d / name
        if p in searched:
            continue
        searched.append(p)
        if p.is_file():
            return p
    where = ", ".join(str(p.parent) for p in searched)
    raise LatentkitError(f"weight file {name} not found (looked in {where}). {how_to_get}".strip())

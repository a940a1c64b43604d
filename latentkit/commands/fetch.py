"""``latentkit fetch lpips-alex|lpips-vgg``: download torchvision's AlexNet / VGG16 checkpoint for LPIPS.

The only code in latentkit that downloads anything, and only when this command is run. The file goes to
``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``), where LPIPS looks for it, and is accepted only if
its sha256 starts with the hex prefix in its name (torchvision's convention, e.g. ``alexnet-owt-7be5be79.pth``).
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

from ..errors import LatentkitError
from . import _args

#: what can be fetched: target name -> LPIPS net (the shipped squeeze needs nothing)
TARGETS = {f"lpips-{net}": net for net in _args.LPIPS_NETS if net != "squeeze"}
_HASH_PREFIX = re.compile(r"-([a-f0-9]{6,64})\.")


def hash_prefix(name: str) -> str:
    """The sha256 hex prefix a torchvision checkpoint name carries (``vgg16-397923af.pth`` -> ``397923af``)."""
    m = _HASH_PREFIX.search(name)
    if not m:
        raise LatentkitError(f"{name} carries no sha256 prefix (expected a name like vgg16-397923af.pth)")
    return m.group(1)


def check_hash(path: str | Path, name: str | None = None) -> None:
    """Raise :class:`LatentkitError` unless the sha256 of `path` starts with the prefix in `name` (default: its
    own file name)."""
    path = Path(path)
    expected = hash_prefix(name or path.name)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if not h.hexdigest().startswith(expected):
        raise LatentkitError(f"{path} is corrupt or not the expected file: its sha256 is {h.hexdigest()[:16]}..., "
                             f"expected a prefix of {expected}")


def fetch(target: str, dest_dir: str | Path | None = None) -> Path:
    """Download `target` (a key of ``TARGETS``) into `dest_dir` (default ``torch.hub.get_dir()/checkpoints``),
    check its hash and move it into place atomically. An existing file with the right hash is kept as it is."""
    import torch.hub

    from ..io import atomic_write
    from ..metrics.lpips import BACKBONE_FILES, BACKBONE_URLS

    net = TARGETS[target]
    folder = Path(dest_dir) if dest_dir else Path(torch.hub.get_dir()) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / BACKBONE_FILES[net]
    if out.is_file():
        check_hash(out)
        return out

    def download(tmp: Path) -> None:
        try:
            torch.hub.download_url_to_file(BACKBONE_URLS[net], str(tmp), progress=True)
        except Exception as e:  # no network, HTTP error, disk full...
            raise LatentkitError(f"cannot download {BACKBONE_URLS[net]}: {e}") from None
        check_hash(tmp, out.name)

    return atomic_write(out, download)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fetch", help="download optional weights (LPIPS AlexNet/VGG backbones)",
        description="Download torchvision's ImageNet AlexNet or VGG16 checkpoint, needed by LPIPS-alex / "
                    "LPIPS-vgg (LPIPS-squeeze ships with latentkit and needs nothing). The file is saved in "
                    "$TORCH_HOME/hub/checkpoints and checked against the sha256 prefix in its name. Nothing "
                    "else in latentkit downloads.")
    p.add_argument("target", choices=sorted(TARGETS), help="what to download")
    p.add_argument("--dir", type=Path, default=None,
                   help="save into this folder instead (then pass the file's path to LPIPS explicitly, or put "
                        "the folder in $LATENTKIT_WEIGHTS)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = fetch(args.target, args.dir)
    print(f"{args.target}: {path} (sha256 checked)")
    return 0

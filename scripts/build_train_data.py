"""Build an extra training folder from freely licensed images that installed packages ship.

    apt-get install -y --no-install-recommends plasma-workspace-wallpapers mate-backgrounds \\
        lomiri-wallpapers lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 ukui-wallpapers gnome-backgrounds \\
        sway-backgrounds xfdesktop4-data lxde-common desktop-base mypaint-data-extras
    pip install scikit-image matplotlib
    python scripts/build_train_data.py --out runs/train_extra --base ../shared/data/train

Nothing is downloaded or installed here: the images are read from the files of the packages in
:data:`SOURCES` (Debian packages through dpkg's file list ``/var/lib/dpkg/info/PKG.list``, PyPI packages
through ``importlib.metadata``). A source whose package is missing is reported with the line that installs
it, and the others go on. ``docs/training-data.md`` is the manifest: licences, counts, kinds.

For every file a source selects:

- vector files (SVG) and suffixes Pillow does not read as photos are skipped;
- images whose short side is under ``--min-side`` (256) px are skipped;
- images with real transparency (over 1% of pixels not opaque) are skipped, grey and palette images become RGB;
- of the several resolutions of one wallpaper (a KDE ``contents/images`` folder, ``NAME_3840x2160.jpg``) only
  the largest is kept;
- images larger than ``--max-side`` (2048) px on the long side are downscaled (Lanczos), so that training crops
  see content at a useful scale; an image written unchanged keeps its original bytes, any other is written as
  PNG;
- an image whose 64x64 RGB thumbnail equals, or is within a mean absolute difference of 2 (of 255) of, that of
  any image under an ``--exclude`` folder (default: ``../shared/data/kodak`` and ``../shared/data/val``) is left
  out, and so is a second copy of an image already kept.

Output names are ``SOURCE__NAME.ext`` (``--base`` files: ``train__SUBDIR__NAME.ext``, hard-linked or copied),
written atomically (latentkit.io.atomic_write: temporary file, then rename); a rerun skips names that already
exist (``--force`` rewrites them), so it never duplicates. ``OUT/SOURCES.tsv`` lists every kept file with its
package, version, licence, kind and original path (the attribution record for CC-BY / CC-BY-SA images).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from latentkit.io import atomic_write

RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"})
KINDS = ("photo", "render", "text-graphics")
THUMB = 64  # side of the thumbnail that identifies an image
NEAR_DUP_MAD = 2.0  # mean absolute difference (0..255) of two thumbnails below which they are the same image
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Source:
    """One package's images: which files (fnmatch globs on absolute paths), under which licence, of which kind.

    `kinds` overrides `kind` for the files matching a glob (first match wins). `group_by_dir` keeps only the
    largest image of each folder (the resolutions of one KDE wallpaper); `strip` is removed from the path
    (relative to `root`) to name the output file."""

    name: str  # output prefix
    manager: str  # "deb" or "pypi"
    package: str
    licence: str
    kind: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    kinds: tuple[tuple[str, str], ...] = ()
    root: str = "/"
    group_by_dir: bool = False
    strip: tuple[str, ...] = ()
    note: str = ""

    def kind_of(self, path: str) -> str:
        for pattern, kind in self.kinds:
            if fnmatch.fnmatch(path, pattern):
                return kind
        return self.kind

    def install_line(self) -> str:
        if self.manager == "deb":
            return f"apt-get install -y --no-install-recommends {self.package}"
        return f"pip install {self.package}"


def _photos(*names: str, where: str = "*/") -> tuple[tuple[str, str], ...]:
    return tuple((f"{where}{n}*", "photo") for n in names)


# The one list of sources. Licences are the package's own words: /usr/share/doc/PKG/copyright for Debian
# packages (per file where it says), the package metadata and the image's docstring for PyPI packages.
SOURCES: tuple[Source, ...] = (
    Source(
        "plasma", "deb", "plasma-workspace-wallpapers",
        "GPL-2+ (debian/copyright); per wallpaper metadata: LGPL-3 (photos, older renders) or CC-BY-SA-4.0",
        "render", ("/usr/share/wallpapers/*/contents/images*/*",),
        kinds=_photos("BytheWater", "ColdRipple", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
                      "OneStandsOut", "Path", "summer_1am", where="/usr/share/wallpapers/"),
        root="/usr/share/wallpapers", group_by_dir=True, strip=("/contents/images",),
    ),
    Source(
        "mate", "deb", "mate-backgrounds", "GPL-2+ (desktop/Ubuntu-Mate-*-no-logo.png: CC-BY-SA-4.0)", "render",
        ("/usr/share/backgrounds/mate/*/*",),
        exclude=("*/Arc-Colors-Transparent-Wallpaper.png",),
        kinds=(("*/mate/nature/*", "photo"), ("*/GreenTraditional.jpg", "text-graphics")),
        root="/usr/share/backgrounds/mate", note="nature/ are photos; Elephants: largest of 3 sizes kept",
    ),
    Source(
        "lomiri", "deb", "lomiri-wallpapers", "CC-BY-SA-3.0", "render", ("/usr/share/backgrounds/*",),
        root="/usr/share/backgrounds",
    ),
    Source(
        "lomiri-16.04", "deb", "lomiri-wallpapers-16.04",
        "per file: CC-BY-4.0, CC-BY-SA-4.0 or CC0-1.0", "photo", ("/usr/share/backgrounds/*",),
        kinds=(("*/umang_by_*", "render"),), root="/usr/share/backgrounds",
    ),
    Source(
        "lomiri-20.04", "deb", "lomiri-wallpapers-20.04", "CC-BY-SA-3.0", "render",
        ("/usr/share/backgrounds/*",), kinds=(("*/Kleiber_by_*", "photo"),), root="/usr/share/backgrounds",
    ),
    Source(
        "ukui", "deb", "ukui-wallpapers", "CC-BY-SA-3.0", "render", ("/usr/share/backgrounds/*",),
        kinds=(("*/focal-ubuntukylin.png", "text-graphics"),), root="/usr/share/backgrounds",
    ),
    Source(
        "gnome", "deb", "gnome-backgrounds",
        "CC-BY-SA-3.0 (debian/copyright: adwaita* and the other images by Jakub Steiner et al.)", "render",
        ("/usr/share/backgrounds/gnome/*",), exclude=("*/vnc-*",), kinds=(("*/symbolic-*", "text-graphics"),),
        root="/usr/share/backgrounds/gnome", note="light and dark variants are both kept",
    ),
    Source(
        "sway", "deb", "sway-backgrounds", "Expat (MIT)", "text-graphics",
        ("/usr/share/backgrounds/sway/Sway_Wallpaper_Blue_2048x1536.png",), root="/usr/share/backgrounds/sway",
        note="one design in 8 sizes: only the 2048x1536 landscape one",
    ),
    Source(
        "xfce", "deb", "xfdesktop4-data", "GPL-2+", "render", ("/usr/share/backgrounds/xfce/*",),
        root="/usr/share/backgrounds/xfce",
    ),
    Source(
        "lxde", "deb", "lxde-common", "GPL-2+", "text-graphics", ("/usr/share/lxde/wallpapers/*",),
        root="/usr/share/lxde/wallpapers",
    ),
    Source(
        "debian", "deb", "desktop-base", "GPL-2+ (spacefun-theme: GPL-2)", "render",
        ("/usr/share/desktop-base/*-theme/grub/grub-16x9.png",), root="/usr/share/desktop-base",
        strip=("-theme/grub/grub-16x9",), note="GRUB backgrounds (the wallpapers themselves are SVG)",
    ),
    Source(
        "mypaint", "deb", "mypaint-data-extras", "CC0-1.0", "photo", ("/usr/share/mypaint/backgrounds/*/*",),
        root="/usr/share/mypaint/backgrounds", note="paper and canvas texture scans",
    ),
    Source(
        "skimage", "pypi", "scikit-image",
        "package BSD-3-Clause; images CC0 or public domain (each one's docstring in skimage.data)", "photo",
        tuple(f"*/skimage/data/{n}" for n in (
            "astronaut.png", "chelsea.png", "coffee.png", "camera.png", "rocket.jpg", "hubble_deep_field.jpg",
            "retina.jpg", "brick.png", "grass.png", "gravel.png", "cell.png", "coins.png", "ihc.png")),
        note="grey images (camera, brick, grass, gravel, cell, coins) become RGB",
    ),
    Source(
        "matplotlib", "pypi", "matplotlib",
        "public domain (US Navy photograph of Grace Hopper); package: Matplotlib licence (PSF-style)", "photo",
        ("*/mpl-data/sample_data/grace_hopper.jpg",),
    ),
)


@dataclass
class Tally:
    """What happened to one source's files."""

    version: str = ""
    kept: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    missing: bool = False


def package_files(src: Source) -> tuple[str, list[str]] | None:
    """(version, absolute file paths) of an installed package, or None when it is not installed."""
    if src.manager == "deb":
        info = Path("/var/lib/dpkg/info")
        lists = [info / f"{src.package}.list", *sorted(info.glob(f"{src.package}:*.list"))]
        lst = next((p for p in lists if p.is_file()), None)
        if lst is None:
            return None
        try:
            version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", src.package], capture_output=True,
                                     text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            version = "?"
        return version, lst.read_text().splitlines()
    try:
        dist = importlib.metadata.distribution(src.package)
    except importlib.metadata.PackageNotFoundError:
        return None
    return dist.version, [str(Path(str(dist.locate_file(f))).resolve()) for f in (dist.files or [])]


def select(src: Source, files: list[str]) -> list[tuple[str, str]]:
    """(path, output stem) of the source's raster files, only the largest of one wallpaper's several sizes
    (the files of one folder with `group_by_dir`, else names that differ only by a ``_WxH`` token)."""
    chosen: dict[str, tuple[str, str]] = {}  # real path -> (path, stem)
    for path in sorted(files, key=lambda f: (os.path.islink(f), f)):  # a file before a symlink to it
        p = Path(path)
        if (not any(fnmatch.fnmatch(path, g) for g in src.include) or any(fnmatch.fnmatch(path, g) for g in src.exclude)
                or p.suffix.lower() not in RASTER_SUFFIXES or not p.is_file()):
            continue
        rel = str(p.relative_to(src.root)) if p.is_relative_to(src.root) and src.root != "/" else p.name
        rel = rel.rsplit(".", 1)[0]
        if src.group_by_dir:
            rel = str(Path(rel).parent)
        for s in src.strip:
            rel = rel.replace(s, "")
        rel = re.sub(r"[_-]\d{3,5}x\d{3,5}", "", rel.replace("_dark", "-dark"))
        stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in rel.replace("/", "-"))
        chosen.setdefault(str(p.resolve()), (path, stem))  # a symlink to a file already chosen adds nothing
    groups: dict[str, list[str]] = defaultdict(list)
    for path, stem in chosen.values():
        groups[stem].append(path)
    return sorted((max(paths, key=_area) if len(paths) > 1 else paths[0], stem) for stem, paths in groups.items())


def _area(path: str) -> int:
    try:
        with Image.open(path) as im:
            return im.size[0] * im.size[1]
    except OSError:
        return -1


def thumbnail(im: Image.Image) -> np.ndarray:
    """The 64x64 RGB thumbnail (box filter, aspect ignored) that identifies an image."""
    return np.asarray(im.convert("RGB").resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.int16)


class Fingerprints:
    """Thumbnails of images, to find an image that is (nearly) the same as one already seen."""

    def __init__(self) -> None:
        self.hashes: dict[str, str] = {}
        self.thumbs: list[np.ndarray] = []
        self.names: list[str] = []

    def add(self, thumb: np.ndarray, name: str) -> None:
        self.hashes[hashlib.sha256(thumb.tobytes()).hexdigest()] = name
        self.thumbs.append(thumb)
        self.names.append(name)

    def match(self, thumb: np.ndarray) -> str | None:
        """The name of a known image with the same or nearly the same thumbnail, else None."""
        hit = self.hashes.get(hashlib.sha256(thumb.tobytes()).hexdigest())
        if hit is not None or not self.thumbs:
            return hit
        mad = np.abs(np.stack(self.thumbs) - thumb[None]).mean(axis=(1, 2, 3))
        i = int(mad.argmin())
        return self.names[i] if mad[i] < NEAR_DUP_MAD else None


def load_excluded(folders: list[Path]) -> Fingerprints:
    """Fingerprints of every image under the --exclude folders."""
    fp = Fingerprints()
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.suffix.lower() in RASTER_SUFFIXES and p.is_file():
                with Image.open(p) as im:
                    fp.add(thumbnail(im), str(p))
    return fp


def prepare(path: str, args: argparse.Namespace) -> tuple[Image.Image | None, str]:
    """(the image to write, '') where it must be converted or resized, (None, '') where the original file can
    be copied as it is, or (None, why it is skipped)."""
    with Image.open(path) as im:
        w, h = im.size
        if min(w, h) < args.min_side:
            return None, f"short side under {args.min_side} px"
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            alpha = np.asarray(im.convert("RGBA"))[..., 3]
            if (alpha < 255).mean() > 0.01:
                return None, "transparent"
        if im.mode == "RGB" and max(w, h) <= args.max_side and im.format in ("JPEG", "PNG"):
            return None, ""
        rgb = im.convert("RGB")
    if max(w, h) > args.max_side:
        s = args.max_side / max(w, h)
        rgb = rgb.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
    return rgb, ""


def main(argv: list[str] | None = None) -> int:
    default_ex = [p for p in (ROOT.parent / "shared/data/kodak", ROOT.parent / "shared/data/val") if p.is_dir()]
    ap = argparse.ArgumentParser(
        description=__doc__,
        epilog="Example: python scripts/build_train_data.py --out runs/train_extra --base ../shared/data/train. "
        "Then train with --data runs/train_extra. Licences and counts: docs/training-data.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="folder to write the images into (created)")
    ap.add_argument("--base", type=Path, help="also hard-link (or copy) the images of this folder into --out, "
                    "as train__SUBDIR__NAME, e.g. ../shared/data/train")
    ap.add_argument("--exclude", type=Path, action="append", default=None,
                    help="leave out any image that matches one under this folder (repeatable); default: "
                    + (", ".join(str(p) for p in default_ex) or "none found"))
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help="comma-separated kinds to keep (default: all of " + ", ".join(KINDS) + ")")
    ap.add_argument("--sources", default="", help="comma-separated source names to use (default: all; see --list)")
    ap.add_argument("--min-side", type=int, default=256,
                    help="skip images whose short side is under this (default 256)")
    ap.add_argument("--max-side", type=int, default=2048,
                    help="downscale images whose long side is over this (default 2048)")
    ap.add_argument("--force", action="store_true", help="rewrite files that already exist")
    ap.add_argument("--list", action="store_true", help="print the sources (package, licence, kind) and exit")
    args = ap.parse_args(argv)

    if args.list:
        for s in SOURCES:
            print(f"{s.name:13s} {s.manager:4s} {s.package:28s} {s.kind:13s} {s.licence}")
        return 0
    if args.out is None:
        ap.error("--out is required")
    kinds = {k.strip() for k in args.kinds.split(",") if k.strip()}
    if not kinds <= set(KINDS):
        ap.error(f"--kinds: unknown {sorted(kinds - set(KINDS))}")
    wanted = {s.strip() for s in args.sources.split(",") if s.strip()}
    sources = [s for s in SOURCES if not wanted or s.name in wanted]
    excludes = args.exclude if args.exclude is not None else default_ex
    args.out.mkdir(parents=True, exist_ok=True)

    excluded = load_excluded(excludes)
    print(f"exclusion set: {len(excluded.names)} images from {', '.join(map(str, excludes)) or 'nothing'}")
    seen = Fingerprints()  # what is kept already, to drop a second copy of one image
    tallies: dict[str, Tally] = {}
    rows: list[list[str]] = []
    jobs: list[tuple[Source, str, str]] = []
    for src in sources:
        tally = tallies[src.name] = Tally()
        found = package_files(src)
        if found is None:
            tally.missing = True
            print(f"[{src.name}] {src.package} is not installed: {src.install_line()}", file=sys.stderr)
            continue
        tally.version, files = found
        picked = select(src, files)
        if not picked:
            tally.missing = True
            print(f"[{src.name}] {src.package} {tally.version} has none of its images (reinstall it: "
                  f"{src.install_line()})", file=sys.stderr)
        jobs += [(src, path, stem) for path, stem in picked]

    for src, path, stem in tqdm(jobs, desc="packages", unit="img"):
        tally, kind = tallies[src.name], src.kind_of(path)
        if kind not in kinds:
            tally.skipped[f"kind {kind} not asked for"] += 1
            continue
        try:
            im, why = prepare(path, args)
        except OSError as e:
            tally.skipped[f"unreadable ({e.__class__.__name__})"] += 1
            continue
        if why:
            tally.skipped[why] += 1
            continue
        with Image.open(path) as orig:
            thumb = thumbnail(im if im is not None else orig)
        if (hit := excluded.match(thumb)) is not None:
            tally.skipped["same as an --exclude image"] += 1
            tqdm.write(f"[{src.name}] {path} matches {hit}: left out")
            continue
        if (hit := seen.match(thumb)) is not None:
            tally.skipped[f"duplicate of {hit}"] += 1
            continue
        suffix = ".png" if im is not None else Path(path).suffix.lower()
        out = args.out / f"{src.name}__{stem}{suffix}"
        seen.add(thumb, out.name)
        if args.force or not out.exists():
            if im is not None:
                atomic_write(out, lambda tmp: im.save(tmp, format="PNG", optimize=False))
            else:
                atomic_write(out, lambda tmp: shutil.copyfile(path, tmp))
        tally.kept[kind] += 1
        rows.append([out.name, src.name, src.manager, src.package, tally.version, src.licence, kind, path])

    if args.base is not None:
        tally = tallies["train"] = Tally(version=str(args.base))
        base_files = sorted(p for p in args.base.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
        for p in tqdm(base_files, desc=f"base {args.base}", unit="img"):
            with Image.open(p) as im:
                thumb = thumbnail(im)
            if (hit := excluded.match(thumb)) is not None:
                tally.skipped["same as an --exclude image"] += 1
                tqdm.write(f"[train] {p} matches {hit}: left out")
                continue
            out = args.out / ("train__" + "__".join(p.relative_to(args.base).parts))
            if args.force or not out.exists():
                def link(tmp: Path, p: Path = p) -> None:
                    tmp.unlink()
                    try:
                        os.link(p, tmp)
                    except OSError:
                        shutil.copyfile(p, tmp)
                atomic_write(out, link)
            tally.kept["photo"] += 1
            rows.append([out.name, "train", "folder", str(args.base), "", "see ../shared/data/README.md", "photo",
                         str(p)])

    header = ["file", "source", "manager", "package", "version", "licence", "kind", "original"]
    atomic_write(args.out / "SOURCES.tsv",
                 lambda tmp: tmp.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n"))

    print(f"\n{'source':13s} {'package':28s} {'version':22s} {'kept':>5s}  kinds / skipped")
    total: dict[str, int] = defaultdict(int)
    missing: dict[str, list[str]] = defaultdict(list)
    for name, t in tallies.items():
        src = next((s for s in SOURCES if s.name == name), None)
        pkg = src.package if src else str(args.base)
        if t.missing and src is not None:
            missing[src.manager].append(src.package)
        kinds_s = ", ".join(f"{k} {n}" for k, n in sorted(t.kept.items())) or "-"
        skip_s = "; ".join(f"{why}: {n}" for why, n in sorted(t.skipped.items()))
        print(f"{name:13s} {pkg:28s} {('MISSING' if t.missing else t.version):22s} {sum(t.kept.values()):5d}  "
              f"{kinds_s}" + (f" | skipped {skip_s}" if skip_s else ""))
        for k, n in t.kept.items():
            total[k] += n
    print(f"{'total':13s} {'':28s} {'':22s} {sum(total.values()):5d}  "
          + ", ".join(f"{k} {n}" for k, n in sorted(total.items())))
    print(f"written to {args.out} (file list with licences: {args.out / 'SOURCES.tsv'})")
    if missing:
        print("\nmissing sources; install them with:", file=sys.stderr)
        if missing["deb"]:
            print("  apt-get install -y --no-install-recommends " + " ".join(missing["deb"]), file=sys.stderr)
        if missing["pypi"]:
            print("  pip install " + " ".join(missing["pypi"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rate-distortion sweeps: every codec encodes every image at a sweep of qualities; the real file sizes give
bpp, the decoded 8-bit RGB gives PSNR, MS-SSIM and LPIPS. Results: per-image points, per-codec mean curves,
BD-rates against JPEG and against the latent codec, and plots.

Files written into the output folder (all atomically):
  ``points.csv``   one row per (image, codec, quality): bytes, bpp, each metric;
  ``curves.json``  per codec and quality, the mean over images of bpp and each metric, plus run metadata;
  ``bdrate.json``  ``{anchor: {codec: {metric: percent}}}`` (negative: fewer bits than the anchor);
  ``bdrate.md``    the same as markdown tables;
  ``at_rates.json`` / ``at_rates.md``  every metric at 0.05, 0.1 and 0.2 bpp (per image in log bpp, then the mean;
                   with latent and latent-refine both in the run, also each refined point against the plain sweep
                   at the same bpp);
  ``rd_<metric>.png``  bpp vs metric, one line per codec.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm import tqdm

from .. import io as lkio
from ..errors import LatentkitError
from ..metrics.psnr import to_8bit_levels
from ..metrics.compare import TRAINED_ON, format_value
from ..metrics.ssim import MS_SSIM_MIN_SIDE
from .bdrate import bd_rate
from .classic import CLASSIC
from .journal import PointJournal
from .sweeps import (CODECS, DEFAULT_CODECS, LATENT, LATENT_CODECS, LATENT_QUALITIES, LATENT_REFINE,
                     LATENT_REFINE_QUALITIES, PCA, PCA_QUALITIES, REFINE_STEPS)

ANCHORS = ("jpeg", LATENT)

#: roundtrip(image, quality) -> (file bytes, decoded 3 x H x W in [0, 1])
Roundtrip = Callable[[lkio.Image, int], tuple[bytes, torch.Tensor]]


@dataclass
class RDResult:
    """What a sweep produced: per-image rows, mean curves, BD-rates and the files written."""

    points: list[dict[str, Any]]
    curves: dict[str, dict[str, list[float]]]
    bdrates: dict[str, dict[str, dict[str, float]]]
    metrics: list[str]
    at_rates: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def higher_is_better(metric: str) -> bool:
    """PSNR, MS-SSIM and SSIMULACRA2 grow with quality; LPIPS and Butteraugli distances shrink."""
    from ..metrics.compare import HIGHER_IS_BETTER

    return HIGHER_IS_BETTER[metric]


def classic_roundtrip(name: str) -> Roundtrip:
    codec = CLASSIC[name]

    def roundtrip(image: lkio.Image, quality: int) -> tuple[bytes, torch.Tensor]:
        data = codec.encode(image.rgb, quality)
        return data, codec.decode(data)

    return roundtrip


class LatentRoundtrip:
    """The `.latent` codec as a :data:`Roundtrip`: one :class:`~latentkit.codec.api.LatentEncoder` per image
    serves all its qualities (the encoder pass and the decoder gains are not recomputed); the bytes are those of
    ``compress`` (with ``refine_steps``: of ``compress(..., refine_steps=)``, i.e. ``encode --refine``)."""

    def __init__(self, vae, refine_steps: int = 0):
        self.vae, self.refine_steps, self._image, self._encoder = vae, refine_steps, None, None

    def __call__(self, image: lkio.Image, quality: int) -> tuple[bytes, torch.Tensor]:
        from ..codec import LatentEncoder, decompress

        if self._image is not image:
            self._image, self._encoder = image, LatentEncoder(image, self.vae, refine_steps=self.refine_steps)
        data = self._encoder.pack(quality)
        return data, decompress(data, self.vae).rgb


def _latent_model(model: Any = None, device: str | None = None):
    """`model` as a loaded VAE: an ``AutoencoderKL`` as it is, a path or shipped name loaded, None: the codec's
    model, ``weights/codec``."""
    from ..codec.api import CODEC_MODEL
    from ..model import load_vae

    if isinstance(model, torch.nn.Module):
        return model
    return load_vae(model or CODEC_MODEL, device=device, standalone=True)


def latent_roundtrip(model: Any = None, device: str | None = None, refine_steps: int = 0) -> Roundtrip:
    """The `.latent` codec with `model` (see :func:`_latent_model`), its latents refined by `refine_steps` gradient
    steps (0: none)."""
    return LatentRoundtrip(_latent_model(model, device), refine_steps)


def pca_roundtrip() -> Roundtrip:
    """The linear baseline: the shipped PCA basis's top 4 coefficients, coded as latents (:mod:`.pca_codec`)."""
    from .pca_codec import PCARoundtrip

    return PCARoundtrip()


def latent_model_id(roundtrip: Roundtrip) -> str:
    """The model id (hex) of a latent-codec roundtrip's VAE, with its refinement steps if any: what its points
    depend on."""
    from ..model import model_id

    steps = roundtrip.refine_steps
    return model_id(roundtrip.vae).hex() + (f"+refine{steps}" if steps else "")


def make_roundtrips(codecs: Sequence[str], model: Any = None, device: str | None = None) -> dict[str, Roundtrip]:
    """A :data:`Roundtrip` per codec name; the latent codecs (plain and refined) share one `model` (a VAE, a path,
    or None: the codec's)."""
    if set(LATENT_CODECS) & set(codecs):
        model = _latent_model(model, device)  # loaded once for both
    return {c: (latent_roundtrip(model, device) if c == LATENT else
                latent_roundtrip(model, device, REFINE_STEPS) if c == LATENT_REFINE else
                pca_roundtrip() if c == PCA else classic_roundtrip(c)) for c in codecs}


def lpips_nets(requested: Sequence[str] | None) -> list[str]:
    """The LPIPS networks to use: `requested` (their weights must resolve), or by default squeeze plus
    alex/vgg when their weights resolve locally (nothing is downloaded)."""
    from .. import weights
    from ..metrics.lpips import BACKBONE_FILES, NETS

    def check(net: str) -> str:
        """`net` if its weight files resolve; raises LatentkitError naming the missing file otherwise."""
        if net not in NETS:
            raise LatentkitError(f"unknown LPIPS net '{net}': use one of {', '.join(NETS)}")
        for name in (BACKBONE_FILES[net], f"lin_{net}_v0.1.pth"):
            weights.resolve(name, "lpips", how_to_get=f"`latentkit fetch lpips-{net}` downloads it")
        return net

    if requested is not None:
        return [check(net) for net in requested]
    nets = [check("squeeze")]
    for net in NETS[1:]:
        try:
            nets.append(check(net))
        except LatentkitError:
            pass  # optional: alex/vgg only when their backbone weights are already on disk
    return nets


def sweep(images: Sequence[Path], roundtrips: dict[str, Roundtrip], qualities: dict[str, Sequence[int]],
          metrics: Sequence[str], progress: bool = True, journal: PointJournal | None = None) -> list[dict[str, Any]]:
    """Encode and decode every image with every codec at each of its qualities; one row per point.

    bpp = whole encoded file bytes x 8 / (width x height of the original). `metrics` (names of
    :func:`latentkit.metrics.compare.compare`) are measured on the decoded image rounded to 8-bit RGB.
    ``journal``: points it holds are taken from it, each new one is recorded in it (:mod:`.journal`).
    """
    from ..metrics.compare import compare

    plan = [(path.name, codec, q) for path in images for codec in roundtrips for q in qualities[codec]]
    done = {k: row for k in plan if journal is not None and (row := journal.get(*k)) is not None}
    rows = []
    with tqdm(total=len(plan), initial=len(done), desc="rd sweep", unit="enc", disable=not progress) as bar:
        if done:
            bar.write(f"resuming: {len(done)} of {len(plan)} points from the interrupted run in {journal.path.parent}")
        for path in images:
            if all((path.name, c, q) in done for c in roundtrips for q in qualities[c]):
                rows += [done[(path.name, c, q)] for c in roundtrips for q in qualities[c]]
                continue  # nothing left to compute: the image is not even read
            image = lkio.read_image(path)
            ref = to_8bit_levels(image.rgb)
            if "ms_ssim" in metrics and min(image.height, image.width) < MS_SSIM_MIN_SIDE:
                raise LatentkitError(f"{path} is {image.width}x{image.height}: MS-SSIM needs a shorter side of "
                                     f"at least {MS_SSIM_MIN_SIDE} px")
            for codec, roundtrip in roundtrips.items():
                for q in qualities[codec]:
                    if (path.name, codec, q) in done:
                        rows.append(done[(path.name, codec, q)])
                        continue
                    bar.set_postfix_str(f"{path.name} {codec} q{q}", refresh=False)
                    data, dec = roundtrip(image, q)
                    if dec.shape != ref.shape:
                        raise RuntimeError(f"{codec} decoded {tuple(dec.shape)} for a {tuple(ref.shape)} image")
                    row = {"image": path.name, "codec": codec, "quality": q, "width": image.width,
                           "height": image.height, "bytes": len(data), "bpp": bpp(len(data), image.width, image.height)}
                    row.update(compare(ref, dec, metrics)[0])
                    rows.append(row)
                    if journal is not None:
                        journal.add(row)
                    bar.update()
    return rows


def bpp(n_bytes: int, width: int, height: int) -> float:
    """Bits per pixel of a whole file of `n_bytes` for an original image of width x height."""
    return n_bytes * 8 / (width * height)


def mean_curves(rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """Per codec, per quality (ascending): the mean over images of bpp and each metric."""
    curves: dict[str, dict[str, list[float]]] = {}
    for codec in dict.fromkeys(r["codec"] for r in rows):
        mine = [r for r in rows if r["codec"] == codec]
        qs = sorted({r["quality"] for r in mine})
        c: dict[str, list[float]] = {"quality": qs}
        for key in ("bpp", *metrics):
            c[key] = [sum(r[key] for r in mine if r["quality"] == q) / sum(r["quality"] == q for r in mine)
                      for q in qs]
        curves[codec] = c
    return curves


#: rates (bpp) at which `bench rd` reports every metric, interpolated per image
FIXED_RATES = (0.05, 0.1, 0.2)


def _value_at(points: Sequence[dict[str, Any]], metric: str, rate: float) -> float | None:
    """One image's `metric` at `rate` bpp, linearly interpolated in log(bpp) between its two nearest points of
    one codec; None when the sweep does not reach the rate (no extrapolation)."""
    pts = sorted((math.log(r["bpp"]), r[metric]) for r in points)
    x = math.log(rate)
    pair = next(((a, b) for a, b in zip(pts, pts[1:]) if a[0] <= x <= b[0]), None)
    if pair is None:
        return None
    (x0, y0), (x1, y1) = pair
    return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def _by_image(rows: Sequence[dict[str, Any]], codec: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["codec"] == codec:
            out.setdefault(r["image"], []).append(r)
    return out


def at_rates(rows: Sequence[dict[str, Any]], metrics: Sequence[str],
             rates: Sequence[float] = FIXED_RATES) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per codec, rate and metric: the mean over images of the metric at that bpp, each image's value linearly
    interpolated in log(bpp) between its two nearest points; None when some image's sweep does not reach the
    rate (no extrapolation). Keys: ``out[codec][f"{rate:g}"][metric]``."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for codec in dict.fromkeys(r["codec"] for r in rows):
        per_image = _by_image(rows, codec)
        table: dict[str, dict[str, float | None]] = {}
        for rate in rates:
            cell: dict[str, float | None] = {}
            for m in metrics:
                vals = [_value_at(pts, m, rate) for pts in per_image.values()]
                cell[m] = None if any(v is None for v in vals) else sum(vals) / len(vals)
            table[f"{rate:g}"] = cell
        out[codec] = table
    return out


def paired_at_rates(rows: Sequence[dict[str, Any]], metrics: Sequence[str], anchor: str = LATENT,
                    rates: Sequence[float] = FIXED_RATES) -> dict[str, dict[str, dict[str, Any]]]:
    """`anchor` against each other codec at each rate, over the images *both* sweeps reach at that rate (so
    the two means are over the same images): ``out[codec][f"{rate:g}"] = {"images": n, metric: [anchor's
    mean, codec's mean] or None when no image qualifies}``."""
    mine = _by_image(rows, anchor)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for codec in dict.fromkeys(r["codec"] for r in rows):
        if codec == anchor:
            continue
        theirs = _by_image(rows, codec)
        table: dict[str, dict[str, Any]] = {}
        for rate in rates:
            both = [im for im in mine if im in theirs and _value_at(mine[im], "bpp", rate) is not None
                    and _value_at(theirs[im], "bpp", rate) is not None]
            cell: dict[str, Any] = {"images": len(both)}
            for m in metrics:
                cell[m] = [sum(_value_at(t[im], m, rate) for im in both) / len(both) for t in (mine, theirs)] \
                    if both else None
            table[f"{rate:g}"] = cell
        out[codec] = table
    return out


def at_own_points(rows: Sequence[dict[str, Any]], codec: str, anchor: str,
                  metrics: Sequence[str]) -> list[dict[str, Any]]:
    """`codec` at each of its qualities against `anchor` at the same bpp, image by image: each image's `codec`
    point beside that image's `anchor` sweep interpolated in log bpp at the point's bpp (images whose anchor sweep
    does not reach it are left out). One dict per quality: ``quality``, ``images`` (those compared), ``bpp`` (their
    mean), ``codec`` and ``anchor`` (``{metric: mean}``), ``better_all`` (images where `codec` is better on every
    metric) and ``median_gain`` (``{metric: median over images of codec - anchor}``)."""
    mine, theirs = _by_image(rows, codec), _by_image(rows, anchor)

    def better(a: float, b: float, metric: str) -> bool:
        return a > b if higher_is_better(metric) else a < b

    out = []
    for q in sorted({r["quality"] for r in rows if r["codec"] == codec}):
        pairs = []  # (codec's point, anchor's values at its bpp)
        for im, pts in mine.items():
            point = next((r for r in pts if r["quality"] == q), None)
            other = {m: _value_at(theirs[im], m, point["bpp"]) for m in metrics} \
                if point is not None and im in theirs else None
            if other and all(v is not None for v in other.values()):
                pairs.append((point, other))
        if pairs:
            n = len(pairs)
            out.append({"quality": q, "images": n, "bpp": sum(p["bpp"] for p, _ in pairs) / n,
                        "codec": {m: sum(p[m] for p, _ in pairs) / n for m in metrics},
                        "anchor": {m: sum(o[m] for _, o in pairs) / n for m in metrics},
                        "better_all": sum(all(better(p[m], o[m], m) for m in metrics) for p, o in pairs),
                        "median_gain": {m: statistics.median(p[m] - o[m] for p, o in pairs) for m in metrics}})
    return out


def own_points_markdown(table: list[dict[str, Any]], codec: str, anchor: str, metrics: Sequence[str]) -> str:
    """:func:`at_own_points` as a markdown table: per quality the mean bpp, `codec` / `anchor` at the same bpp
    (each cell ``metric / metric / ...`` in the order of `metrics`), the median difference and the images
    better on all of them."""
    def cells(v: dict[str, float], sign: str = "") -> str:
        return " / ".join(format_value(v[m], m, sign) for m in metrics)

    names = " / ".join(m + ("*" if m in TRAINED_ON else "") for m in metrics)
    parts = [f"**{codec} against {anchor} at the same bpp**, image by image ({anchor}'s sweep interpolated in log "
             f"bpp at each {codec} point; means over the images compared; {names})\n",
             f"| quality | images | mean bpp | {codec} | {anchor} at the same bpp | median difference "
             "| better on all |",
             "|---:|---:|---:|---|---|---|---:|"]
    parts += [f"| {t['quality']} | {t['images']} | {t['bpp']:.3f} | {cells(t['codec'])} | {cells(t['anchor'])} | "
              f"{cells(t['median_gain'], '+')} | {t['better_all']} |" for t in table]
    return "\n".join(parts) + "\n"


def _rate_tables(rates: Sequence[str], title: Callable[[str], str], first: Sequence[str], metrics: Sequence[str],
                 rows: Callable[[str], list[list[str]]]) -> str:
    """One markdown table per rate: `title(rate)`, columns `first` then the metrics (the training loss marked *),
    body `rows(rate)`."""
    parts = []
    for rate in rates:
        parts.append(title(rate) + " (interpolated per image in log bpp; * the default model's training loss)\n")
        parts.append("| " + " | ".join([*first, *(m + ("*" if m in TRAINED_ON else "") for m in metrics)]) + " |")
        parts.append("|---|" + "---:|" * (len(first) - 1 + len(metrics)))
        parts += ["| " + " | ".join(r) + " |" for r in rows(rate)]
        parts.append("")
    return "\n".join(parts)


def paired_markdown(table: dict[str, dict[str, dict[str, Any]]], metrics: Sequence[str],
                    anchor: str = LATENT) -> str:
    """One markdown table per rate of :func:`paired_at_rates`: cells are ``anchor / codec``."""
    def cell(c: dict[str, Any], m: str) -> str:
        return "n/a" if c[m] is None else f"{format_value(c[m][0], m)} / {format_value(c[m][1], m)}"

    return _rate_tables(list(next(iter(table.values()), {})),
                        lambda rate: f"**{anchor} / other codec at {rate} bpp**, mean over the images both reach",
                        ["codec", "images"], metrics,
                        lambda rate: [[codec, str(t[rate]["images"]), *(cell(t[rate], m) for m in metrics)]
                                      for codec, t in table.items()])


def rates_markdown(table: dict[str, dict[str, dict[str, float | None]]], metrics: Sequence[str]) -> str:
    """One markdown table per rate: rows are codecs, columns metrics (n/a: a sweep does not reach the rate)."""
    return _rate_tables(list(next(iter(table.values()), {})), lambda rate: f"Mean over images at **{rate} bpp**",
                        ["codec"], metrics,
                        lambda rate: [[codec, *(format_value(t[rate][m], m) for m in metrics)]
                                      for codec, t in table.items()])


def bd_rates(curves: dict[str, dict[str, list[float]]], metrics: Sequence[str]) -> dict[str, dict[str, dict]]:
    """BD-rate (percent) of every codec against each anchor present (JPEG, latent), for each metric."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for anchor in ANCHORS:
        if anchor not in curves:
            continue
        a = curves[anchor]
        out[anchor] = {
            codec: {m: bd_rate(a["bpp"], a[m], c["bpp"], c[m], higher_is_better(m)) for m in metrics}
            for codec, c in curves.items() if codec != anchor
        }
    return out


def bd_markdown(bdrates: dict[str, dict[str, dict[str, float]]], metrics: Sequence[str]) -> str:
    """Markdown tables, one per anchor: rows are codecs, columns metrics, cells BD-rate in percent."""
    parts = []
    for anchor, table in bdrates.items():
        parts.append(f"BD-rate against **{anchor}** (negative: fewer bits for the same quality; * the default "
                     "model's training loss)\n")
        parts.append("| codec | " + " | ".join(m + ("*" if m in TRAINED_ON else "") for m in metrics) + " |")
        parts.append("|---|" + "---:|" * len(metrics))
        for codec, row in table.items():
            cells = ["n/a" if math.isnan(row[m]) else f"{row[m]:+.1f}%" for m in metrics]
            parts.append(f"| {codec} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)


def check_codecs(codecs: Sequence[str]) -> None:
    """Raise :class:`LatentkitError` unless `codecs` is a non-empty list of known codec names."""
    unknown = [c for c in codecs if c not in CODECS]
    if unknown or not codecs:
        raise LatentkitError(f"unknown codec(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(CODECS)}")


def parse_qualities(specs: Sequence[str] | None, codecs: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Sweeps per codec: the defaults, overridden by specs ``"codec=q1,q2,..."`` or ``"q1,q2,..."`` (all)."""
    check_codecs(codecs)
    defaults = {LATENT: LATENT_QUALITIES, LATENT_REFINE: LATENT_REFINE_QUALITIES, PCA: PCA_QUALITIES}
    out = {c: defaults[c] if c in defaults else CLASSIC[c].qualities for c in codecs}
    for spec in specs or ():
        name, _, values = spec.rpartition("=")
        targets = [name] if name else list(codecs)
        if name and name not in out:
            raise LatentkitError(f"--qualities {spec}: codec '{name}' is not in --codecs")
        try:
            qs = tuple(sorted({int(v) for v in values.split(",") if v.strip()}))
        except ValueError:
            raise LatentkitError(f"--qualities {spec}: expected integers like 10,50,90") from None
        if not qs:
            raise LatentkitError(f"--qualities {spec}: no qualities given")
        for t in targets:
            out[t] = qs
    return out


_INT_FIELDS = {"quality", "width", "height", "bytes"}


def load_points(path: str | os.PathLike, images: Sequence[Path] | None, exclude: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of an earlier run's ``points.csv`` for `images` (matched by file name; None: every image in it),
    except codecs in `exclude`.

    Raises :class:`LatentkitError` if the file is missing or unreadable, or if a codec in it lacks an image."""
    path = Path(path)
    if path.is_dir():
        path = path / "points.csv"
    try:
        with open(path, newline="") as f:
            raw = list(csv.DictReader(f))
        rows = [{k: (int(v) if k in _INT_FIELDS else v if k in ("image", "codec") else float(v))
                 for k, v in r.items()} for r in raw]
    except FileNotFoundError:
        raise LatentkitError(f"--reuse: {path} not found (a points.csv written by an earlier bench rd)") from None
    except (OSError, ValueError, TypeError, csv.Error) as e:
        raise LatentkitError(f"--reuse: cannot read {path}: {e}") from None
    names = {r["image"] for r in rows} if images is None else {p.name for p in images}
    rows = [r for r in rows if r["codec"] not in exclude and r["image"] in names]
    for codec in dict.fromkeys(r["codec"] for r in rows):
        missing = names - {r["image"] for r in rows if r["codec"] == codec}
        if missing:
            raise LatentkitError(f"--reuse: {path} has no {codec} points for {', '.join(sorted(missing)[:3])}"
                                 f"{' ...' if len(missing) > 3 else ''}")
    if not rows:
        raise LatentkitError(f"--reuse: {path} has no points for these images besides the codecs being run")
    return rows


def run_rd(data: str | os.PathLike, out_dir: str | os.PathLike, codecs: Sequence[str] = DEFAULT_CODECS,
           model: Any = None, qualities: dict[str, Sequence[int]] | None = None,
           nets: Sequence[str] | None = None, limit: int | None = None, device: str | None = None,
           plots: bool = True, progress: bool = True, reuse: str | os.PathLike | None = None,
           butteraugli: bool = False, html: str | os.PathLike | None = None, html_images: int | None = None,
           html_bpp: float = 0.1) -> RDResult:
    """The whole benchmark: sweep, write points/curves/BD-rates/plots into `out_dir` (created if needed).

    ``butteraugli``: also measure Butteraugli (needs libjxl's ``butteraugli_main``; about a second a point).
    ``reuse``: an earlier run's folder or ``points.csv``; its points of the codecs not in `codecs` join the
    results (same images, same metrics), e.g. to re-run only the latent codec after retraining.
    ``html``: also write the visual report there (:mod:`latentkit.bench.report`): the first `html_images`
    images (default all) side by side at `html_bpp`."""
    check_codecs(codecs)
    if html is not None:  # fail before the sweep, not after it
        if Path(html).parent.resolve() != Path(out_dir).resolve():  # --out itself is created below
            lkio.check_output(html)
        if not html_bpp > 0:
            raise LatentkitError(f"the report's target rate must be a positive bpp, got {html_bpp}")
    images = lkio.list_images(data, limit=limit)
    reused = load_points(reuse, images, codecs) if reuse is not None else []
    qualities = dict(qualities) if qualities else parse_qualities(None, codecs)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LatentkitError(f"--out {out} exists and is not a folder")
    nets = lpips_nets(nets)
    roundtrips = make_roundtrips(codecs, model, device)
    metrics = ["psnr", "ms_ssim", "ssimulacra2", *(["butteraugli_3norm", "butteraugli_max"] if butteraugli else []),
               *(f"lpips_{n}" for n in nets)]
    lacking = [m for m in metrics if reused and m not in reused[0]]
    if lacking:  # before the sweep, not after it
        raise LatentkitError(f"--reuse: {reuse} lacks the metric(s) {', '.join(lacking)} of this run")
    out.mkdir(parents=True, exist_ok=True)
    journal = PointJournal(out, {"data": str(Path(data).resolve()), "metrics": metrics, "models": {
        c: (latent_model_id(r) if c in LATENT_CODECS else c) for c, r in roundtrips.items()}})
    try:
        rows = sweep(images, roundtrips, qualities, metrics, progress, journal)
    finally:
        journal.close()
    if reused:
        rows += [{k: r[k] for k in rows[0]} for r in reused]
    curves = mean_curves(rows, metrics)
    bdr = bd_rates(curves, metrics)
    independent = [m for m in metrics if m not in TRAINED_ON]
    result = RDResult(rows, curves, bdr, metrics, at_rates(rows, metrics))
    meta = {"data": str(Path(data)), "images": len(images), "threads": torch.get_num_threads(),
            "model": _model_name(model) if set(LATENT_CODECS) & set(codecs) else None, "metrics": metrics, "qualities": {c: list(q) for c, q in qualities.items()},
            "reused": {"from": str(reuse), "codecs": list(dict.fromkeys(r["codec"] for r in reused))} if reused else None}
    result.files += [
        _write_csv(out / "points.csv", rows, images),
        _write_text(out / "curves.json", json.dumps({"meta": meta, "curves": curves}, indent=1), images),
        _write_text(out / "bdrate.json", json.dumps(json_bdrates(bdr), indent=1), images),
        _write_text(out / "bdrate.md", bd_markdown(bdr, metrics), images),
        _write_text(out / "at_rates.json", json.dumps(result.at_rates, indent=1), images),
        _write_text(out / "at_rates.md", rates_markdown(result.at_rates, metrics) + "\n" +
                    (paired_markdown(paired_at_rates(rows, metrics), metrics) if LATENT in curves else "") +
                    (own_points_markdown(at_own_points(rows, LATENT_REFINE, LATENT, independent), LATENT_REFINE,
                                         LATENT, independent) if {LATENT, LATENT_REFINE} <= set(curves) else ""),
                    images),
    ]
    journal.finish()  # the points are in points.csv now
    if plots:
        from .plots import plot_rd

        result.files += [plot_rd(curves, m, out / f"rd_{m}.png") for m in metrics]
    if html is not None:
        from .report import write_report

        others = [c for c in dict.fromkeys(r["codec"] for r in rows) if c not in roundtrips]
        shown = roundtrips | make_roundtrips(others, model, device)
        result.files.append(write_report(html, images[:html_images], rows, shown, metrics, bdr, result.at_rates,
                                         plots=[f for f in result.files if f.suffix == ".png"],
                                         target_bpp=html_bpp, meta=meta, progress=progress))
    return result


def _model_name(model: Any) -> str:
    if model is None:
        return "codec"
    return str(model) if isinstance(model, (str, os.PathLike)) else "in-memory " + type(model).__name__


def json_bdrates(bdr: dict) -> dict:
    """BD-rates rounded to 0.001%, NaN (curves do not overlap) as null, so the result is strict JSON."""
    return {a: {c: {m: (None if math.isnan(v) else round(v, 3)) for m, v in row.items()} for c, row in t.items()}
            for a, t in bdr.items()}


def _write_text(path: Path, text: str, inputs: Sequence[Path]) -> Path:
    return lkio.atomic_write(path, lambda tmp: tmp.write_text(text + "\n"), tuple(inputs))


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], inputs: Sequence[Path]) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    return lkio.atomic_write(path, write, tuple(inputs))

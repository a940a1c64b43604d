"""The visual comparison of a rate-distortion run: one self-contained HTML page, and side-by-side crops.

For each image, every codec's point nearest a target rate *at or below* it (so no codec gets more bytes than
the target) is decoded again and shown next to the original: the page puts 1:1 crops of all of them side by
side, the crop picked by clicking the thumbnail, with bpp and every metric under each panel, above the run's
plots and BD-rate / fixed-rate tables. Images are embedded losslessly (WebP lossless, bit-exact 8-bit RGB), so
what the page shows is what each decoder produced; the page needs nothing beside it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import io as lkio
from ..metrics.compare import TRAINED_ON, format_value
from ..metrics.psnr import to_8bit_levels
from .plots import metric_label
from .rd import Roundtrip, bpp

#: crop side of the viewer's panels, pixels at 1:1
CROP = 256


def nearest_at_or_below(rows: Sequence[dict[str, Any]], image: str, codec: str, target_bpp: float) -> dict | None:
    """The point of `codec` on `image` with the largest bpp <= `target_bpp`; if every point is above the
    target, the smallest one (the caller shows its bpp). None when the codec has no point for the image."""
    points = [r for r in rows if r["image"] == image and r["codec"] == codec]
    if not points:
        return None
    below = [r for r in points if r["bpp"] <= target_bpp]
    return max(below, key=lambda r: r["bpp"]) if below else min(points, key=lambda r: r["bpp"])


def decode_at_rate(image: lkio.Image, name: str, rows: Sequence[dict[str, Any]], roundtrips: dict[str, Roundtrip],
                   target_bpp: float, metrics: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Each codec's decoded image at its :func:`nearest_at_or_below` point: ``[{"codec", "row", "rgb"}]``
    (rgb 3 x H x W in [0, 1], 8-bit levels). ``row`` holds the figures of what is shown: the run's row when the
    codec gives the same bytes again; otherwise (the latent codec's bf16 encoder can round differently under
    another thread count or CPU) the bytes and `metrics` measured anew, with ``"run_bytes"`` added."""
    from ..metrics.compare import compare

    ref = to_8bit_levels(image.rgb)
    shown = []
    for codec, roundtrip in roundtrips.items():
        row = nearest_at_or_below(rows, name, codec, target_bpp)
        if row is None:
            continue
        data, rgb = roundtrip(image, int(row["quality"]))
        rgb = to_8bit_levels(rgb)
        if len(data) != int(row["bytes"]):
            row = {**row, "run_bytes": row["bytes"], "bytes": len(data),
                   "bpp": bpp(len(data), image.width, image.height), **compare(ref, rgb, metrics)[0]}
        shown.append({"codec": codec, "row": row, "rgb": rgb})
    return shown


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _webp_data_uri(rgb: torch.Tensor, thumb_width: int | None = None) -> str:
    """An image as an embedded WebP: lossless at full size, or a lossy preview `thumb_width` px wide."""
    im = lkio.to_pil(lkio.Image(rgb))
    buf = io.BytesIO()
    if thumb_width is None:
        im.save(buf, format="WEBP", lossless=True, quality=100, method=4)
    else:
        im = im.resize((thumb_width, max(1, round(im.height * thumb_width / im.width))), resample=3)  # bicubic
        im.save(buf, format="WEBP", quality=85)
    return _data_uri(buf.getvalue(), "image/webp")


def _label(metric: str) -> str:
    name = metric_label(metric).split(" (")[0]
    return name + (" *" if metric in TRAINED_ON else "")


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def bd_tables(bdrates: dict, metrics: Sequence[str]) -> str:
    """The BD-rate tables (percent; negative = fewer bits than the anchor) as HTML."""
    parts = []
    for anchor, table in bdrates.items():
        body = [[codec, *(("n/a" if row.get(m) is None or row[m] != row[m] else f"{row[m]:+.1f}%") for m in metrics)]
                for codec, row in table.items()]
        parts.append(f"<h3>BD-rate against {html.escape(anchor)}</h3>" + _table(["codec", *map(_label, metrics)], body))
    return "".join(parts)


def rate_tables(at_rates: dict, metrics: Sequence[str]) -> str:
    """Every metric at the fixed rates (``at_rates[codec][rate][metric]``, the mean over images, interpolated
    per image in log bpp) as HTML: one table per rate, a row per codec."""
    parts = []
    for rate in next(iter(at_rates.values()), {}):
        body = [[codec, *(format_value(per_rate[rate].get(m), m) for m in metrics)]
                for codec, per_rate in at_rates.items()]
        parts.append(f"<h3>At {html.escape(str(rate))} bpp</h3>" + _table(["codec", *map(_label, metrics)], body))
    return "".join(parts)


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px} h2{font-size:18px;margin-top:32px} h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0 16px} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left} .plots img{width:480px;margin:4px;border:1px solid #ddd}
.image{margin:24px 0;padding:12px;background:#fff;border:1px solid #ddd}
.thumb{position:relative;display:inline-block;cursor:crosshair;vertical-align:top;margin-right:12px}
.thumb img{width:320px;display:block} .thumb .box{position:absolute;border:2px solid #e33;pointer-events:none}
.panels{display:inline-flex;flex-wrap:wrap;gap:10px;vertical-align:top}
.panel{width:256px} .crop{width:256px;height:256px;overflow:hidden;position:relative;border:1px solid #999}
.crop img{position:absolute;left:0;top:0;image-rendering:pixelated} .panel .name{font-weight:600}
.panel .figs{font-size:12px;color:#444} .note{color:#555}
"""

_SCRIPT = """
(function(){
  var errors=[];
  window.addEventListener('error',function(e){errors.push(String(e.message||e));
    document.body.dataset.errors=errors.join(' | ');},true);
  function place(section,fx,fy){
    var w=+section.dataset.width,h=+section.dataset.height,c=%(crop)d;
    var x=Math.max(0,Math.min(w-c,Math.round(fx*w-c/2))),y=Math.max(0,Math.min(h-c,Math.round(fy*h-c/2)));
    section.querySelectorAll('.crop img').forEach(function(im){im.style.left=(-x)+'px';im.style.top=(-y)+'px';});
    var t=section.querySelector('.thumb img'),b=section.querySelector('.thumb .box'),s=t.clientWidth/w;
    b.style.left=(x*s)+'px';b.style.top=(y*s)+'px';b.style.width=(Math.min(c,w)*s)+'px';
    b.style.height=(Math.min(c,h)*s)+'px';
    section.querySelector('.where').textContent='crop at x='+x+', y='+y+' (1:1)';
  }
  document.querySelectorAll('.image').forEach(function(section){
    var t=section.querySelector('.thumb');
    t.addEventListener('click',function(e){var r=t.getBoundingClientRect();
      place(section,(e.clientX-r.left)/r.width,(e.clientY-r.top)/r.height);});
    place(section,+section.dataset.fx,+section.dataset.fy);
  });
  window.addEventListener('load',function(){
    var imgs=document.images,ok=0;
    for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0)ok++;}
    document.body.dataset.imagesTotal=imgs.length;document.body.dataset.imagesLoaded=ok;
    document.body.dataset.ready='1';
  });
})();
"""


def detail_centre(rgb: torch.Tensor) -> tuple[float, float]:
    """Where the viewer's first crop goes, as fractions of width and height: the centre of the most detailed
    256-px block (largest mean gradient), so the first view shows artefacts rather than sky."""
    g = rgb.mean(0)
    grad = (g[1:, :-1] - g[:-1, :-1]).abs() + (g[:-1, 1:] - g[:-1, :-1]).abs()
    k = min(CROP, *grad.shape)
    pooled = torch.nn.functional.avg_pool2d(grad[None, None], k, stride=max(1, k // 4))[0, 0]
    iy, ix = divmod(int(pooled.argmax()), pooled.shape[1])
    s = max(1, k // 4)
    return (ix * s + k / 2) / rgb.shape[2], (iy * s + k / 2) / rgb.shape[1]


def write_report(path: str | os.PathLike, images: Sequence[Path], rows: Sequence[dict[str, Any]],
                 roundtrips: dict[str, Roundtrip], metrics: Sequence[str], bdrates: dict, at_rates: dict,
                 plots: Sequence[Path] = (), target_bpp: float = 0.1, meta: dict | None = None,
                 progress: bool = True) -> Path:
    """Write the HTML report of a run to `path` (atomically) and return it.

    `images`: the images to show in the viewer (their rows must be in `rows`); `roundtrips`: the codecs to
    show, re-run at each one's point nearest `target_bpp` at or below it; `plots`: PNG files to embed.
    """
    from tqdm import tqdm

    sections = []
    for p in tqdm(images, desc="html report", unit="image", disable=not progress):
        image = lkio.read_image(p)
        original = to_8bit_levels(image.rgb)
        shown = decode_at_rate(image, p.name, rows, roundtrips, target_bpp, metrics)
        fx, fy = detail_centre(original)
        panels = [("original", None, original)] + [(s["codec"], s["row"], s["rgb"]) for s in shown]
        cells = []
        for codec, row, rgb in panels:
            uri = _webp_data_uri(rgb)
            if row is None:
                figs = f"{image.width}x{image.height}, lossless"
            else:
                over = " (lowest point is above the target)" if row["bpp"] > target_bpp else ""
                if "run_bytes" in row:
                    over += f" (re-encoded here; {int(row['run_bytes']):,} bytes in the run)"
                figs = (f"q{row['quality']}, {int(row['bytes']):,} bytes, {row['bpp']:.3f} bpp{over}<br>" +
                        "<br>".join(f"{html.escape(_label(m))}: {format_value(row.get(m), m)}" for m in metrics))
            cells.append(f'<div class="panel"><div class="crop"><img alt="{html.escape(codec)}" src="{uri}"></div>'
                         f'<div class="name">{html.escape(codec)}</div><div class="figs">{figs}</div></div>')
        sections.append(
            f'<section class="image" data-width="{image.width}" data-height="{image.height}" data-fx="{fx:.4f}" '
            f'data-fy="{fy:.4f}"><h3>{html.escape(p.name)} <span class="where note"></span></h3>'
            f'<div class="thumb"><img alt="{html.escape(p.name)} thumbnail" src="{_webp_data_uri(original, thumb_width=320)}">'
            f'<div class="box"></div></div><div class="panels">{"".join(cells)}</div></section>')
    meta = dict(meta or {})
    title = "latentkit rate-distortion report"
    plot_imgs = "".join(f'<img alt="{html.escape(Path(p).stem)}" src="{_data_uri(Path(p).read_bytes(), "image/png")}">'
                        for p in plots)
    trained = ", ".join(_label(m) for m in metrics if m in TRAINED_ON)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{_STYLE}</style></head>
<body>
<h1>{title}</h1>
<p class="note">{"<br>".join(f"{html.escape(str(k))}: {html.escape(json.dumps(v, default=str))}"
                              for k, v in meta.items() if v is not None)}</p>
<p class="note">bpp = bytes of the whole file x 8 / pixels. Metrics on the decoded 8-bit RGB.
{f"* {html.escape(trained)}: the default model's training loss, no independent evidence for it." if trained else ""}</p>
<h2>Rate-distortion</h2><div class="plots">{plot_imgs}</div>
<h2>BD-rates</h2>{bd_tables(bdrates, metrics)}
<h2>Metrics at fixed rates</h2>{rate_tables(at_rates, metrics)}
<h2>Side by side at {target_bpp:g} bpp</h2>
<p class="note">Each codec at its point nearest {target_bpp:g} bpp at or below it; crops at 1:1 (pixels not
scaled). Click a thumbnail to move the crop.</p>
{"".join(sections)}
<script>{_SCRIPT % {"crop": CROP}}</script>
</body></html>
"""
    return lkio.atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))


def side_by_side(panels: Sequence[tuple[str, torch.Tensor]], box: tuple[int, int, int, int],
                 scale: int = 2) -> "PIL.Image.Image":  # noqa: F821
    """One PNG-ready picture: the crop `box` (left, top, width, height) of each (label, rgb) panel, scaled by
    `scale` with nearest neighbour (pixels stay visible), labelled underneath; for READMEs and papers."""
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    left, top, w, h = box
    label_h, gap = 24, 6
    font = ImageFont.load_default(size=15)
    sheet = PILImage.new("RGB", (len(panels) * (w * scale + gap) - gap, h * scale + label_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, rgb) in enumerate(panels):
        crop = lkio.to_pil(lkio.Image(rgb[:, top:top + h, left:left + w].contiguous()))
        x = i * (w * scale + gap)
        sheet.paste(crop.resize((w * scale, h * scale), PILImage.NEAREST), (x, 0))
        draw.text((x + 4, h * scale + 4), label, fill="black", font=font)
    return sheet


def report_from_run(run_dir: str | os.PathLike, out: str | os.PathLike, data: str | os.PathLike | None = None,
                    model: Any = None, limit: int | None = None, target_bpp: float = 0.1,
                    progress: bool = True) -> Path:
    """The HTML report of a finished ``bench rd`` run folder (its points.csv, curves.json, bdrate.json,
    at_rates.json and rd_*.png), re-decoding each image at `target_bpp` from `data` (default: the run's data
    folder) with `model` (default: the run's). `limit`: show only the first N images of the run."""
    from ..errors import LatentkitError
    from .rd import load_points, make_roundtrips

    run = Path(run_dir)
    try:
        meta = json.loads((run / "curves.json").read_text())["meta"]
        bdrates = json.loads((run / "bdrate.json").read_text())
        at_rates = json.loads((run / "at_rates.json").read_text())
    except FileNotFoundError as e:
        raise LatentkitError(f"{run} is not a finished `bench rd` run folder: {Path(e.filename).name} is missing") from None
    except (OSError, ValueError, KeyError) as e:
        raise LatentkitError(f"cannot read the run in {run}: {e}") from None
    data = Path(data if data is not None else meta["data"])
    if not data.is_dir():
        raise LatentkitError(f"the run's images are not in {data}; pass --data with the folder it was run on")
    images = lkio.list_images(data)
    rows = load_points(run, images, exclude=())
    names = list(dict.fromkeys(r["image"] for r in rows))[:limit]
    shown = [p for p in images if p.name in names]
    codecs = list(dict.fromkeys(r["codec"] for r in rows))
    model = model if model is not None else meta.get("model")
    roundtrips = make_roundtrips(codecs, model)
    meta = {**meta, "run": str(run)}
    if meta.get("threads"):  # the latent codec's bf16 encoder gives the run's bytes under the run's thread count
        torch.set_num_threads(int(meta["threads"]))
    return write_report(out, shown, rows, roundtrips, meta["metrics"], bdrates, at_rates,
                        plots=sorted(run.glob("rd_*.png")), target_bpp=target_bpp, meta=meta, progress=progress)

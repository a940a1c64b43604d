"""The visual RD report: which point each codec shows, what the page holds, and the page in a real browser."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from latentkit.bench import report
from latentkit.cli import main


def rows_for(image: str, codec: str, bpps: list[float]) -> list[dict]:
    return [{"image": image, "codec": codec, "quality": 10 * (i + 1), "bytes": int(b * 1000), "bpp": b, "psnr": 20 + i}
            for i, b in enumerate(bpps)]


def test_each_codec_shows_its_point_nearest_the_rate_at_or_below_it():
    rows = rows_for("a.png", "x", [0.04, 0.09, 0.12, 0.3]) + rows_for("a.png", "y", [0.15, 0.2])
    assert report.nearest_at_or_below(rows, "a.png", "x", 0.1)["bpp"] == 0.09  # not 0.12, which is nearer
    assert report.nearest_at_or_below(rows, "a.png", "x", 0.12)["bpp"] == 0.12
    assert report.nearest_at_or_below(rows, "a.png", "y", 0.1)["bpp"] == 0.15  # all above: the smallest
    assert report.nearest_at_or_below(rows, "b.png", "x", 0.1) is None


def _noisy_codec(sigma: float, n_bytes: int):
    def roundtrip(image, quality):
        g = torch.Generator().manual_seed(quality)
        return b"x" * n_bytes, (image.rgb + sigma * torch.randn(image.rgb.shape, generator=g)).clamp(0, 1)

    return roundtrip


@pytest.fixture
def page(tmp_path):
    """A report of two 300x200 images and two fake codecs (noise of two strengths), written to tmp_path."""
    images = []
    for i in range(2):
        g = np.random.default_rng(i)
        arr = (np.linspace(0, 255, 300)[None, :, None] * np.ones((200, 1, 3))).astype(np.uint8)
        arr[50:150, 100:200] = g.integers(0, 255, (100, 100, 3), dtype=np.uint8)  # the detailed block
        PILImage.fromarray(arr).save(tmp_path / f"im{i}.png")
        images.append(tmp_path / f"im{i}.png")
    pixels = 300 * 200
    rows = []
    for p in images:
        rows += [{"image": p.name, "codec": "weak", "quality": 50, "bytes": 700, "bpp": 700 * 8 / pixels, "psnr": 30.0},
                 {"image": p.name, "codec": "strong", "quality": 20, "bytes": 600, "bpp": 600 * 8 / pixels, "psnr": 20.0}]
    codecs = {"weak": _noisy_codec(0.01, 700), "strong": _noisy_codec(0.2, 600)}
    plot = tmp_path / "rd_psnr.png"
    PILImage.new("RGB", (40, 30), "white").save(plot)
    bdrates = {"weak": {"strong": {"psnr": 12.5}}}
    at_rates = {"weak": {"0.1": {"psnr": 30.0}}, "strong": {"0.1": {"psnr": None}}}
    out = report.write_report(tmp_path / "report.html", images, rows, codecs, ["psnr"], bdrates, at_rates,
                              plots=[plot], target_bpp=0.1, meta={"model": "test"}, progress=False)
    return out, images


def test_the_page_holds_every_image_losslessly_with_its_figures(page):
    out, images = page
    html = out.read_text()
    uris = re.findall(r'alt="(original|weak|strong)" src="data:image/webp;base64,([^"]+)"', html)
    assert [name for name, _ in uris] == ["original", "weak", "strong"] * 2
    decoded = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(uris[0][1]))).convert("RGB"))
    assert np.array_equal(decoded, np.asarray(PILImage.open(images[0])))  # the original, bit-exact
    assert "700 bytes" in html and "PSNR: 30.00" in html and "+12.5%" in html and "n/a" in html
    # the first crop goes where the detail is (the noise block at x 100..200, y 50..150 of 300 x 200)
    fx, fy = (float(v) for v in re.search(r'data-fx="([\d.]+)" data-fy="([\d.]+)"', html).groups())
    assert 100 <= fx * 300 <= 200 and 50 <= fy * 200 <= 150


def test_figures_are_measured_anew_when_a_codec_gives_other_bytes(page, tmp_path):
    _, images = page
    image = __import__("latentkit.io", fromlist=["read_image"]).read_image(images[0])
    rows = [{"image": images[0].name, "codec": "c", "quality": 5, "bytes": 999, "bpp": 0.05, "psnr": 99.0}]
    shown = report.decode_at_rate(image, images[0].name, rows, {"c": _noisy_codec(0.1, 500)}, 0.1, ["psnr"])
    row = shown[0]["row"]
    assert row["run_bytes"] == 999 and row["bytes"] == 500 and 15 < row["psnr"] < 25


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium (Debian package chromium)")
def test_the_page_loads_in_headless_chromium_without_errors(page, tmp_path):
    out, _ = page
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
    dom = subprocess.run([*flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-ready="1"' in body, body  # the script ran to the end
    assert "data-errors" not in body, body  # no script error
    total = int(re.search(r'data-images-total="(\d+)"', body).group(1))
    assert total == 1 + 2 * 4 and f'data-images-loaded="{total}"' in body  # plot + 2 x (thumb, original, 2 codecs)
    assert "Uncaught" not in dom.stderr
    # the crop was placed: each panel's image is shifted to the detailed block
    assert re.search(r'alt="weak" src="[^"]+" style="left: -\d+px; top: 0px;', dom.stdout)
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, "--hide-scrollbars", "--window-size=1200,1600", f"--screenshot={shot}", out.as_uri()],
                   capture_output=True, timeout=120, cwd=tmp_path)
    pixels = np.asarray(PILImage.open(shot).convert("L"))
    assert pixels.shape == (1600, 1200) and pixels.std() > 10  # something was drawn


def test_report_command_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["bench", "report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "not a finished `bench rd` run folder" in err and "Traceback" not in err
    assert main(["bench", "report", str(tmp_path), "-o", str(tmp_path / "nope" / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()

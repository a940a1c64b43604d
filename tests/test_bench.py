"""latentkit.bench: BD-rate, classic codecs, the rate-distortion sweep and `latentkit bench rd`."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from latentkit.bench.bdrate import bd_rate, pchip
from latentkit.bench.classic import CLASSIC
from latentkit.bench.rd import bpp, parse_qualities
from latentkit.cli import main
from latentkit.errors import LatentkitError

RATES = [0.1, 0.2, 0.4, 0.8, 1.6]
PSNRS = [24.0, 27.5, 30.0, 33.2, 36.0]
LPIPSES = [0.45, 0.33, 0.22, 0.14, 0.08]


def test_bd_rate_of_a_curve_against_itself_is_zero():
    assert bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_of_rates_scaled_by_0_8_is_minus_20_percent():
    scaled = [r * 0.8 for r in RATES]
    assert bd_rate(RATES, PSNRS, scaled, PSNRS) == pytest.approx(-20.0, abs=0.1)
    assert bd_rate(scaled, PSNRS, RATES, PSNRS) == pytest.approx(25.0, abs=0.1)  # and the other way round


def test_bd_rate_handles_lower_is_better_metrics():
    scaled = [r * 0.8 for r in RATES]
    assert bd_rate(RATES, LPIPSES, scaled, LPIPSES, higher_is_better=False) == pytest.approx(-20.0, abs=0.1)
    # same curve shifted to lower LPIPS (better) at every rate: the test codec saves bits
    better = [v * 0.8 for v in LPIPSES]
    assert bd_rate(RATES, LPIPSES, RATES, better, higher_is_better=False) < -5
    assert bd_rate(RATES, [-v for v in LPIPSES], RATES, [-v for v in better]) == pytest.approx(
        bd_rate(RATES, LPIPSES, RATES, better, higher_is_better=False))


def test_bd_rate_over_the_overlap_only_and_nan_without_one():
    # PSNR linear in log-rate (PCHIP reproduces a line exactly); the test curve covers only the middle of the
    # anchor's range and is integrated over that overlap alone
    line = [30 + 3 * math.log2(r) for r in RATES]
    assert bd_rate(RATES, line, [r * 0.8 for r in RATES[1:4]], line[1:4]) == pytest.approx(-20.0, abs=1e-6)
    assert math.isnan(bd_rate(RATES[:2], PSNRS[:2], RATES[3:], PSNRS[3:]))
    with pytest.raises(LatentkitError):
        bd_rate([0.1], [30.0], RATES, PSNRS)


def test_pchip_matches_scipy():
    interpolate = pytest.importorskip("scipy.interpolate")
    x, y = np.array(PSNRS), np.log(RATES)
    xq = np.linspace(x[0], x[-1], 101)
    np.testing.assert_allclose(pchip(x, y, xq), interpolate.PchipInterpolator(x, y)(xq), atol=1e-9)


def _gradient(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image with a little texture, H x W x 3 uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([xx / w, yy / h, 0.5 + 0.3 * np.sin(xx / 7.0 + yy / 11.0)], -1) * 220
    return np.clip(a + rng.normal(0, 4, a.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(CLASSIC))
def test_classic_codec_roundtrip_gives_bytes_and_a_same_size_image(name):
    rgb = torch.from_numpy(_gradient(40, 56).transpose(2, 0, 1).copy()).float() / 255
    codec = CLASSIC[name]
    lo, hi = codec.encode(rgb, codec.qualities[0]), codec.encode(rgb, codec.qualities[-1])
    assert isinstance(lo, bytes) and 0 < len(lo) < len(hi)
    dec = codec.decode(hi)
    assert dec.shape == rgb.shape and dec.dtype == torch.float32
    assert float((dec - rgb).abs().mean()) < 0.05  # a faithful picture, not just the right size


def test_bpp_counts_whole_file_bytes_over_original_pixels():
    assert bpp(1000, 100, 80) == pytest.approx(1.0)
    assert bpp(768 * 512 // 8, 768, 512) == pytest.approx(1.0)


def test_parse_qualities():
    q = parse_qualities(["jpeg=50,10", "webp=5"], ["jpeg", "webp", "avif"])
    assert q["jpeg"] == (10, 50) and q["webp"] == (5,) and q["avif"] == CLASSIC["avif"].qualities
    assert parse_qualities(["20,40"], ["jpeg", "jxl"]) == {"jpeg": (20, 40), "jxl": (20, 40)}
    for bad in (["avif=10"], ["jpeg=a,b"], ["jpeg="]):
        with pytest.raises(LatentkitError):
            parse_qualities(bad, ["jpeg"])
    with pytest.raises(LatentkitError):
        parse_qualities(None, ["gif"])


def test_latent_refine_is_the_refined_encoder_and_runs_only_when_named(micro_vae):
    from latentkit.bench.rd import latent_model_id, make_roundtrips
    from latentkit.bench.sweeps import (CODECS, DEFAULT_CODECS, LATENT, LATENT_REFINE, LATENT_REFINE_QUALITIES,
                                        REFINE_STEPS)
    from latentkit.codec import compress
    from latentkit.io import Image

    assert LATENT_REFINE in CODECS and LATENT_REFINE not in DEFAULT_CODECS  # ~100x slower: opt-in
    assert parse_qualities(None, [LATENT_REFINE]) == {LATENT_REFINE: LATENT_REFINE_QUALITIES}
    image = Image(torch.from_numpy(_gradient(40, 48, seed=3)).permute(2, 0, 1).float() / 255)
    roundtrips = make_roundtrips([LATENT, LATENT_REFINE], micro_vae)
    data, decoded = roundtrips[LATENT_REFINE](image, 60)
    assert data == compress(image, micro_vae, quality=60, refine_steps=REFINE_STEPS)
    assert data != roundtrips[LATENT](image, 60)[0] and decoded.shape == (3, 40, 48)
    # the resume journal keys the refined points apart from the plain ones
    assert latent_model_id(roundtrips[LATENT_REFINE]) == latent_model_id(roundtrips[LATENT]) + f"+refine{REFINE_STEPS}"


def test_cli_rejects_unknown_codec_and_missing_data(tmp_path, capsys):
    assert main(["bench", "rd", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--codecs", "gif"]) == 2
    assert main(["bench", "rd", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                 "--codecs", "jpeg"]) == 2
    err = capsys.readouterr().err
    assert "unknown codec" in err and "does not exist" in err and "Traceback" not in err


@pytest.fixture
def tiny_dataset(tmp_path):
    """Two images just large enough for MS-SSIM's 5 scales (>= 161 px on the short side)."""
    data = tmp_path / "data"
    data.mkdir()
    for i, (h, w) in enumerate([(168, 176), (176, 164)]):
        PILImage.fromarray(_gradient(h, w, seed=i)).save(data / f"img{i}.png")
    return data


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_bench_rd_writes_points_curves_bdrates_and_plots(tiny_dataset, tmp_path, micro_vae, capsys,
                                                         restore_threads):
    from latentkit.model import save_vae

    codecs = ["jpeg", "webp", "avif", "jxl", "latent"]
    model = save_vae(micro_vae, tmp_path / "micro")
    extra = ["--model", str(model), "--qualities", "latent=10,90"]
    out = tmp_path / "results"
    rc = main(["bench", "rd", "--data", str(tiny_dataset), "--out", str(out), "--codecs", ",".join(codecs),
               "--qualities", "jpeg=10,60", "--qualities", "webp=10,60", "--qualities", "avif=20,50",
               "--qualities", "jxl=10,60", "--lpips-nets", "squeeze", "--threads", "1", "--quiet", "--json", *extra])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)

    rows = list(csv.DictReader(open(out / "points.csv")))
    assert len(rows) == 2 * len(codecs) * 2
    for r in rows:
        assert float(r["bpp"]) == pytest.approx(int(r["bytes"]) * 8 / (int(r["width"]) * int(r["height"])))
        assert 0 < float(r["ms_ssim"]) <= 1 and float(r["lpips_squeeze"]) >= 0 and float(r["psnr"]) > 10
        assert float(r["ssimulacra2"]) <= 100
    curves = json.loads((out / "curves.json").read_text())["curves"]
    assert set(curves) == set(codecs)
    for c in curves.values():
        assert len(c["bpp"]) == 2 and c["bpp"][0] < c["bpp"][1]  # higher quality, bigger files

    bdr = json.loads((out / "bdrate.json").read_text())
    assert bdr == printed
    assert set(bdr["jpeg"]) == set(codecs) - {"jpeg"}
    assert set(bdr["jpeg"]["webp"]) == {"psnr", "ms_ssim", "ssimulacra2", "lpips_squeeze"}
    assert set(bdr["latent"]) == {"jpeg", "webp", "avif", "jxl"}
    assert "| webp |" in (out / "bdrate.md").read_text() and "lpips_squeeze*" in (out / "bdrate.md").read_text()
    for m in ("psnr", "ms_ssim", "ssimulacra2", "lpips_squeeze"):
        assert (out / f"rd_{m}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # re-run only the latent codec (other qualities), reusing the classic codecs' points of the first run
    again = tmp_path / "again"
    assert main(["bench", "rd", "--data", str(tiny_dataset), "--out", str(again), "--codecs", "latent",
                 "--reuse", str(out), "--lpips-nets", "squeeze", "--quiet", "--no-plots", "--json", *extra[:2],
                 "--qualities", "latent=20,80"]) == 0
    capsys.readouterr()
    rows2 = list(csv.DictReader(open(again / "points.csv")))
    assert [r for r in rows2 if r["codec"] != "latent"] == [r for r in rows if r["codec"] != "latent"]
    assert sorted({r["quality"] for r in rows2 if r["codec"] == "latent"}) == ["20", "80"]
    assert set(json.loads((again / "bdrate.json").read_text())["jpeg"]) == {"webp", "avif", "jxl", "latent"}
    # an earlier run that lacks an image is refused with one line
    (tiny_dataset / "img2.png").write_bytes((tiny_dataset / "img0.png").read_bytes())
    assert main(["bench", "rd", "--data", str(tiny_dataset), "--out", str(again), "--codecs", "latent",
                 "--reuse", str(out / "points.csv"), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert "no jpeg points for img2.png" in err and "Traceback" not in err


def test_metrics_at_fixed_rates_interpolate_per_image_in_log_bpp():
    from latentkit.bench.rd import at_rates, rates_markdown

    rows = [{"codec": "c", "image": im, "bpp": b, "psnr": p} for im, pts in
            (("a", [(0.05, 20.0), (0.2, 30.0)]), ("b", [(0.1, 25.0), (0.4, 29.0)])) for b, p in pts]
    t = at_rates(rows, ["psnr"], rates=(0.1, 0.2, 0.05))
    assert t["c"]["0.1"]["psnr"] == pytest.approx((25.0 + 25.0) / 2)  # a: halfway in log bpp; b: its own point
    assert t["c"]["0.2"]["psnr"] == pytest.approx((30.0 + 27.0) / 2)
    assert t["c"]["0.05"]["psnr"] is None  # b's sweep starts above 0.05 bpp: no extrapolation
    md = rates_markdown(t, ["psnr"])
    assert "0.1 bpp" in md and "| c | 25.00 |" in md and "n/a" in md


def test_refined_points_are_compared_with_the_plain_sweep_at_their_own_bpp():
    from latentkit.bench.rd import at_own_points, own_points_markdown

    def pts(codec, image, points):
        return [{"codec": codec, "image": image, "quality": q, "bpp": b, "psnr": p, "butteraugli_3norm": bu}
                for q, b, p, bu in points]

    rows = (pts("latent", "a", [(1, 0.05, 20.0, 8.0), (2, 0.2, 30.0, 4.0)])
            + pts("latent", "b", [(1, 0.05, 22.0, 8.0), (2, 0.2, 26.0, 5.0)])
            + pts("latent-refine", "a", [(30, 0.1, 26.0, 5.0)])
            + pts("latent-refine", "b", [(30, 0.1, 23.0, 7.0), (40, 0.4, 30.0, 3.0)]))
    metrics = ["psnr", "butteraugli_3norm"]
    t = at_own_points(rows, "latent-refine", "latent", metrics)
    # 0.1 bpp is halfway between 0.05 and 0.2 in log bpp: plain a is 25 dB / 6.0, plain b 24 dB / 6.5; a refined
    # point beyond the plain sweep (b at quality 40, 0.4 bpp) is not compared, so quality 40 has no row
    assert [r["quality"] for r in t] == [30]
    assert t[0]["images"] == 2 and t[0]["bpp"] == pytest.approx(0.1)
    assert t[0]["anchor"] == {"psnr": pytest.approx(24.5), "butteraugli_3norm": pytest.approx(6.25)}
    assert t[0]["codec"] == {"psnr": pytest.approx(24.5), "butteraugli_3norm": pytest.approx(6.0)}
    assert t[0]["better_all"] == 1  # a wins both (Butteraugli: lower is better), b loses both
    assert t[0]["median_gain"] == {"psnr": pytest.approx(0.0), "butteraugli_3norm": pytest.approx(-0.25)}
    md = own_points_markdown(t, "latent-refine", "latent", metrics)
    assert "| 30 | 2 | 0.100 | 24.50 / 6.00 | 24.50 / 6.25 | +0.00 / -0.25 | 1 |" in md


def test_paired_rates_compare_two_codecs_over_the_images_both_reach():
    from latentkit.bench.rd import paired_at_rates, paired_markdown

    def pts(codec, image, points):
        return [{"codec": codec, "image": image, "bpp": b, "psnr": p} for b, p in points]

    rows = (pts("latent", "a", [(0.05, 20.0), (0.2, 30.0)]) + pts("latent", "b", [(0.05, 22.0), (0.2, 26.0)])
            + pts("avif", "a", [(0.1, 31.0), (0.4, 35.0)]) + pts("avif", "b", [(0.15, 30.0), (0.4, 36.0)]))
    t = paired_at_rates(rows, ["psnr"], rates=(0.1, 0.2, 0.05))
    assert t["avif"]["0.1"] == {"images": 1, "psnr": [pytest.approx(25.0), pytest.approx(31.0)]}  # only a reaches
    assert t["avif"]["0.2"]["images"] == 2 and t["avif"]["0.2"]["psnr"][0] == pytest.approx(28.0)
    assert t["avif"]["0.05"] == {"images": 0, "psnr": None}
    assert "| avif | 1 | 25.00 / 31.00 |" in paired_markdown(t, ["psnr"])


def test_an_interrupted_sweep_resumes_from_its_journal(tiny_dataset, tmp_path, monkeypatch, restore_threads):
    """Killed after 3 of 8 points, a rerun computes only the other 5 and ends with the same points.csv as an
    uninterrupted run; a finished run leaves no journal, and a journal of other settings is not taken."""
    from latentkit.bench import journal, rd

    calls = []
    real = rd.classic_roundtrip

    def counting(name):
        inner = real(name)

        def roundtrip(image, quality):
            calls.append(quality)
            if len(calls) == 4 and stop:
                raise KeyboardInterrupt  # as Ctrl-C / a kill between points
            return inner(image, quality)

        return roundtrip

    monkeypatch.setattr(rd, "classic_roundtrip", counting)
    argv = ["bench", "rd", "--data", str(tiny_dataset), "--codecs", "jpeg", "--qualities", "10,30,60,90",
            "--lpips-nets", "squeeze", "--threads", "1", "--quiet", "--no-plots", "--json"]
    stop = True
    assert main([*argv, "--out", str(tmp_path / "run")]) == 130  # "interrupted"
    lines = (tmp_path / "run" / journal.FILE).read_text().splitlines()
    assert len(lines) == 1 + 3
    with open(tmp_path / "run" / journal.FILE, "a") as f:
        f.write('{"image": "img1.png", "codec": "jp')  # a line the kill cut short
    stop, calls[:] = False, []
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert len(calls) == 5 and not (tmp_path / "run" / journal.FILE).exists()
    calls[:] = []
    assert main([*argv, "--out", str(tmp_path / "fresh")]) == 0
    assert len(calls) == 8
    assert (tmp_path / "run" / "points.csv").read_text() == (tmp_path / "fresh" / "points.csv").read_text()
    # a journal written under other settings (here: other metrics) is not taken
    (tmp_path / "other").mkdir()
    journal.PointJournal(tmp_path / "other", {"key": "else"}).add({"image": "img0.png", "codec": "jpeg", "quality": 10})
    calls[:] = []
    assert main([*argv, "--out", str(tmp_path / "other")]) == 0
    assert len(calls) == 8


def test_codec_targets_script_reads_a_run_and_says_which_targets_are_met(tmp_path):
    """scripts/codec_targets.py: the issue's codec targets from a run's points.csv (per image in log bpp; the
    AVIF comparisons over the images both reach), and one line, exit 2, for a run without AVIF."""
    import subprocess
    import sys
    from pathlib import Path

    # latent at 0.05 / 0.2 bpp (0.1 bpp halfway in log bpp), AVIF at 0.08 / 0.32
    fields = ["image", "codec", "quality", "width", "height", "bytes", "bpp", "psnr", "ms_ssim", "ssimulacra2",
              "butteraugli_3norm", "butteraugli_max", "lpips_squeeze"]
    pts = {("latent", "a"): [(1, 0.05, 24, 0.85, -20, 8, 20, 0.14), (2, 0.2, 28, 0.95, 0, 4, 10, 0.10)],
           ("latent", "b"): [(1, 0.05, 25, 0.85, -20, 8, 20, 0.14), (2, 0.2, 27, 0.95, 0, 4, 10, 0.10)],
           ("avif", "a"): [(10, 0.08, 26, 0.80, 0, 5, 12, 0.3), (20, 0.32, 30, 0.90, 40, 3, 8, 0.2)],
           ("avif", "b"): [(10, 0.08, 26, 0.80, 0, 5, 12, 0.3), (20, 0.32, 30, 0.90, 40, 3, 8, 0.2)]}
    lines = [",".join(fields)] + [",".join(map(str, [im + ".png", codec, q, 8, 8, 1, *rest]))
                                  for (codec, im), rows in pts.items() for q, *rest in rows]
    (tmp_path / "points.csv").write_text("\n".join(lines) + "\n")
    script = Path(__file__).resolve().parent.parent / "scripts" / "codec_targets.py"
    p = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = {r["target"].split(" (")[0]: r for r in json.loads(p.stdout.strip().splitlines()[-1])["rows"]}
    assert rows["PSNR at 0.1 bpp"]["value"] == pytest.approx(26.0) and rows["PSNR at 0.1 bpp"]["met"] is True
    assert rows["LPIPS-squeeze at 0.1 bpp"]["value"] == pytest.approx(0.12)
    assert rows["LPIPS-squeeze at 0.1 bpp"]["met"] is False
    assert rows["MS-SSIM BD-rate against AVIF"]["value"] < 0 and rows["MS-SSIM BD-rate against AVIF"]["met"]
    at = math.log(0.1 / 0.08) / math.log(4)  # where 0.1 bpp sits on AVIF's sweep
    s2 = rows["SSIMULACRA2 at 0.1 bpp"]
    assert (s2["value"], s2["avif"], s2["images"], s2["met"]) == (pytest.approx(-10), pytest.approx(40 * at), 2, False)
    b = rows["Butteraugli 3-norm at 0.12 bpp"]
    assert b["value"] == pytest.approx(8 - 4 * math.log(0.12 / 0.05) / math.log(4))
    assert b["avif"] == pytest.approx(5 - 2 * math.log(0.12 / 0.08) / math.log(4)) and b["met"] is False
    assert "| PSNR at 0.1 bpp | >= 26 dB | 2 | 26.00 |  | yes |" in p.stdout
    (tmp_path / "points.csv").write_text("\n".join(ln for ln in lines if ",avif," not in ln) + "\n")
    p = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "has no avif points" in p.stderr and "Traceback" not in p.stderr

"""latentkit.metrics (PSNR, SSIM, MS-SSIM, LPIPS), `latentkit metrics` and `latentkit fetch`'s hash check."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from latentkit.cli import main
from latentkit.errors import LatentkitError
from latentkit.io import read_image
from latentkit.metrics import LPIPS, lpips, ms_ssim, psnr, ssim

from conftest import SHARED, SKIP_NO_SHARED, kodak

GOLDEN = SHARED / "golden" / "lpips"
GOLDEN_FILE = GOLDEN / "lpips_squeeze.json"
CASES = json.loads(GOLDEN_FILE.read_text())["cases"] if GOLDEN_FILE.is_file() else []
NO_GOLDEN = [pytest.param(None, marks=pytest.mark.skip(reason=f"needs {GOLDEN_FILE}: {SKIP_NO_SHARED}"))]


def golden(i: int) -> dict:
    """Golden case `i`; skips the calling test when the golden files are absent."""
    if not CASES:
        pytest.skip(f"needs {GOLDEN_FILE}: {SKIP_NO_SHARED}")
    return CASES[i]


def _pair(case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return read_image(GOLDEN / case["ref"]).batch(), read_image(GOLDEN / case["dist"]).batch()


@pytest.fixture(scope="module")
def squeeze() -> LPIPS:
    return LPIPS("squeeze")


@pytest.mark.parametrize("case", CASES or NO_GOLDEN, ids=[c["ref"] for c in CASES] or None)
def test_lpips_squeeze_matches_golden(squeeze, case):
    x, y = _pair(case)
    with torch.no_grad():
        d = squeeze(x, y)
    assert d.shape == (1,)
    assert abs(d.item() - case["lpips_squeeze_v0.1"]) < 1e-5


def test_lpips_batched_and_identical(squeeze):
    x, y = _pair(golden(0))
    with torch.no_grad():
        d = squeeze(torch.cat([x, x]), torch.cat([y, x]))
    assert d[0].item() == pytest.approx(golden(0)["lpips_squeeze_v0.1"], abs=1e-5)
    assert d[1].item() == pytest.approx(0.0, abs=1e-7)


def test_lpips_rejects_too_small_or_mismatched(squeeze):
    with pytest.raises(LatentkitError, match="at least 17 px"):
        squeeze(torch.rand(1, 3, 16, 64), torch.rand(1, 3, 16, 64))
    with pytest.raises(LatentkitError, match="same size"):
        squeeze(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 40))
    assert squeeze(torch.rand(1, 3, 17, 17), torch.rand(1, 3, 17, 17)).shape == (1,)


def test_lpips_loss_grads_flow_to_inputs_only():
    x, y = _pair(golden(1))
    x = x[..., :64, :64].clone().requires_grad_(True)
    model = LPIPS("squeeze")
    model.train()  # must stay frozen in eval mode
    assert not model.training
    model(x, y[..., :64, :64]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())


def test_lpips_function_uses_no_grad():
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    assert not lpips(x, torch.rand(1, 3, 64, 64)).requires_grad


def _isolate_weight_search(monkeypatch, tmp_path):
    for var in ("TORCH_HOME", "XDG_CACHE_HOME", "LATENTKIT_WEIGHTS"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))


def test_missing_alex_weights_give_clear_error(monkeypatch, tmp_path):
    _isolate_weight_search(monkeypatch, tmp_path)
    with pytest.raises(LatentkitError) as e:
        LPIPS("alex")
    msg = str(e.value)
    assert "alexnet-owt-7be5be79.pth" in msg and "latentkit fetch lpips-alex" in msg
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in msg and "\n" not in msg
    with pytest.raises(LatentkitError, match="nowhere.pth does not exist"):
        LPIPS("vgg", backbone_path=tmp_path / "nowhere.pth")


#: conv layer indices in torchvision's `features` Sequential, with (out, in, k) of each
TV_ALEX = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}
TV_VGG16 = dict(zip([0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
                    [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256), (512, 256),
                     (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]))


def _torchvision_like(layout: dict) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd = {"classifier.1.weight": torch.zeros(2, 2)}  # ignored: only features.* is used
    for i, shape in layout.items():
        o, c, k = shape if len(shape) == 3 else (*shape, 3)
        sd[f"features.{i}.weight"] = torch.randn(o, c, k, k, generator=g) * 0.01
        sd[f"features.{i}.bias"] = torch.randn(o, generator=g) * 0.01
    return sd


def test_alex_loads_torchvision_layout_from_torch_home(monkeypatch, tmp_path):
    _isolate_weight_search(monkeypatch, tmp_path)
    sd = _torchvision_like(TV_ALEX)
    ckpt = tmp_path / "torch_home" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(sd, ckpt / "alexnet-owt-7be5be79.pth")
    model = LPIPS("alex")
    assert torch.equal(model.features[10].weight, sd["features.10.weight"])
    with torch.no_grad():
        d = model(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    assert d.shape == (2,) and torch.isfinite(d).all()


def test_vgg_loads_torchvision_layout_and_rejects_alex(tmp_path):
    vgg, alex = tmp_path / "vgg16-397923af.pth", tmp_path / "alex.pth"
    sd = _torchvision_like(TV_VGG16)
    torch.save(sd, vgg)
    torch.save(_torchvision_like(TV_ALEX), alex)
    assert torch.equal(LPIPS("vgg", backbone_path=vgg).features[28].weight, sd["features.28.weight"])
    with pytest.raises(LatentkitError, match="do not fit torchvision's vgg layout"):
        LPIPS("vgg", backbone_path=alex)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(LatentkitError, match="cannot read LPIPS backbone weights"):
        LPIPS("alex", backbone_path=tmp_path / "junk.pth")


def _np(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).double().numpy()


@pytest.mark.parametrize("case", CASES[:4] or NO_GOLDEN, ids=[c["ref"] for c in CASES[:4]] or None)
def test_ssim_matches_skimage(case):
    from skimage.metrics import structural_similarity

    x, y = _pair(case)
    expected = structural_similarity(_np(x), _np(y), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     channel_axis=-1, data_range=1.0)
    assert abs(ssim(x, y).item() - expected) < 1e-4


def test_ssim_batched_identity_and_small_image_error():
    x, y = _pair(golden(0))
    s = ssim(torch.cat([x, y]), torch.cat([y, y]))
    assert s[0].item() == pytest.approx(ssim(x, y).item(), abs=1e-6) and s[1].item() == pytest.approx(1.0)
    with pytest.raises(LatentkitError, match="at least 11"):
        ssim(torch.rand(1, 3, 10, 40), torch.rand(1, 3, 10, 40))


def _kodak_blur_pair(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image, ImageFilter

    im = Image.open(kodak("kodim05")).convert("RGB").crop((100, 100, 100 + w, 100 + h))
    t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32) / 255).permute(2, 0, 1)[None]  # noqa: E731
    return t(im), t(im.filter(ImageFilter.GaussianBlur(1.2)))


def test_ms_ssim_matches_pytorch_msssim():
    import pytorch_msssim

    x, y = _kodak_blur_pair(176, 208)
    noisy = (y + 0.05 * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    xs, ys = torch.cat([x, x]), torch.cat([y, noisy])
    expected = pytorch_msssim.ms_ssim(xs, ys, data_range=1.0, size_average=False)
    got = ms_ssim(xs, ys)
    assert got.shape == (2,)
    assert torch.allclose(got, expected, atol=1e-4, rtol=0)
    assert got[0] > got[1]  # added noise lowers it


def test_ms_ssim_odd_size_identity_and_too_small():
    x, _ = _kodak_blur_pair(161, 175)
    assert ms_ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(LatentkitError, match="at least 161 px"):
        ms_ssim(torch.rand(1, 3, 160, 400), torch.rand(1, 3, 160, 400))


def test_psnr_known_values():
    x = torch.zeros(2, 3, 8, 8)
    y = torch.stack([torch.full((3, 8, 8), 0.1), torch.zeros(3, 8, 8)])
    assert psnr(x, y).tolist() == pytest.approx([20.0, 120.0], abs=1e-4)  # mse 0.01 -> 20 dB; identical -> 120
    a, b = torch.full((1, 3, 4, 4), 0.5), torch.full((1, 3, 4, 4), 0.501)  # both round to 8-bit level 128
    assert psnr(a, b, quantize=True).item() == pytest.approx(120.0)
    assert psnr(a, b).item() == pytest.approx(60.0, abs=1e-3)


# --- CLI ---------------------------------------------------------------------------------------------------

def test_metrics_cli_on_golden_pair(capsys):
    case = golden(0)
    ref, dist = str(GOLDEN / case["ref"]), str(GOLDEN / case["dist"])
    assert main(["metrics", ref, dist]) == 0
    text = capsys.readouterr().out
    assert "192x128" in text and f"{case['lpips_squeeze_v0.1']:.4f}" in text and "MS-SSIM" in text
    assert main(["metrics", ref, dist, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lpips_squeeze"] == pytest.approx(case["lpips_squeeze_v0.1"], abs=1e-5)
    assert out["ms_ssim"] is None  # 128 px is too small for 5 scales
    x, y = _pair(case)
    assert out["psnr"] == pytest.approx(psnr(x, y).item(), abs=1e-4)
    assert out["ssim"] == pytest.approx(ssim(x, y).item(), abs=1e-6)


def test_metrics_cli_on_folders(tmp_path, capsys):
    from PIL import Image

    ref, dist = tmp_path / "ref", tmp_path / "dist"
    ref.mkdir(), dist.mkdir()
    crops = []
    for case, ext in zip((golden(0), golden(1)), (".png", ".webp")):  # paired by name without extension
        name = case["ref"].replace("_ref.png", "")
        Image.open(GOLDEN / case["ref"]).crop((0, 0, 64, 48)).save(ref / f"{name}.png")
        Image.open(GOLDEN / case["dist"]).crop((0, 0, 64, 48)).save(dist / f"{name}{ext}", lossless=True)
        crops.append((read_image(ref / f"{name}.png").batch(), read_image(dist / f"{name}{ext}").batch()))
    shutil.copy(ref / f"{name}.png", ref / "lonely.png")
    (dist / "notes.txt").write_text("not an image")
    assert main(["metrics", str(ref), str(dist), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = [lpips(x, y).item() for x, y in crops]
    assert [p["lpips_squeeze"] for p in out["pairs"]] == pytest.approx(expected, abs=1e-6)
    assert out["mean"]["lpips_squeeze"] == pytest.approx(sum(expected) / 2, abs=1e-6)
    assert out["mean"]["ms_ssim"] is None
    assert out["only_in_ref"] == ["lonely.png"] and out["only_in_dist"] == []
    assert main(["metrics", str(ref), str(dist)]) == 0
    text = capsys.readouterr().out
    assert "mean" in text and "lonely.png" in text and text.count("\n") == 5  # header, 2 rows, mean, only-in


def test_metrics_cli_errors(tmp_path, capsys):
    shutil.copy(GOLDEN / golden(0)["ref"], tmp_path / "a.png")
    shutil.copy(GOLDEN / golden(2)["ref"], tmp_path / "b.png")  # a different size
    assert main(["metrics", str(tmp_path / "a.png"), str(tmp_path / "b.png")]) == 2
    assert "same size" in capsys.readouterr().err
    assert main(["metrics", str(tmp_path / "a.png"), str(tmp_path)]) == 2
    assert "both" in capsys.readouterr().err


# --- fetch: the hash check only (downloading cannot be tested offline) ---------------------------------------

def test_fetch_hash_check(tmp_path):
    from latentkit.commands.fetch import check_hash

    data = b"pretend checkpoint"
    prefix = hashlib.sha256(data).hexdigest()[:8]
    good = tmp_path / f"net-{prefix}.pth"
    good.write_bytes(data)
    check_hash(good)
    bad = tmp_path / "net-00000000.pth"
    bad.write_bytes(data)
    with pytest.raises(LatentkitError, match="corrupt"):
        check_hash(bad)
    with pytest.raises(LatentkitError, match="no sha256 prefix"):
        check_hash(tmp_path / "plain.pth")


def test_fetch_rejects_bad_download_and_leaves_nothing(tmp_path, monkeypatch):
    import torch.hub

    from latentkit.commands import fetch

    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda url, dst, progress=True: open(dst, "wb").write(b"truncated"))
    with pytest.raises(LatentkitError, match="corrupt"):
        fetch.fetch("lpips-alex", tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "alexnet-owt-7be5be79.pth").write_bytes(b"stale")  # existing file is checked, not trusted
    with pytest.raises(LatentkitError, match="corrupt"):
        fetch.fetch("lpips-alex", tmp_path)


def test_compare_names_every_metric_and_knows_its_direction():
    from latentkit.metrics import ssimulacra2
    from latentkit.metrics.butteraugli import butteraugli_available
    from latentkit.metrics.compare import HIGHER_IS_BETTER, TRAINED_ON, compare

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 48, 64, generator=g)
    y = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    names = ["psnr", "ssimulacra2", "lpips_squeeze"] + (["butteraugli_max", "butteraugli_3norm"]
                                                        if butteraugli_available() else [])
    (row,) = compare(x, y, names)
    assert list(row) == names
    from latentkit.metrics import to_8bit_levels

    assert row["ssimulacra2"] == pytest.approx(ssimulacra2(to_8bit_levels(x), to_8bit_levels(y)).item())
    assert compare(x, x, names)[0]["ssimulacra2"] == pytest.approx(100.0)
    if butteraugli_available():
        assert row["butteraugli_max"] > row["butteraugli_3norm"] > 0
    assert HIGHER_IS_BETTER["ssimulacra2"] and not HIGHER_IS_BETTER["butteraugli_3norm"]
    assert TRAINED_ON == ("lpips_squeeze",)
    with pytest.raises(LatentkitError, match="unknown metric"):
        compare(x, y, ["vmaf"])


def test_every_table_formats_a_metric_alike():
    """One formatter for `metrics`, `eval-model`, `bench rd`'s markdown and the HTML report: 2 decimals on the dB,
    SSIMULACRA2 and Butteraugli scales, 4 on the 0..1 ones, n/a for a missing value, a sign on request."""
    from latentkit.bench import evaluate, rd
    from latentkit.metrics.compare import format_value

    assert [format_value(31.23456, m) for m in ("psnr", "ssimulacra2", "butteraugli_3norm", "butteraugli_max")] \
        == ["31.23"] * 4
    assert [format_value(0.123456, m) for m in ("ssim", "ms_ssim", "lpips_squeeze")] == ["0.1235"] * 3
    assert format_value(None, "psnr") == format_value(float("nan"), "ssim") == "n/a"
    assert (format_value(0.5, "psnr", sign="+"), format_value(-0.00012, "ms_ssim", sign="+")) == ("+0.50", "-0.0001")
    # the tables print it: eval-model's, bench rd's markdown
    result = {"metrics": ["ssimulacra2", "butteraugli_3norm", "ms_ssim"],
              "images": [{"file": "a.png", "ssimulacra2": 21.94906, "butteraugli_3norm": 4.86628, "ms_ssim": 0.94902}],
              "mean": {"ssimulacra2": 21.94906, "butteraugli_3norm": 4.86628, "ms_ssim": 0.94902}}
    assert evaluate.format_table(result).splitlines()[1].split() == ["a.png", "21.95", "4.87", "0.9490"]
    table = rd.rates_markdown({"latent": {"0.1": {"ssimulacra2": 8.3743, "butteraugli_3norm": None}}},
                              ["ssimulacra2", "butteraugli_3norm"])
    assert "| latent | 8.37 | n/a |" in table


def test_psnr_in_slices_matches_the_whole_image(monkeypatch):
    """PSNR sums squared errors over slices of rows (no full-size temporaries): any slicing gives the same value."""
    import importlib

    psnr_module = importlib.import_module("latentkit.metrics.psnr")

    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(2, 3, 37, 23, generator=g), torch.rand(2, 3, 37, 23, generator=g)
    whole = 10 * torch.log10(1 / (x - y).double().pow(2).flatten(1).mean(1))
    wq = 10 * torch.log10(1 / ((x * 255).round() - (y * 255).round()).double().div(255).pow(2).flatten(1).mean(1))
    for values in (1, 100, 1 << 22):
        monkeypatch.setattr(psnr_module, "SLICE_VALUES", values)
        assert psnr(x, y).tolist() == pytest.approx(whole.tolist(), abs=1e-4)
        assert psnr(x, y, quantize=True).tolist() == pytest.approx(wq.tolist(), abs=1e-4)

"""latentkit.latent (interpolate, prior samples, anomaly maps, latent statistics, the PCA baseline), its four
commands and the ``pca`` codec of bench rd."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from conftest import ROOT, shared_path
from latentkit import latent
from latentkit import model as M
from latentkit.cli import main
from latentkit.errors import LatentkitError
from latentkit.io import Image, list_images, read_image

DEMO = ROOT / "docs" / "demo" / "kodim23.png"


@pytest.fixture(scope="module")
def micro_dir(tmp_path_factory, micro_vae):
    return M.save_vae(micro_vae, tmp_path_factory.mktemp("models") / "micro")


@pytest.fixture(scope="module")
def default_vae():
    return M.load_vae()


def _png(path, array) -> str:
    PILImage.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    a = _png(tmp_path / "a.png", rng.integers(0, 256, (32, 48, 3)))
    b = _png(tmp_path / "b.png", rng.integers(0, 256, (40, 40, 3)))
    return a, b


def one_line_error(capsys, argv: list[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentkit: error:") and err.count("\n") == 1 and match in err, err


# -- interpolation ----------------------------------------------------------------------------------------------
def test_interpolation_endpoints_are_the_two_reconstructions(micro_vae, rand_images):
    a, b = rand_images[0], rand_images[1]
    for spherical in (False, True):
        frames = latent.interpolate(micro_vae, a, b, 5, slerp=spherical)
        assert frames.shape == (5, 3, 32, 48)
        assert torch.equal(frames[0], M.reconstruct(micro_vae, a[None])[0])
        assert torch.equal(frames[-1], M.reconstruct(micro_vae, b[None])[0])
        assert not torch.equal(frames[2], frames[0]) and not torch.equal(frames[2], frames[-1])


def test_images_of_different_sizes_are_centre_cropped_to_the_smaller(micro_vae):
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 40, 24, generator=g), torch.rand(3, 16, 56, generator=g)
    frames = latent.interpolate(micro_vae, a, b, 3)
    assert frames.shape == (3, 3, 16, 24)
    assert torch.equal(frames[0], M.reconstruct(micro_vae, a[None, :, 12:28, :])[0])
    assert torch.equal(frames[-1], M.reconstruct(micro_vae, b[None, :, :, 16:40])[0])


def test_lerp_midpoint_and_slerp_keeps_the_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 6, 5, generator=g), torch.randn(4, 6, 5, generator=g)
    assert torch.allclose(latent.interpolate_latents(a, b, 3)[1], (a + b) / 2)
    b_same = b * (a.norm() / b.norm())  # equal norms: every slerp point has that norm, lerp's dip inside
    path = latent.interpolate_latents(a, b_same, 9, slerp=True)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b_same)
    assert torch.allclose(path.flatten(1).norm(dim=1), a.norm().expand(9), rtol=1e-5)
    assert latent.interpolate_latents(a, b_same, 9)[4].norm() < 0.9 * a.norm()
    mid = latent.slerp(a, b_same, 0.5).flatten()  # equally far (in angle) from both ends
    cos = torch.nn.functional.cosine_similarity
    assert torch.isclose(cos(mid, a.flatten(), dim=0), cos(mid, b_same.flatten(), dim=0), atol=1e-5)
    # unequal norms: the norm goes linearly from |a| to |b|
    for t in (0.25, 0.5, 0.8):
        assert torch.isclose(latent.slerp(a, 3 * b, t).norm(), (1 - t) * a.norm() + t * 3 * b.norm(), rtol=1e-5)
    assert torch.allclose(latent.slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: falls back to lerp


# -- prior samples ----------------------------------------------------------------------------------------------
def test_prior_samples_have_the_asked_shape_and_are_not_constant(micro_vae):
    x = latent.sample_prior(micro_vae, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, 16, 24) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    assert x[0].std() > 1e-4 and (x[0] - x[1]).abs().max() > 1e-3  # varies within and between draws
    again = latent.sample_prior(micro_vae, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)
    z = latent.prior.prior_latents(micro_vae, 64, 64, 64, temperature=0.5, generator=torch.Generator().manual_seed(1))
    assert z.std().item() == pytest.approx(0.5, rel=0.02) and abs(z.mean().item()) < 0.01


# -- anomaly ----------------------------------------------------------------------------------------------------
def _damaged(x: torch.Tensor) -> torch.Tensor:
    y = x.clone()
    y[:, 16:40, 16:40] = (y[:, 16:40, 16:40] + 0.25 * torch.randn(3, 24, 24, generator=torch.Generator().manual_seed(0))
                          ).clamp(0, 1)
    return y


def test_anomaly_score_ranks_a_corrupted_image_above_its_clean_original(default_vae):
    clean = read_image(DEMO).rgb[:, 160:224, 280:344]  # 64 x 64 of the parrots
    bad = _damaged(clean)
    for metric, ratio in (("l2", 2.0), ("lpips", 1.3)):  # LPIPS's map is coarser (upsampled from 1/4 scale on)
        a, b = latent.anomaly(default_vae, clean, metric), latent.anomaly(default_vae, bad, metric)
        assert b.score > 1.2 * a.score, (metric, a.score, b.score)
        assert a.map.shape == (64, 64) and (a.map >= 0).all()
        inside, outside = b.map[16:40, 16:40].mean(), torch.cat([b.map[:16].flatten(), b.map[40:].flatten()]).mean()
        assert inside > ratio * outside  # the map points at the damage
    a = latent.anomaly(default_vae, clean, "l2")
    assert a.score == pytest.approx(float((clean - a.reconstruction).pow(2).mean()), rel=1e-5)
    picture = latent.overlay(clean, a.map, float(a.map.max()))
    assert picture.shape == (3, 64, 64) and 0 <= picture.min() and picture.max() <= 1


def test_threshold_is_a_percentile():
    assert latent.threshold([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert latent.threshold([1.0, 2.0, 3.0, 4.0, 5.0], 100) == 5.0
    with pytest.raises(LatentkitError):
        latent.threshold([], 95)


def test_lpips_spatial_map_averages_to_the_distance():
    from latentkit.metrics.lpips import lpips

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 48, 64, generator=g)
    y = (x + 0.1 * torch.randn(2, 3, 48, 64, generator=g)).clamp(0, 1)
    d, m = lpips(x, y), lpips(x, y, spatial=True)
    assert m.shape == (2, 1, 48, 64) and (m >= 0).all()
    assert torch.allclose(m.mean((1, 2, 3)), d, rtol=0.1)
    assert lpips(x, x, spatial=True).abs().max() == 0


# -- latent statistics ------------------------------------------------------------------------------------------
def test_latent_stats_match_direct_computation(micro_vae, rand_images):
    from latentkit.pipeline import estimate_scale_factor
    from latentkit.train.losses import kl_divergence

    images = [rand_images[0], rand_images[1]]
    s = latent.latent_stats(micro_vae, images, progress=False)
    post = latent.posterior(micro_vae, rand_images)
    assert torch.equal(post.mean, M.encode(micro_vae, rand_images))  # the same posterior as encode's
    posts = [latent.posterior(micro_vae, x[None]) for x in images]  # one at a time, as latent_stats goes
    kl = torch.cat([kl_divergence(p.mean, p.logvar) for p in posts]).mean((0, 2, 3))
    assert np.allclose(s.kl_nats, kl.numpy(), rtol=1e-3, atol=1e-6)
    mu = torch.cat([p.mean for p in posts])
    assert np.allclose(s.mean_of_means, mu.mean((0, 2, 3)).numpy(), atol=1e-5)
    assert np.allclose(s.std_of_means, mu.std((0, 2, 3), correction=0).numpy(), rtol=1e-3)
    corr = np.array(s.correlation)
    assert corr.shape == (4, 4) and np.allclose(np.diag(corr), 1, atol=1e-6) and np.allclose(corr, corr.T)
    assert s.images == 2 and s.positions == 2 * 4 * 6
    ref, _ = estimate_scale_factor(micro_vae, images, progress=False)
    assert s.scaling_factor == pytest.approx(ref, rel=0.05)  # different draws, the same definition


# -- PCA, the linear baseline -----------------------------------------------------------------------------------
def test_shipped_pca_basis_is_orthonormal_and_lossless_with_all_components():
    basis = latent.load_pca()
    c = basis.components.astype(np.float64)
    assert c.shape == (192, 192) and np.allclose(c @ c.T, np.eye(192), atol=1e-4)
    assert np.all(np.diff(basis.variances) <= 0) and basis.images == 540
    x = torch.rand(1, 3, 21, 35, generator=torch.Generator().manual_seed(0))
    assert basis.encode(x).shape == (1, 4, 3, 5)
    assert torch.allclose(basis.reconstruct(x, k=192), x, atol=1e-4)
    err = [float((basis.reconstruct(x, k) - x).pow(2).mean()) for k in (1, 4, 16)]
    assert err[0] > err[1] > err[2]


def test_a_linear_autoencoder_trained_by_gradient_descent_spans_the_pca_subspace():
    files = list_images(shared_path("data", "train", "bsds500"))[:3]
    images = [read_image(f).batch()[..., :256, :256] for f in files]
    k = 4
    basis = latent.fit_pca(images, k=k, progress=False)
    x = torch.cat([latent.pca.patches(im) for im in images]).double()
    x = x - x.mean(0)
    # full-batch gradient descent (Adam) on the mean squared reconstruction error of the centred patches, written
    # through their covariance S: mean |x - D E x|^2 = tr(S) - 2 tr(D E S) + tr(D^T D E S E^T), the same loss and
    # gradients as on the patches, at k x 192 x 192 a step instead of patches x 192 x k
    cov = x.T @ x / len(x)
    g = torch.Generator().manual_seed(0)
    enc = (0.05 * torch.randn(k, 192, generator=g, dtype=torch.float64)).requires_grad_()
    dec = (0.05 * torch.randn(192, k, generator=g, dtype=torch.float64)).requires_grad_()
    opt = torch.optim.Adam([enc, dec], lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: thread start-up would cost more than the work
    try:
        for _ in range(600):
            es = enc @ cov
            loss = (torch.trace(cov) - 2 * torch.trace(dec @ es) + torch.trace((dec.T @ dec) @ (es @ enc.T))) / 192
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    cosines = latent.principal_angle_cosines(dec.detach().numpy().T, basis.components)
    assert cosines.min() > 0.99, cosines
    eig = torch.linalg.eigvalsh(cov)
    optimum = (eig.sum() - eig[-k:].sum()) / 192  # Eckart-Young: the best any rank-k linear map does
    assert float(loss.detach()) == pytest.approx(float(optimum), rel=0.01)


def test_pca_codec_roundtrip():
    from latentkit.bench.pca_codec import PCARoundtrip

    rgb = read_image(DEMO).rgb[:, 100:164, 200:280]
    image = Image(rgb.contiguous())
    codec = PCARoundtrip()
    sizes, errors = [], []
    for q in (8, 40, 100):
        data, dec = codec(image, q)
        assert dec.shape == rgb.shape and data[:2] == b"LK"
        sizes.append(len(data))
        errors.append(float((dec - rgb).pow(2).mean()))
    assert sizes[0] < sizes[1] < sizes[2] and errors[0] > errors[1] > errors[2]
    ceiling = float((codec.basis.reconstruct(rgb[None])[0] - rgb).pow(2).mean())
    assert errors[2] == pytest.approx(ceiling, rel=0.02)  # at quality 100 only the projection's loss is left


def test_bench_knows_the_pca_codec():
    from latentkit.bench.rd import parse_qualities
    from latentkit.bench.sweeps import CODECS, PCA_QUALITIES

    assert "pca" in CODECS and parse_qualities(None, ["pca"]) == {"pca": PCA_QUALITIES}


# -- the commands -----------------------------------------------------------------------------------------------
def test_interpolate_command(tmp_path, capsys, micro_dir, pair):
    strip, gif, frames = tmp_path / "s.png", tmp_path / "a.gif", tmp_path / "frames"
    assert main(["interpolate", *pair, "-o", str(strip), "--gif", str(gif), "--frames", str(frames), "--steps", "4",
                 "--slerp", "--model", str(micro_dir), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["cropped"] and (figures["width"], figures["height"]) == (40, 32)
    assert PILImage.open(strip).size == (4 * 40, 32)
    assert sorted(p.name for p in frames.iterdir()) == [f"frame_00{i}.png" for i in range(4)]
    assert PILImage.open(gif).n_frames == 6  # forwards, then back without repeating the ends


def test_sample_command(tmp_path, capsys, micro_dir):
    out = tmp_path / "g.png"
    assert main(["sample", "-o", str(out), "--n", "5", "--size", "16x24", "--columns", "3", "--model", str(micro_dir),
                 "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["std_across_draws"] > 0
    assert PILImage.open(out).size == (3 * 24 + 2 * 2, 2 * 16 + 2)


def test_anomaly_command_with_a_threshold(tmp_path, capsys, micro_dir):
    rng = np.random.default_rng(0)
    normal = tmp_path / "normal"
    normal.mkdir()
    smooth = np.repeat(np.repeat(rng.integers(60, 200, (4, 4, 3)), 8, 0), 8, 1)
    for i in range(4):
        _png(normal / f"n{i}.png", np.clip(smooth + rng.integers(-3, 4, smooth.shape), 0, 255))
    clean = _png(tmp_path / "clean.png", smooth)
    noisy = _png(tmp_path / "noisy.png", rng.integers(0, 256, smooth.shape))
    out = tmp_path / "maps"
    assert main(["anomaly", clean, noisy, "-o", str(out), "--threshold-from", str(normal), "--percentile", "100",
                 "--model", str(micro_dir), "--json", "--panel"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in rows] == [clean, noisy]
    assert all(isinstance(r["score"], float) and isinstance(r["threshold"], float) for r in rows)
    assert rows[1]["score"] > rows[0]["score"] and rows[1]["anomalous"]
    assert PILImage.open(out / "noisy.png").size == (3 * 32 + 2 * 4, 32)


def test_latent_stats_command(tmp_path, capsys, micro_dir, pair):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in pair:
        (folder / PILImage.open(p).filename.split("/")[-1]).write_bytes(open(p, "rb").read())
    plot = tmp_path / "stats.png"
    assert main(["latent-stats", str(folder), "--model", str(micro_dir), "--json", "--plot", str(plot), "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["images"] == 2 and len(s["kl_nats"]) == 4 and all(v >= 0 for v in s["kl_nats"])
    assert s["scaling_factor"] > 0 and plot.stat().st_size > 0
    assert main(["latent-stats", str(folder), "--model", str(micro_dir), "--quiet"]) == 0
    assert "KL nats" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["one_image", "steps_0", "steps_negative", "grayscale", "rgba", "one_pixel",
                                  "size_not_8", "size_too_big", "empty_threshold_folder", "no_output",
                                  "frames_exist"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, micro_dir, pair, case):
    a, b = pair
    out = tmp_path / "out"
    model = ["--model", str(micro_dir)]
    gray = _png(tmp_path / "g.png", np.zeros((16, 16)))
    rgba = tmp_path / "rgba.png"
    PILImage.fromarray(np.zeros((16, 16, 4), np.uint8)).save(rgba)
    tiny = _png(tmp_path / "tiny.png", np.zeros((1, 1, 3)))
    (tmp_path / "fr").mkdir()
    (tmp_path / "fr" / "frame_001.png").write_bytes(b"kept")
    before = set(tmp_path.iterdir())
    argv, match = {
        "one_image": (["interpolate", a, "-o", f"{out}.png"], "exactly two images"),
        "steps_0": (["interpolate", a, b, "-o", f"{out}.png", "--steps", "0"], "--steps"),
        "steps_negative": (["interpolate", a, b, "-o", f"{out}.png", "--steps", "-3"], "--steps"),
        "grayscale": (["interpolate", a, gray, "-o", f"{out}.png", "--frames", str(out)], "grayscale"),
        "rgba": (["anomaly", a, str(rgba), "-o", str(out)], "alpha"),
        "one_pixel": (["anomaly", tiny, "-o", str(out)], "at least 8x8"),
        "size_not_8": (["sample", "-o", f"{out}.png", "--size", "20x16"], "multiples of 8"),
        "size_too_big": (["sample", "-o", f"{out}.png", "--size", "8192x8192"], "limit"),
        "empty_threshold_folder": (["anomaly", a, "-o", str(out), "--threshold-from", str(tmp_path / "e")], "no images"),
        "no_output": (["interpolate", a, b], "at least one output"),
        "frames_exist": (["interpolate", a, b, "-o", f"{out}.png", "--frames", str(tmp_path / "fr")], "--overwrite"),
    }[case]
    (tmp_path / "e").mkdir()
    one_line_error(capsys, argv + model, match)
    assert set(tmp_path.iterdir()) - before == {tmp_path / "e"}  # no partial output
    assert [p.name for p in (tmp_path / "fr").iterdir()] == ["frame_001.png"]


def test_library_rejects_bad_requests(micro_vae):
    with pytest.raises(LatentkitError, match="at least 2"):
        latent.interpolate(micro_vae, torch.rand(3, 8, 8), torch.rand(3, 8, 8), 1)
    with pytest.raises(LatentkitError, match="smaller than one latent"):
        latent.interpolate(micro_vae, torch.rand(3, 4, 8), torch.rand(3, 8, 8), 3)
    with pytest.raises(LatentkitError, match="multiples"):
        latent.sample_prior(micro_vae, 1, 12, 16)
    with pytest.raises(LatentkitError, match="temperature"):
        latent.sample_prior(micro_vae, 1, 16, 16, temperature=0)

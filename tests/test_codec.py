"""The `.latent` codec: round trips, rate control, header size, side planes, model checks, CLI."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from latentkit.codec import allocate, compress, decompress, entropy, format, quant
from latentkit.codec.api import LatentEncoder, decode_latent
from latentkit.errors import LatentkitError
from latentkit.io import Image, from_pil, read_image

from conftest import kodak

#: sum of the integer probability tables mod 1000003, recorded when format version 2 was frozen
_TABLE_CHECKSUM = 350158


@pytest.fixture(scope="module")
def rand_image():
    g = torch.Generator().manual_seed(1)
    return Image(torch.rand(3, 37, 52, generator=g))


@pytest.fixture(scope="module")
def kodak_crop():
    return Image(read_image(kodak("kodim05")).rgb[:, 100:164, 200:296].contiguous())


@pytest.mark.parametrize("quality", [1, 60, 100])
def test_round_trip_latent_exact(micro_vae, rand_image, kodak_crop, quality):
    for image in (rand_image, kodak_crop):
        data = compress(image, micro_vae, quality=quality)
        enc = LatentEncoder(image, micro_vae)
        assert enc.pack(quality) == data
        exps = allocate.choose_exponents(enc.latent, enc.gains, quality)
        expected = quant.dequantize(quant.quantize(enc.latent, exps), exps)
        _, decoded, _ = decode_latent(data, micro_vae)
        assert torch.equal(decoded[0], torch.from_numpy(expected))
        out = decompress(data, micro_vae)
        assert out.rgb.shape == image.rgb.shape and 0 <= out.rgb.min() and out.rgb.max() <= 1


def test_entropy_coder_round_trip_with_escapes():
    rng = np.random.default_rng(0)
    q = np.round(rng.laplace(0, 30, size=(4, 9, 13))).astype(np.int64)
    q[1, 3, 4], q[2, 0, 0], q[3, 8, 12] = 400_000, -70, 5000  # escape classes
    plan = entropy.choose_model(q)
    data = entropy.encode_symbols(q, plan)
    assert np.array_equal(entropy.decode_symbols(data, q.shape, plan.model, plan.params), q)
    assert abs(len(data) * 8 - plan.est_bits) < 64 + 0.01 * plan.est_bits  # the estimate the encoder plans with


@pytest.mark.parametrize("size", [(8, 40), (40, 8), (1, 1)])
def test_images_one_latent_column_or_row_wide_round_trip(micro_vae, size):
    """A plane one column wide has empty wavefronts (odd 2 i + j): an 8 x 40 image once encoded, then failed to
    decode ('zero-size array')."""
    image = Image(torch.rand(3, size[1], size[0], generator=torch.Generator().manual_seed(2)))
    data = compress(image, micro_vae, quality=90)
    enc = LatentEncoder(image, micro_vae)
    exps = allocate.choose_exponents(enc.latent, enc.gains, 90)
    _, decoded, _ = decode_latent(data, micro_vae)
    assert torch.equal(decoded[0], torch.from_numpy(quant.dequantize(quant.quantize(enc.latent, exps), exps)))
    assert decompress(data, micro_vae).rgb.shape == (3, size[1], size[0])


def test_wavefronts_cover_each_position_once_after_its_neighbours():
    h, w = 7, 11
    order = np.full((h, w), -1)
    for d, (rows, cols) in enumerate(entropy.wavefronts(h, w)):
        assert np.all(order[rows, cols] == -1)
        order[rows, cols] = d
    assert np.all(order >= 0)
    # every neighbour the model reads (left, up, up-left, up-right, two back in a row or column, ...) comes first
    for dr, dc in [(0, -1), (-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0), (-2, 1), (-2, -1), (-1, -2)]:
        i, j = np.mgrid[max(0, -dr):h, max(0, -dc):min(w, w - dc)]
        assert np.all(order[i + dr, j + dc] < order[i, j])


def test_predictable_and_empty_planes_cost_almost_nothing():
    i, j = np.mgrid[0:48, 0:64]
    ramp = np.stack([3 * i - 5 * j, np.zeros_like(i), 2 * i + j, np.full_like(i, 7)]).astype(np.int64)
    plan = entropy.choose_model(ramp)
    data = entropy.encode_symbols(ramp, plan)
    assert np.array_equal(entropy.decode_symbols(data, ramp.shape, plan.model, plan.params), ramp)
    # 12288 symbols, most of the bytes are the ramps' unusual weights; an order-0 coder would need kilobytes
    assert len(data) <= 128


def test_tables_are_frozen():
    probs, _ = entropy.tables()
    assert probs.shape == (entropy.NUM_SCALES, entropy.NUM_OFFSETS, entropy.ALPHABET)
    assert np.all(probs >= 1) and np.all(probs == np.round(probs))  # integers, every symbol codable
    # a checksum of the integer tables and step fractions: any change breaks existing files
    assert int(probs.sum()) % 1_000_003 == _TABLE_CHECKSUM
    assert quant.step_sizes(np.array([-8, 0, 8, 12])).tolist() == [0.5, 1.0, 2.0, np.float32(2 ** 1.5)]


def test_bpp_decreases_with_quality(micro_vae, kodak_crop):
    sizes = [len(compress(kodak_crop, micro_vae, quality=q)) for q in (10, 30, 50, 70, 90)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_bpp_target(micro_vae, kodak_crop):
    n = kodak_crop.width * kodak_crop.height
    top = len(compress(kodak_crop, micro_vae, quality=100)) * 8 / n
    low = len(compress(kodak_crop, micro_vae, quality=1)) * 8 / n
    target = (top + low) / 2
    got = len(compress(kodak_crop, micro_vae, bpp=target)) * 8 / n
    assert low <= got <= target
    with pytest.raises(LatentkitError, match="cannot reach"):
        compress(kodak_crop, micro_vae, bpp=low / 2)


def test_header_overhead(micro_vae, kodak_crop):
    data = compress(kodak_crop, micro_vae, quality=50)
    assert len(data) - len(format.parse(data).payload) <= 32


def test_bad_quality(micro_vae, rand_image):
    for q in (0, 101, 2.5):
        with pytest.raises(LatentkitError, match="quality"):
            compress(rand_image, micro_vae, quality=q)


def test_alpha_icc_gray_16bit_survive(micro_vae):
    rng = np.random.default_rng(0)
    rgba = PILImage.fromarray(rng.integers(0, 256, (21, 30, 4), dtype=np.uint8), "RGBA")
    rgba.info["icc_profile"] = b"fake-icc" * 50
    image = from_pil(rgba)
    out = decompress(compress(image, micro_vae, quality=50), micro_vae)
    assert np.array_equal(out.alpha, image.alpha) and out.icc_profile == image.icc_profile
    la = from_pil(PILImage.fromarray(rng.integers(0, 256, (17, 9, 2), dtype=np.uint8), "LA"))
    out = decompress(compress(la, micro_vae), micro_vae)
    assert out.grayscale and np.array_equal(out.alpha, la.alpha)
    g16 = from_pil(PILImage.fromarray(rng.integers(0, 65535, (16, 16), dtype=np.uint16)).convert("I;16"))
    out = decompress(compress(g16, micro_vae), micro_vae)
    assert out.grayscale and out.bit_depth == 16


def test_wrong_model_refused(micro_vae, rand_image):
    from latentkit.model import make_vae, model_id

    other = make_vae(dict(micro_vae.config), seed=1).eval()
    data = compress(rand_image, micro_vae)
    with pytest.raises(LatentkitError, match=model_id(micro_vae).hex()):
        decompress(data, other)


def test_a_new_encoder_on_the_same_decoder_decodes_the_earlier_versions_files(micro_vae, rand_image, monkeypatch):
    """EARLIER_IDS: a version that changed only the encoder names the ids of the files it decodes as before."""
    import latentkit.model as M

    old = M.make_vae(dict(micro_vae.config), seed=3).eval().requires_grad_(False)
    new = M.make_vae(dict(micro_vae.config), seed=4).eval().requires_grad_(False)
    new.decoder.load_state_dict(old.decoder.state_dict())
    new.post_quant_conv.load_state_dict(old.post_quant_conv.state_dict())
    data = compress(rand_image, old, quality=60)
    with pytest.raises(LatentkitError, match="--force-model"):
        decompress(data, new)  # not declared: refused
    decoder_sha = M.weights_sha256(new, M.DECODING_WEIGHTS)
    assert decoder_sha == M.weights_sha256(old, M.DECODING_WEIGHTS) != M.weights_sha256(micro_vae, M.DECODING_WEIGHTS)
    monkeypatch.setattr(M, "EARLIER_IDS", {decoder_sha: (M.model_id(old).hex(),)})
    new = M.make_vae(dict(micro_vae.config), seed=4).eval().requires_grad_(False)  # nothing cached yet
    new.decoder.load_state_dict(old.decoder.state_dict())
    new.post_quant_conv.load_state_dict(old.post_quant_conv.state_dict())
    assert M.decodes_ids(new) == {M.model_id(new), M.model_id(old)}
    assert torch.equal(decompress(data, new).rgb, decompress(data, old).rgb)
    with pytest.raises(LatentkitError, match="--force-model"):  # another decoder does not inherit the ids
        decompress(data, M.make_vae(dict(micro_vae.config), seed=5).eval())


def test_a_fine_tuned_decoder_reads_the_earlier_versions_files_and_the_cli_says_so(micro_vae, rand_image, tmp_path,
                                                                                     monkeypatch, capsys):
    """FINE_TUNED_FROM: a version whose decoder was fine-tuned from an earlier one decodes that version's files
    without --force-model (its own picture, not the earlier one's); the shipped model with the file's exact
    decoder still wins over a successor; `latentkit decode` names both ids."""
    import latentkit.model as M
    from latentkit.cli import main

    old = M.make_vae(dict(micro_vae.config), seed=3).eval().requires_grad_(False)
    new = M.make_vae(dict(micro_vae.config), seed=3).eval().requires_grad_(False)
    with torch.no_grad():
        new.decoder.conv_out.bias.add_(0.05)  # a fine-tune of the decoder
    data = compress(rand_image, old, quality=60)
    with pytest.raises(LatentkitError, match="--force-model"):
        decompress(data, new)  # not declared: refused
    monkeypatch.setattr(M, "FINE_TUNED_FROM", {M.weights_sha256(new, M.DECODING_WEIGHTS): (M.model_id(old).hex(),)})
    new = M.make_vae(dict(micro_vae.config), seed=3).eval().requires_grad_(False)  # nothing cached yet
    with torch.no_grad():
        new.decoder.conv_out.bias.add_(0.05)
    assert M.succeeds_ids(new) == {M.model_id(old)} and M.model_id(old) not in M.decodes_ids(new)
    succeeded = decompress(data, new).rgb
    assert not torch.equal(succeeded, decompress(data, old).rgb)
    assert torch.equal(succeeded, decompress(data, new, force_model=True).rgb)
    M.save_vae(new, tmp_path / "default")
    M.save_vae(micro_vae, tmp_path / "codec")
    monkeypatch.setattr(M, "SHIPPED_MODELS", {"default": tmp_path / "default", "codec": tmp_path / "codec"})
    monkeypatch.setattr(M, "_SHIPPED_LOADED", {})
    assert torch.equal(decompress(data).rgb, succeeded)  # found among the shipped models by its fine-tune
    (tmp_path / "a.latent").write_bytes(data)
    assert main(["decode", str(tmp_path / "a.latent"), "-o", str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr()
    assert f"made with model {M.model_id(old).hex()}, decoded with {M.model_id(new).hex()}" in out.out + out.err
    M.save_vae(old, tmp_path / "codec")  # now a shipped model has the file's own decoder: it wins
    monkeypatch.setattr(M, "_SHIPPED_LOADED", {})
    assert torch.equal(decompress(data).rgb, decompress(data, old).rgb)
    assert main(["decode", str(tmp_path / "a.latent"), "-o", str(tmp_path / "b.png")]) == 0
    out = capsys.readouterr()
    assert "fine-tuned" not in out.out + out.err


def test_decode_bit_exact_across_runs(micro_vae, kodak_crop):
    data = compress(kodak_crop, micro_vae, quality=60)
    assert compress(kodak_crop, micro_vae, quality=60) == data
    a, b = decompress(data, micro_vae), decompress(data, micro_vae)
    assert torch.equal(a.rgb, b.rgb)


def test_oversized_header_refused_before_allocation(micro_vae, rand_image):
    c = format.parse(compress(rand_image, micro_vae))
    c.width = c.height = 1 << 20
    with pytest.raises(LatentkitError, match="oversized"):
        format.parse(format.pack(c))
    c.width, c.height = 89_478_485, 1  # within the pixel limit, but one row of 11 million latent positions:
    with pytest.raises(LatentkitError, match="65535 px a side"):  # hours of entropy decoding, refused at once
        decompress(format.pack(c), micro_vae, max_pixels=None)
    with pytest.raises(LatentkitError, match="65535 px a side"):
        compress(Image(torch.zeros(3, 1, 65536)), micro_vae)


def test_cli_encode_decode(micro_vae, tmp_path, capsys):
    import json

    from latentkit.cli import main
    from latentkit.model import save_vae

    model = save_vae(micro_vae, tmp_path / "m")
    src = tmp_path / "in.png"
    PILImage.fromarray(np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(src)
    lat = tmp_path / "x.latent"
    assert main(["encode", str(src), "-o", str(lat), "--quality", "30", "--model", str(model)]) == 0
    assert "PSNR" not in capsys.readouterr().out  # off by default: no check decode
    plain = lat.read_bytes()
    assert main(["encode", str(src), "-o", str(lat), "--quality", "30", "--model", str(model), "--json", "--psnr",
                 "--overwrite"]) == 0
    assert lat.read_bytes() == plain  # measuring the PSNR does not change the file
    report = json.loads(capsys.readouterr().out)
    assert report["bytes"] == lat.stat().st_size and report["bpp"] == pytest.approx(report["bytes"] * 8 / 960)
    assert report["quality"] == 30 and 0 < report["psnr_db"] < 100 and report["seconds"] >= 0
    out = tmp_path / "out.png"
    assert main(["decode", str(lat), "-o", str(out), "--model", str(model), "--json"]) == 0
    decoded = json.loads(capsys.readouterr().out)
    assert (decoded["width"], decoded["height"], decoded["bytes"]) == (40, 24, report["bytes"])
    assert PILImage.open(out).size == (40, 24)
    # the PSNR encode reports is that of what decode gives back
    back = np.asarray(PILImage.open(out), dtype=np.float64)
    mse = ((back - np.asarray(PILImage.open(src), dtype=np.float64)) ** 2).mean()
    assert report["psnr_db"] == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-3)
    before = src.read_bytes()
    assert main(["encode", str(src), "-o", str(src), "--model", str(model)]) == 2  # never overwrite input
    assert main(["decode", str(src), "-o", str(out), "--model", str(model), "--overwrite"]) == 2  # foreign file
    err = capsys.readouterr().err
    assert "names an image" in err and "not a .latent file" in err and "Traceback" not in err
    assert src.read_bytes() == before


def test_force_model_decodes_with_another_decoder(micro_vae, rand_image):
    """--force-model: the latent of a file decoded by a model that does not carry its id (what a user does to see
    the plain decoder's picture of a file made for the codec decoder)."""
    from latentkit.model import make_vae

    other = make_vae(dict(micro_vae.config), seed=1).eval()
    data = compress(rand_image, micro_vae)
    forced = decompress(data, other, force_model=True)
    own = decompress(data, micro_vae)
    assert forced.rgb.shape == own.rgb.shape and not torch.equal(forced.rgb, own.rgb)


def test_without_a_model_the_shipped_model_of_the_file_id_decodes(micro_vae, rand_image, tmp_path, monkeypatch):
    """compress() with no model makes files for the shipped `codec` weights; decompress() with no model picks the
    shipped model whose id the file carries, and names every shipped id when none matches."""
    import latentkit.model as M

    codec = M.make_vae(dict(micro_vae.config), seed=1).eval().requires_grad_(False)
    M.save_vae(micro_vae, tmp_path / "default")
    M.save_vae(codec, tmp_path / "codec")
    monkeypatch.setattr(M, "SHIPPED_MODELS", {"default": tmp_path / "default", "codec": tmp_path / "codec"})
    monkeypatch.setattr(M, "_SHIPPED_LOADED", {})
    made = compress(rand_image, quality=60)
    assert made == compress(rand_image, codec, quality=60)  # the codec model by default
    assert torch.equal(decompress(made).rgb, decompress(made, codec).rgb)
    assert list(M._SHIPPED_LOADED) == ["codec"]  # a file of the codec's model loads that model alone
    plain = compress(rand_image, "default", quality=60)
    assert torch.equal(decompress(plain).rgb, decompress(plain, micro_vae).rgb)
    stranger = compress(rand_image, M.make_vae(dict(micro_vae.config), seed=2).eval(), quality=60)
    with pytest.raises(LatentkitError, match=f"none of the shipped models.*{M.model_id(codec).hex()}"):
        decompress(stranger)


def test_neighbours_follow_the_fallback_rules_and_the_cached_indices_agree():
    """Neighbour reads by precomputed flat indices (what the decoder uses per wavefront) against the documented
    fallbacks at the plane's edges: left -> up -> 0, up -> left, up-left / up-right -> up, left2 -> left, up2 -> up."""
    from latentkit.codec.entropy import context

    p = np.arange(1, 13).reshape(3, 4) * 10  # 10 20 30 40 / 50 60 70 80 / 90 100 110 120
    names = context.NEIGHBOURS

    def at(r, c):
        v = context.neighbours(p, None, np.array([r]), np.array([c]))[:, 0]
        return dict(zip(names, v.tolist()))

    assert set(at(0, 0).values()) == {0}
    n = at(0, 2)  # first row: up and everything above falls back to left
    assert (n["left"], n["up"], n["upleft"], n["upright"], n["left2"], n["up2"]) == (20, 20, 20, 20, 10, 20)
    n = at(2, 0)  # first column: left falls back to up
    assert (n["left"], n["up"], n["upleft"], n["upright"], n["left2"], n["up2"]) == (50, 50, 50, 60, 50, 10)
    n = at(1, 3)  # last column: up-right falls back to up
    assert (n["left"], n["up"], n["upleft"], n["upright"], n["med"]) == (70, 40, 30, 40, 70)
    e = np.arange(12).reshape(3, 4)
    assert context.activity(e, None, np.array([1]), np.array([1]))[0] == 2 * 4 + 2 * 1 + 0 + 2  # no left2 / up2
    # the previous channel: its symbol at the same place, and twice its error in the activity
    assert context.neighbours(p, p + 1, np.array([1]), np.array([2]))[-1, 0] == 71
    assert context.activity(e, 10 * e, np.array([1]), np.array([1]))[0] == 2 * 4 + 2 * 1 + 0 + 2 + 2 * 50
    h, w = 5, 6
    q = np.random.default_rng(0).integers(-9, 9, (h, w))
    err = np.random.default_rng(1).integers(0, 99, (h, w))
    for (rows, cols), (k, nbr, act) in zip(context.wavefronts(h, w), context.wavefront_indices(h, w)):
        assert np.array_equal(k, rows * w + cols)
        assert np.array_equal(context.neighbours(q, q, rows, cols, nbr), context.neighbours(q, q, rows, cols))
        assert np.array_equal(context.activity(err, err, rows, cols, act), context.activity(err, err, rows, cols))


def test_param_costs_are_the_code_lengths_of_each_model_floor_and_param():
    """The coding plan's cost table against its definition: each cell's bits at scale_index(lg, m, p, f) times
    its count (the table is computed with flat indices and floors as maxima, for speed)."""
    from latentkit.codec.entropy import context

    q = np.round(np.random.default_rng(4).laplace(0, 2, (12, 15))).astype(np.int64)
    nbrs = context.neighbours(q, None, *context.grid(*q.shape))
    ch = context.Channel(q, nbrs, None, np.array(context.DEFAULT_WEIGHTS))
    g, key, counts = ch.cells()
    _, bits = entropy.tables()
    bits = bits.reshape(entropy.NUM_SCALES, -1)
    costs = context.param_costs(ch.cells(), [0, 5, 15])
    for j, m in enumerate([0, 5, 15]):
        for f in range(len(entropy.FLOORS)):
            for p in (0, 100, 127, 128, 140, 200, 255):
                want = sum(bits[context.scale_index(gi, m, p, f), ki] * ci for gi, ki, ci in zip(g, key, counts))
                assert costs[j, f, p] == pytest.approx(want, rel=1e-12)

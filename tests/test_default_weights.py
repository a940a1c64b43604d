"""The shipped default weights on a few real Kodak crops: they load, reconstruct well, and code compactly.

Thresholds sit about 1.5 dB under what v0.1 measures (MODEL_CARD.md), so a broken export, a wrong
scaling/normalisation or a damaged file fails, while retrained, better weights pass.
"""

from __future__ import annotations

import json

import pytest
import torch

import latentkit
from latentkit.codec import compress, decompress
from latentkit.io import Image, read_image
from latentkit.metrics import psnr
from latentkit.errors import LatentkitError
from latentkit.model import DEFAULT_MODEL_DIR, SHIPPED_MODELS

from conftest import ROOT, kodak

CROPS = {"kodim03": 21.0, "kodim15": 23.5}  # min PSNR (dB) of a 256 px centre-right crop; v0.1: 22.7, 25.2;
# v0.6: 28.7, 26.9


@pytest.fixture(scope="module")
def vae():
    return latentkit.load_vae()


def _crop(name: str) -> torch.Tensor:
    return read_image(kodak(name)).rgb[:, 128:384, 256:512].contiguous()


def test_default_weights_are_fp16_with_a_measured_scaling_factor(vae):
    from safetensors import safe_open

    with safe_open(DEFAULT_MODEL_DIR / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    cfg = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    assert 0.05 < cfg["scaling_factor"] < 1.0 and cfg["scaling_factor"] != 0.18215
    assert vae.config.latent_channels == 4 and len(vae.config.block_out_channels) == 4
    assert (DEFAULT_MODEL_DIR / "MODEL_CARD.md").is_file()


@pytest.mark.parametrize("name", sorted(CROPS))
def test_default_weights_reconstruct_real_images(vae, name):
    x = _crop(name)[None]
    y = latentkit.reconstruct(vae, x)
    assert float(psnr(x, y, quantize=True)) >= CROPS[name]


# (quality, largest PSNR loss in dB against the unquantized reconstruction); on this crop v0.4: 0.07 and 0.007,
# v0.5: 0.09 and 0.015, v0.6: 0.10 and 0.013 (quality 60 costs 0.38 / 0.20 / 0.28 dB there: a rate choice, not a
# defect)
CODEC_LOSS = [(75, 0.2), (100, 0.05)]


@pytest.fixture(scope="module")
def kodim03_unquantized(vae) -> tuple[torch.Tensor, float]:
    """The kodim03 crop (3 x 256 x 256 in [0, 1]) and the PSNR (dB) of its unquantized reconstruction."""
    x = _crop("kodim03")
    return x, float(psnr(x[None], latentkit.reconstruct(vae, x[None]), quantize=True))


@pytest.mark.parametrize("quality,max_loss", CODEC_LOSS)
def test_default_weights_codec_costs_little_quality(vae, kodim03_unquantized, quality, max_loss):
    x, unquantized = kodim03_unquantized
    data = compress(Image(x), vae, quality=quality)
    back = decompress(data, vae)
    bpp = len(data) * 8 / (x.shape[1] * x.shape[2])
    assert bpp < 0.5
    assert float(psnr(x[None], back.rgb[None], quantize=True)) >= unquantized - max_loss


DEMO = ROOT / "docs" / "demo" / "kodim23.png"


def test_default_weights_on_the_shipped_demo_image(vae):
    """The README's first command's image ships with the repository, so this runs on every clone (v0.6:
    28.59 dB; v0.7: 28.77 dB; v0.8: 28.89 dB; v0.9: 28.94 dB, the last two on an AVX2 CPU in fp32)."""
    x = read_image(DEMO).batch()
    assert float(psnr(x, latentkit.reconstruct(vae, x), quantize=True)) >= 27.0


#: weights_sha256 of v0.8's encoding weights (encoder and quant_conv), which weights/codec-v0.8 keeps
V08_ENCODER_SHA256 = "7e5bc3fa6f0d5aa89ae7a1fd199091841931876e249a9e4a83a43f8acad63719"


def test_codec_weights_are_fp16_in_the_default_layout_and_the_earlier_codec_model_keeps_v08s_encoder():
    """weights/codec (session 19: encoder and decoder trained for the codec) has the default model's architecture
    in fp16 and its own encoder; weights/codec-v0.8, kept for the files made with it, is the v0.8 default encoder
    with a codec-tuned decoder (the default model moved on to v0.9: its scaling_factor is its own)."""
    from safetensors.torch import load_file

    import latentkit.model as M

    plain = load_file(DEFAULT_MODEL_DIR / "diffusion_pytorch_model.safetensors")
    config = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    encoding = ("encoder.", "quant_conv.")
    for name in ("codec", "codec-v0.8"):
        weights = load_file(SHIPPED_MODELS[name] / "diffusion_pytorch_model.safetensors")
        assert plain.keys() == weights.keys() and {t.dtype for t in weights.values()} == {torch.float16}
        theirs = json.loads((SHIPPED_MODELS[name] / "config.json").read_text())
        assert {k: v for k, v in theirs.items() if k != "scaling_factor"} == \
            {k: v for k, v in config.items() if k != "scaling_factor"}
        assert any(not torch.equal(plain[k], weights[k]) for k in plain if k.startswith(encoding)), name
        assert any(not torch.equal(plain[k], weights[k]) for k in plain if k.startswith("decoder."))
        keeps_v08 = M.weights_sha256(latentkit.load_vae(name), encoding) == V08_ENCODER_SHA256
        assert keeps_v08 == (name == "codec-v0.8"), name


#: a rate-distortion slope steeper than the shipped models' on the demo image (about 2.0-2.2 dB per doubling of
#: the bytes between qualities 32 and 60), for comparing two files of different sizes at equal bytes
DB_PER_DOUBLING = 3.0


def test_the_codec_model_beats_the_plain_and_the_earlier_codec_model_at_equal_bytes():
    """compress() without a model writes files for weights/codec: on the demo image better than the default model's
    and the earlier codec model's at the same quality, once their size difference is priced at a slope steeper
    than either model's (so a file that buys its decibels with bytes does not pass). The steps each model picks
    depend on the CPU's inference path, so the same quality gives other bytes per machine: session 19 (AMX, bf16),
    kodim23 quality 32: codec 2,489 bytes 26.26 dB, default 2,769 bytes 26.03 dB, codec-v0.8 2,533 bytes 25.86 dB;
    session 21 (AVX2, fp32): codec 2,525 bytes 26.31 dB, codec-v0.8 2,301 bytes 25.29 dB, fewer bytes but 1 dB
    worse."""
    import math

    x = read_image(DEMO)
    others = {name: latentkit.load_vae(name) for name in ("default", "codec-v0.8")}
    for quality in (32, 60):
        data = compress(x, quality=quality)
        codec_db = float(psnr(x.batch(), decompress(data).rgb[None], quantize=True))
        for name, vae in others.items():
            theirs = compress(x, vae, quality=quality)
            their_db = float(psnr(x.batch(), decompress(theirs).rgb[None], quantize=True))
            at_equal_bytes = their_db + DB_PER_DOUBLING * math.log2(len(data) / len(theirs))
            assert codec_db > at_equal_bytes, (quality, name, len(data), codec_db, len(theirs), their_db)
    with pytest.raises(LatentkitError, match="--force-model"):
        decompress(data, others["default"])


def test_files_of_the_earlier_versions_decode_with_the_shipped_models():
    """Every earlier shipped id finds the shipped model of its line (v0.7 changed only the encoder: EARLIER_IDS;
    v0.8 and v0.9 fine-tuned the decoders: FINE_TUNED_FROM; the v0.8 codec model ships as codec-v0.8), so a v0.6
    file (the golden ones carry v0.6's default id) decodes without --model."""
    import latentkit.model as M

    golden = ROOT / "tests" / "data" / "latent_golden" / "rgb_q50_64x48.latent"
    data = golden.read_bytes()
    earlier = {"default": ("7d81e03a2fe100e0", "fd379d0b239d0033", "06b44a177d979a99"),  # v0.6, v0.7, v0.8
               # the codec models of v0.6, v0.7 and v0.8 (its own id: the shipped weights/codec-v0.8)
               "codec-v0.8": ("6f8314285ef27c6a", "9f428bb0ca37cbaa", "309430e799c80f5b")}
    for name, ids in earlier.items():
        vae = latentkit.load_vae(name)
        assert set(map(bytes.fromhex, ids)) <= M.reads_ids(vae)
        for i in ids:
            assert M.shipped_model(bytes.fromhex(i)) is M.shipped_model(M.shipped_ids()[name])
    # the session-19 codec model reads none of them: its latent space is another
    assert not M.reads_ids(latentkit.load_vae("codec")) & set(map(bytes.fromhex, sum(earlier.values(), ())))
    assert decompress(data).rgb.shape == (3, 48, 64)

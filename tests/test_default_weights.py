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
    28.59 dB; v0.7: 28.77 dB)."""
    x = read_image(DEMO).batch()
    assert float(psnr(x, latentkit.reconstruct(vae, x), quantize=True)) >= 27.0


CODEC_DIR = SHIPPED_MODELS["codec"]


def test_codec_weights_are_the_default_encoder_with_another_fp16_decoder():
    """weights/codec may change only the decoder: its latents must stay the default model's."""
    from safetensors.torch import load_file

    plain = load_file(DEFAULT_MODEL_DIR / "diffusion_pytorch_model.safetensors")
    codec = load_file(CODEC_DIR / "diffusion_pytorch_model.safetensors")
    assert plain.keys() == codec.keys() and {t.dtype for t in codec.values()} == {torch.float16}
    shared = [k for k in plain if k.startswith(("encoder.", "quant_conv."))]
    assert shared and all(torch.equal(plain[k], codec[k]) for k in shared)
    assert any(not torch.equal(plain[k], codec[k]) for k in plain if k.startswith("decoder."))
    assert json.loads((CODEC_DIR / "config.json").read_text()) == json.loads(
        (DEFAULT_MODEL_DIR / "config.json").read_text())


def test_the_codec_decoder_beats_the_plain_decoder_on_the_same_file():
    """compress() without a model writes files for weights/codec; decoding one with the plain decoder
    (force_model) gives a worse picture at a low rate (demo image, quality 32, 0.052 bpp: v0.8 codec 25.86 dB, plain
    25.57 dB) and at most a little better one at quality 100 (codec 28.44 dB, plain 28.85 dB)."""
    x = read_image(DEMO)
    plain = latentkit.load_vae("default")
    for quality, min_gain in [(32, 0.2), (100, -0.5)]:
        data = compress(x, quality=quality)
        codec_db = float(psnr(x.batch(), decompress(data).rgb[None], quantize=True))
        plain_db = float(psnr(x.batch(), decompress(data, plain, force_model=True).rgb[None], quantize=True))
        assert codec_db >= plain_db + min_gain, (quality, codec_db, plain_db)
    with pytest.raises(LatentkitError, match="--force-model"):
        decompress(data, plain)


def test_files_of_the_earlier_versions_decode_with_the_shipped_models():
    """Every earlier shipped id finds the shipped model of its line (v0.7 changed only the encoder: EARLIER_IDS;
    v0.8 fine-tuned the decoders: FINE_TUNED_FROM), so a v0.6 file (the golden ones carry v0.6's default id)
    decodes without --model."""
    import latentkit.model as M

    golden = ROOT / "tests" / "data" / "latent_golden" / "rgb_q50_64x48.latent"
    data = golden.read_bytes()
    earlier = {"default": ("7d81e03a2fe100e0", "fd379d0b239d0033"),  # v0.6, v0.7
               "codec": ("6f8314285ef27c6a", "9f428bb0ca37cbaa")}
    for name, ids in earlier.items():
        vae = latentkit.load_vae(name)
        assert set(map(bytes.fromhex, ids)) <= M.reads_ids(vae)
        for i in ids:
            assert M.shipped_model(bytes.fromhex(i)) is M.shipped_model(M.shipped_ids()[name])
    assert decompress(data).rgb.shape == (3, 48, 64)

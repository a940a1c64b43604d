"""latentkit.model: loading every SD-family format, saving, encode/decode contracts."""

from __future__ import annotations

import json
import re

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from latentkit import model as M
from latentkit.errors import LatentkitError

#: the SD kl-f8 layout (4 blocks, 2 resnets per block, mid attention, 32 norm groups), only narrower,
#: so that the group count (not stored in the weights) is the one single-file loading assumes
NARROW_SD = dict(block_out_channels=(32, 32, 64, 64), layers_per_block=2, norm_num_groups=32)


@pytest.fixture(scope="module")
def narrow_sd_vae() -> AutoencoderKL:
    return M.make_vae(M.config_dict("sd") | NARROW_SD, seed=1).eval()


def to_ldm(sd: dict[str, torch.Tensor], n_blocks: int) -> dict[str, torch.Tensor]:
    """An independent diffusers -> original LDM (CompVis) key mapping, attention as 1x1 convs."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"down_blocks\.(\d+)\.resnets\.(\d+)", r"down.\1.block.\2", k)
        k = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0", r"down.\1.downsample", k)
        k = re.sub(r"up_blocks\.(\d+)\.resnets\.(\d+)",
                   lambda m: f"up.{n_blocks - 1 - int(m[1])}.block.{m[2]}", k)
        k = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0", lambda m: f"up.{n_blocks - 1 - int(m[1])}.upsample", k)
        k = re.sub(r"mid_block\.resnets\.(\d)", lambda m: f"mid.block_{int(m[1]) + 1}", k)
        k = k.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        if "mid_block.attentions.0" in k:
            k = k.replace("mid_block.attentions.0", "mid.attn_1").replace("group_norm", "norm")
            k = k.replace("to_q", "q").replace("to_k", "k").replace("to_v", "v").replace("to_out.0", "proj_out")
            if v.ndim == 2:
                v = v[:, :, None, None]  # Linear -> 1x1 Conv2d
        out[k] = v.clone()
    return out


def latents_for(vae: AutoencoderKL, h: int = 8, w: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randn(1, vae.config.latent_channels, h // 8, w // 8, generator=g)


def assert_same_model(a: AutoencoderKL, b: AutoencoderKL) -> None:
    z = latents_for(a)
    assert torch.equal(M.decode(a, z), M.decode(b, z))
    x = torch.rand(1, 3, 8, 16, generator=torch.Generator().manual_seed(4))
    assert torch.equal(M.encode(a, x), M.encode(b, x))


def test_independent_mapping_covers_every_weight(narrow_sd_vae):
    ldm = to_ldm(narrow_sd_vae.state_dict(), 4)
    assert len(ldm) == len(narrow_sd_vae.state_dict())
    assert ldm["encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    assert "decoder.up.3.upsample.conv.weight" in ldm and "encoder.down.1.block.0.nin_shortcut.weight" not in ldm
    assert "encoder.down.2.block.0.nin_shortcut.weight" in ldm


@pytest.mark.parametrize("prefix", ["", "first_stage_model."])
def test_ldm_single_file_safetensors(tmp_path, narrow_sd_vae, prefix):
    sd = {prefix + k: v for k, v in to_ldm(narrow_sd_vae.state_dict(), 4).items()}
    if prefix:  # a whole SD checkpoint also holds the UNet and text encoder: they must be ignored
        sd["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(2, 2)
    f = tmp_path / "vae.safetensors"
    save_file(sd, f)
    loaded = M.load_vae(f)
    assert loaded.config.block_out_channels == [32, 32, 64, 64]
    assert loaded.config.layers_per_block == 2 and not loaded.training
    assert_same_model(narrow_sd_vae, loaded)


def test_diffusers_keyed_single_file(tmp_path, narrow_sd_vae):
    f = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in narrow_sd_vae.state_dict().items()}, f)
    assert_same_model(narrow_sd_vae, M.load_vae(f))


def test_ckpt_needs_allow_pickle(tmp_path, narrow_sd_vae):
    f = tmp_path / "model.ckpt"
    sd = {"first_stage_model." + k: v for k, v in to_ldm(narrow_sd_vae.state_dict(), 4).items()}
    torch.save({"state_dict": sd, "global_step": 1}, f)
    with pytest.raises(LatentkitError, match="allow_pickle"):
        M.load_vae(f)
    assert_same_model(narrow_sd_vae, M.load_vae(f, allow_pickle=True))


def test_not_a_vae_file(tmp_path):
    f = tmp_path / "x.safetensors"
    save_file({"foo": torch.zeros(2)}, f)
    with pytest.raises(LatentkitError, match="not an SD/LDM VAE"):
        M.load_vae(f)
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(LatentkitError, match="cannot load a VAE"):
        M.load_vae(bad)


def test_save_loads_in_stock_diffusers(tmp_path, micro_vae):
    out = M.save_vae(micro_vae, tmp_path / "m")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", M.WEIGHTS_FILE]
    assert (out.stat().st_mode & 0o777) != 0o700  # not left private by the temporary folder
    stock = AutoencoderKL.from_pretrained(out).eval()
    assert_same_model(micro_vae, stock)
    assert M.weights_sha256(stock) == M.weights_sha256(micro_vae)


def test_resave_of_a_loaded_folder_does_not_record_its_path(tmp_path, micro_vae):
    """A model loaded from a folder remembers that path in its config; an export must not ship it."""
    first = M.save_vae(micro_vae, tmp_path / "private" / "m")
    for dtype in (None, torch.float16):
        again = M.save_vae(M.load_vae(first), tmp_path / f"again_{dtype}", dtype=dtype)
        cfg = json.loads((again / "config.json").read_text())
        assert "_name_or_path" not in cfg and "private" not in json.dumps(cfg)


def test_save_keeps_other_files_and_overwrites_weights(tmp_path, micro_vae):
    out = tmp_path / "m"
    M.save_vae(M.make_vae(M.config_dict("tiny") | {"block_out_channels": (8, 8, 8, 8), "norm_num_groups": 4}), out)
    (out / "MODEL_CARD.md").write_text("card")
    M.save_vae(micro_vae, out)
    assert (out / "MODEL_CARD.md").read_text() == "card"
    assert M.weights_sha256(M.load_vae(out)) == M.weights_sha256(micro_vae)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(LatentkitError, match="not a folder"):
        M.save_vae(micro_vae, f)


def test_pipeline_folder_and_training_checkpoint(tmp_path, micro_vae):
    M.save_vae(micro_vae, tmp_path / "pipe" / "vae")
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert_same_model(micro_vae, M.load_vae(tmp_path / "pipe"))

    from latentkit.train import checkpoint

    sd = micro_vae.state_dict()
    checkpoint.save(tmp_path / "run", 5, dict(micro_vae.config), sd, sd, {}, {"step": 5})
    assert_same_model(micro_vae, M.load_vae(tmp_path / "run"))


def test_fp16_load_and_hash(tmp_path, micro_vae):
    half = M.load_vae(M.save_vae(micro_vae, tmp_path / "m", dtype=torch.float16), dtype=torch.float32)
    assert next(half.parameters()).dtype == torch.float32
    assert M.weights_sha256(half) == M.weights_sha256(half.to(torch.float16))


def test_load_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(M.SHIPPED_MODELS, "default", tmp_path / "nothing")
    with pytest.raises(LatentkitError, match="init-model"):
        M.load_vae()
    with pytest.raises(LatentkitError, match="does not exist.*init-model"):
        M.load_vae("tiny")
    with pytest.raises(LatentkitError, match="not a diffusers model folder"):
        M.load_vae(tmp_path)
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(LatentkitError, match="unknown model file type"):
        M.load_vae(tmp_path / "m.json")


def test_configs():
    assert 3.5e6 < M.num_parameters(M.make_vae("tiny")) < 4.5e6
    assert 13e6 < M.num_parameters(M.make_vae("small")) < 17e6
    sd = M.config_dict("sd")
    assert sd["block_out_channels"] == [128, 256, 512, 512] and sd["scaling_factor"] == 0.18215
    with pytest.raises(LatentkitError, match="unknown config 'huge'"):
        M.config_dict("huge")


def test_config_from_json_and_folder(tmp_path, micro_vae):
    M.save_vae(micro_vae, tmp_path / "m")
    assert M.config_dict(tmp_path / "m")["block_out_channels"] == [8, 16, 16, 16]
    assert M.config_dict(tmp_path / "m" / "config.json")["norm_num_groups"] == 4
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(LatentkitError, match="not an AutoencoderKL config"):
        M.config_dict(tmp_path / "bad.json")
    with pytest.raises(LatentkitError, match="invalid AutoencoderKL config"):
        M.make_vae(M.config_dict("tiny") | {"norm_num_groups": 7})


@pytest.mark.parametrize("h,w", [(1, 1), (7, 13), (17, 9)])
def test_encode_decode_shapes_and_ranges(micro_vae, h, w):
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    z = M.encode(micro_vae, x)
    assert z.shape == (2, 4, -(-h // 8), -(-w // 8)) and z.dtype == torch.float32
    y = M.decode(micro_vae, z)
    assert y.shape == (2, 3, 8 * z.shape[2], 8 * z.shape[3])
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    r = M.reconstruct(micro_vae, x)
    assert r.shape == x.shape and torch.equal(r, y[..., :h, :w])


def test_sample_and_mean(micro_vae, rand_images):
    mean = M.encode(micro_vae, rand_images)
    assert torch.equal(mean, M.encode(micro_vae, rand_images))
    s1 = M.encode(micro_vae, rand_images, sample=True, generator=torch.Generator().manual_seed(0))
    s2 = M.encode(micro_vae, rand_images, sample=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s1, s2) and not torch.equal(s1, mean)
    mean.round_()  # latents are ordinary tensors: in-place edits (e.g. quantisation) work


def test_model_id(micro_vae):
    assert len(M.model_id(micro_vae)) == 8
    assert M.model_id(micro_vae) == bytes.fromhex(M.weights_sha256(micro_vae))[:8]


def test_encode_takes_pil_images_paths_and_lists_like_the_tensor(tmp_path, micro_vae):
    from PIL import Image

    from latentkit import io as lkio

    rgb = (torch.rand(3, 24, 40, generator=torch.Generator().manual_seed(3)) * 255).round() / 255
    pil = lkio.to_pil(lkio.Image(rgb))
    pil.save(tmp_path / "a.png")
    ref = M.encode(micro_vae, rgb[None])
    for images in (pil, tmp_path / "a.png", str(tmp_path / "a.png"), [pil, tmp_path / "a.png"], rgb):
        z = M.encode(micro_vae, images)
        assert z.shape[0] == (2 if isinstance(images, list) else 1)
        torch.testing.assert_close(z[:1], ref)
    gray = Image.fromarray((rgb[0].numpy() * 255).astype("uint8"), "L")
    assert M.encode(micro_vae, gray).shape == ref.shape  # grayscale is expanded to RGB
    with pytest.raises(LatentkitError, match="share a size"):
        M.encode(micro_vae, [pil, pil.resize((16, 16))])
    with pytest.raises(LatentkitError, match="cannot encode a int"):
        M.encode(micro_vae, 3)
    with pytest.raises(LatentkitError, match="N x 3 x H x W"):
        M.encode(micro_vae, torch.rand(1, 4, 8, 8))


def test_decode_to_pil_and_unbatched_latents(micro_vae, rand_images):
    z = M.encode(micro_vae, rand_images)
    pils = M.decode(micro_vae, z, output_type="pil")
    assert [p.size for p in pils] == [(48, 32)] * 2 and pils[0].mode == "RGB"
    x = M.decode(micro_vae, z[0])
    assert x.shape == (1, 3, 32, 48)
    import numpy as np

    assert abs(np.asarray(pils[0], dtype=np.float32).mean() / 255 - x[0].mean().item()) < 0.01
    with pytest.raises(LatentkitError, match="output_type"):
        M.decode(micro_vae, z, output_type="np")


def test_load_vae_takes_diffusers_torch_dtype_and_names(tmp_path, micro_vae):
    M.save_vae(micro_vae, tmp_path / "m")
    assert next(M.load_vae(tmp_path / "m", torch_dtype=torch.float16).parameters()).dtype == torch.float16
    assert next(M.load_vae(tmp_path / "m", dtype="bf16", device="cpu").parameters()).dtype == torch.bfloat16
    with pytest.raises(LatentkitError, match="disagree"):
        M.load_vae(tmp_path / "m", dtype=torch.float16, torch_dtype=torch.bfloat16)
    with pytest.raises(LatentkitError, match="unknown dtype"):
        M.load_vae(tmp_path / "m", torch_dtype="fp8")

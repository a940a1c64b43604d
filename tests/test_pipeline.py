"""diffusers integration: real pipeline classes built from tiny random components, no downloads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from latentkit import cli
from latentkit.errors import LatentkitError
from latentkit.model import encode, load_vae, make_vae, reconstruct, save_vae, weights_sha256
from latentkit.pipeline import accepted_latent_channels, estimate_scale_factor, export, swap_vae

HIDDEN = 16  # text-encoder width = UNet cross-attention width


def _variant(vae, **overrides):
    """A fresh VAE with `vae`'s config changed by `overrides` (seeded random weights)."""
    cfg = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    cfg.update(overrides)
    return make_vae(cfg, seed=0).eval().requires_grad_(False)


def _tokenizer(tmp: Path):
    """A CLIP tokenizer over single letters, written to `tmp` (vocab.json + merges.txt)."""
    from transformers import CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["<|startoftext|>", "<|endoftext|>"] + letters + [c + "</w>" for c in letters]
    (tmp / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (tmp / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"), model_max_length=16)


def _components(tmp: Path, vae, unet_in: int = 4) -> dict:
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=unet_in, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=HIDDEN, attention_head_dim=4)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=54, hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return dict(unet=unet.eval(), text_encoder=text.eval(), tokenizer=_tokenizer(tmp), scheduler=scheduler,
                vae=vae, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


@pytest.fixture(scope="module")
def components(tmp_path_factory, micro_vae):
    return _components(tmp_path_factory.mktemp("tok"), _variant(micro_vae))


def test_text_to_image_returns_requested_size(components, micro_vae):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    swap_vae(pipe, micro_vae)
    out = pipe("a cat", height=64, width=48, num_inference_steps=2, guidance_scale=1.0,
               generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (1, 64, 48, 3)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def _deterministic(vae):
    """`vae` with a near-zero posterior std (logvar = -30), as a trained VAE has: pipelines encode with posterior
    *samples*, and a random VAE's std of ~1 would swamp the comparison with its posterior mean."""
    c = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[c:] = 0
        vae.quant_conv.bias[c:] = -30
    return vae


def test_img2img_with_tiny_strength_is_nearly_the_vae_round_trip(components, micro_vae):
    from diffusers import StableDiffusionImg2ImgPipeline

    vae = _deterministic(_variant(micro_vae))
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    sf, _ = estimate_scale_factor(vae, x, sample=False, progress=False)
    vae.register_to_config(scaling_factor=sf)  # unit-variance latents, as for a real pipeline
    pipe = swap_vae(StableDiffusionImg2ImgPipeline(**components), vae)
    pipe.set_progress_bar_config(disable=True)

    def run(strength):  # 10 steps at t = 901, 801, ..., 1; strength s runs the last 10 * s of them
        return pipe("a cat", image=x, strength=strength, num_inference_steps=10, guidance_scale=1.0,
                    generator=torch.Generator().manual_seed(0), output_type="pt").images

    roundtrip = reconstruct(vae, x)
    near = run(0.1)  # 1 DDIM step from t=1: noise std sqrt(1 - alphas_cumprod[1]) ~ 0.04 of the latent std
    far = run(0.5)
    assert near.shape == roundtrip.shape == (1, 3, 32, 32)
    err = (near - roundtrip).abs().mean().item()
    # The only differences are the t=1 noise and one step of a random UNet, both ~4% of the latent std: through
    # the decoder that is ~0.006 mean absolute error (measured), against ~0.09 for strength 0.5.
    assert err < 0.015, err
    assert err < 0.2 * (far - roundtrip).abs().mean().item()


def test_inpaint_pipeline_takes_4_channel_vae_for_9_channel_unet(tmp_path, micro_vae):
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline(**_components(tmp_path, _variant(micro_vae), unet_in=9))
    assert accepted_latent_channels(pipe) == {9, 4}
    swap_vae(pipe, micro_vae)
    with pytest.raises(LatentkitError, match="8 latent channels.*in_channels=9"):
        swap_vae(pipe, _variant(micro_vae, latent_channels=8))


def test_swap_vae_refuses_wrong_channels_and_downsampling(components, micro_vae):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**components)
    before = pipe.vae
    with pytest.raises(LatentkitError, match="8 latent channels.*takes 4"):
        swap_vae(pipe, _variant(micro_vae, latent_channels=8))
    three = _variant(micro_vae, block_out_channels=[8, 16, 16], down_block_types=["DownEncoderBlock2D"] * 3,
                     up_block_types=["UpDecoderBlock2D"] * 3)
    with pytest.raises(LatentkitError, match="downsamples by 4.*vae_scale_factor=8"):
        swap_vae(pipe, three)
    assert pipe.vae is before  # nothing swapped on refusal


def test_swap_vae_matches_pipeline_dtype(components, micro_vae):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**{**components, "unet": _variant_unet(components["unet"], torch.float16)})
    swap_vae(pipe, _variant(micro_vae))
    assert pipe.vae.dtype == torch.float16 and pipe.components["vae"] is pipe.vae


def _variant_unet(unet, dtype):
    from diffusers import UNet2DConditionModel

    copy = UNet2DConditionModel.from_config(unet.config)
    copy.load_state_dict(unet.state_dict())
    return copy.to(dtype)


_STOCK_LOAD = """
import hashlib, json, sys, torch
from diffusers import AutoencoderKL
vae = AutoencoderKL.from_pretrained(sys.argv[1])
assert "latentkit" not in sys.modules
h = hashlib.sha256()
for k, v in sorted(vae.state_dict().items()):
    h.update(k.encode()); h.update(v.to(torch.float32).contiguous().numpy().tobytes())
print(json.dumps({"scaling_factor": vae.config.scaling_factor,
                  "shift_factor": vae.config.shift_factor, "sha256": h.hexdigest()}))
"""


def test_pipeline_folder_loads_as_codec_and_exports_for_stock_diffusers(tmp_path, components, micro_vae):
    from diffusers import StableDiffusionPipeline

    pipe_dir = tmp_path / "pipe"
    StableDiffusionPipeline(**{**components, "vae": micro_vae}).save_pretrained(pipe_dir)
    want = weights_sha256(micro_vae)
    assert weights_sha256(load_vae(pipe_dir)) == weights_sha256(load_vae(pipe_dir / "vae")) == want

    out = tmp_path / "exported"
    out.mkdir()
    (out / "MODEL_CARD.md").write_text("card")
    assert cli.main(["export", str(out), "--model", str(pipe_dir), "--dtype", "fp16", "--scaling-factor", "0.5",
                     "--shift-factor", "0.25"]) == 0
    assert (out / "MODEL_CARD.md").read_text() == "card"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", _STOCK_LOAD, str(out)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    from safetensors.torch import load_file

    assert {v.dtype for v in load_file(out / "diffusion_pytorch_model.safetensors").values()} == {torch.float16}
    assert (got["scaling_factor"], got["shift_factor"]) == (0.5, 0.25)
    fp16 = _variant(micro_vae)
    fp16.load_state_dict({k: v.half().float() for k, v in micro_vae.state_dict().items()})
    assert got["sha256"] == weights_sha256(fp16)  # the same weights, rounded to fp16


def test_export_refuses_to_overwrite_its_input(tmp_path, micro_vae, capsys):
    export(_variant(micro_vae), tmp_path / "m")
    assert cli.main(["export", str(tmp_path / "m"), "--model", str(tmp_path / "m")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path), "--model", str(tmp_path / "m")]) == 2  # nor a folder holding it
    assert "refusing to overwrite" in capsys.readouterr().err


def test_scale_factor_is_one_over_latent_std(micro_vae):
    # references are encoded in the same batches: CPU convolutions differ slightly with the batch size
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    z = encode(micro_vae, x).double()
    scale, shift = estimate_scale_factor(micro_vae, x, sample=False, batch_size=3, progress=False)
    assert shift is None
    assert scale == pytest.approx(1 / z.std(unbiased=False).item(), rel=1e-9)
    z1 = torch.cat([encode(micro_vae, xi[None]).flatten() for xi in x]).double()
    scale1, shift1 = estimate_scale_factor(micro_vae, list(x), sample=False, shift=True, progress=False)
    assert scale1 == pytest.approx(1 / z1.std(unbiased=False).item(), rel=1e-9)
    assert shift1 == pytest.approx(z1.mean().item(), abs=1e-9)
    sampled, _ = estimate_scale_factor(micro_vae, x, sample=True, batch_size=3, progress=False)
    assert sampled < scale  # posterior samples add the posterior variance


def test_scale_factor_cli_json_and_write(tmp_path, micro_vae, capsys):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(data / f"{i}.png")
    export(_variant(micro_vae), tmp_path / "m")
    out = tmp_path / "scaled"
    assert cli.main(["scale-factor", "--model", str(tmp_path / "m"), "--data", str(data), "--limit", "2", "--mean",
                     "--shift", "--write", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    from latentkit.io import read_image

    imgs = [read_image(data / f"{i}.png").batch() for i in range(2)]
    z = torch.cat([encode(micro_vae, x).flatten() for x in imgs]).double()
    assert result["scaling_factor"] == pytest.approx(1 / z.std(unbiased=False).item(), rel=1e-6)
    assert result["shift_factor"] == pytest.approx(z.mean().item(), abs=1e-6)
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["scaling_factor"], cfg["shift_factor"]) == (result["scaling_factor"], result["shift_factor"])
    assert cli.main(["scale-factor", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "nowhere")]) == 2


def test_accepted_latent_channels_for_packed_and_pix2pix_layouts():
    from types import SimpleNamespace

    def den(cin, cout=None):
        return SimpleNamespace(config=SimpleNamespace(in_channels=cin, out_channels=cout))

    class FluxFillLike:  # packs 2x2 latent patches; the input also carries the mask and the masked image
        transformer = den(384, 64)

        def _pack_latents(self):
            pass

    class StableDiffusionInstructPix2PixLike:
        unet = den(8, 4)

    assert accepted_latent_channels(FluxFillLike()) == {16}
    assert accepted_latent_channels(StableDiffusionInstructPix2PixLike()) == {8, 4}


# -- single-file (SD/LDM layout) export --------------------------------------------------------------------------
def test_ldm_keys_round_trip_through_diffusers_converter(micro_vae):
    """to_ldm_state_dict is the exact inverse of diffusers' own LDM -> diffusers converter."""
    from latentkit.model import convert_ldm_state_dict, to_ldm_state_dict

    ldm = to_ldm_state_dict(micro_vae)
    assert "encoder.down.0.block.0.conv1.weight" in ldm and "decoder.up.0.block.0.conv1.weight" in ldm
    assert "quant_conv.weight" in ldm and "post_quant_conv.weight" in ldm
    assert ldm["encoder.mid.attn_1.q.weight"].ndim == 4  # 1x1 convolutions, as in the original checkpoints
    back, sd = convert_ldm_state_dict(ldm), micro_vae.state_dict()
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def test_ldm_export_loads_in_diffusers_from_single_file_and_latentkit(tmp_path, micro_vae, capsys, monkeypatch):
    from diffusers import AutoencoderKL

    model_dir = save_vae(micro_vae, tmp_path / "m")
    out = tmp_path / "vae.safetensors"
    assert cli.main(["export", str(out), "--model", str(model_dir), "--format", "ldm"]) == 0
    assert "ComfyUI" in capsys.readouterr().out  # the micro model has 4 GroupNorm groups, not SD's 32: said so
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    stock = AutoencoderKL.from_single_file(str(out), config=str(model_dir), local_files_only=True).eval()
    ours = load_vae(out)
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        ref = micro_vae(x).sample
        assert torch.equal(stock(x).sample, ref)
    assert weights_sha256(ours) == weights_sha256(micro_vae) and ours.config.norm_num_groups == 4
    capsys.readouterr()
    before = out.read_bytes()
    assert cli.main(["export", str(out), "--model", str(model_dir), "--format", "ldm"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and err.count("\n") == 1 and out.read_bytes() == before
    assert cli.main(["export", str(out), "--model", str(model_dir), "--format", "ldm", "--overwrite",
                     "--dtype", "fp16"]) == 0
    from safetensors.torch import load_file

    assert {v.dtype for v in load_file(out).values()} == {torch.float16}

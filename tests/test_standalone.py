"""The standalone network (latentkit/standalone.py) against diffusers' AutoencoderKL: same weights, same bits."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from PIL import Image as PILImage

from latentkit import model as M
from latentkit import runtime, standalone
from latentkit.errors import LatentkitError

#: configs that differ in every way the standalone network builds differently (blocks, layers, groups, no
#: mid-block attention, no quant convs)
VARIANTS = {
    "micro": dict(block_out_channels=[8, 16, 16, 16], layers_per_block=1, norm_num_groups=4),
    "two_layers_three_blocks": dict(block_out_channels=[8, 16, 24], layers_per_block=2, norm_num_groups=8),
    "no_attention_no_quant": dict(block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=2,
                                  mid_block_add_attention=False, use_quant_conv=False, use_post_quant_conv=False),
}


def _pair(cfg: dict, seed: int = 0) -> tuple[AutoencoderKL, standalone.StandaloneAutoencoderKL]:
    full = M.config_dict("tiny")
    full.update(cfg)
    n = len(full["block_out_channels"])
    full.update(down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n)
    ref = M.make_vae(full, seed=seed)
    # random non-trivial GroupNorm affine and biases, so that no term can vanish by its initial value
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(p + 0.1 * torch.randn(p.shape, generator=g))
    ref.eval().requires_grad_(False)
    mine, missing, unexpected = standalone.StandaloneAutoencoderKL.from_state_dict(full, ref.state_dict())
    assert missing == [] and unexpected == []
    return ref, mine.eval().requires_grad_(False)


def _network_outputs(net, x: torch.Tensor, z: torch.Tensor, fast: bool) -> list[torch.Tensor]:
    """Posterior mean and logvar of images `x` in [0, 1] and the decoding of latents `z`, each network's own
    forward under the fast path's context (or plain fp32)."""
    with runtime.inference("cpu", fast):
        post = net.encode(runtime.prepare_input(x * 2 - 1, fast)).latent_dist
        return [post.mean.clone(), post.logvar.clone(), net.decode(runtime.prepare_input(z, fast)).sample.clone()]


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_weights_and_bits_as_diffusers(variant):
    ref, mine = _pair(VARIANTS[variant])
    assert {k: v.shape for k, v in mine.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert M.model_id(mine) == M.model_id(ref)
    g = torch.Generator().manual_seed(1)
    x, z = torch.rand(2, 3, 40, 56, generator=g), torch.randn(2, 4, 5, 7, generator=g)
    for fast in (False, True):
        theirs, ours = _network_outputs(ref, x, z, fast), _network_outputs(mine, x, z, fast)
        assert all(torch.equal(a, b) for a, b in zip(theirs, ours)), fast
        assert all(torch.equal(a, b) for a, b in zip(theirs, _network_outputs(standalone.view_of(ref), x, z, fast)))


def test_view_shares_the_weights_and_steps_aside(micro_vae):
    from diffusers.models.attention_processor import AttnProcessor

    ref, _ = _pair(VARIANTS["micro"], seed=4)
    view = standalone.view_of(ref)
    theirs = dict(ref.named_parameters())
    assert all(p is theirs[k] for k, p in view.named_parameters()) and standalone.view_of(ref) is view
    x = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0))
    before = M.encode(ref, x)
    with torch.no_grad():
        ref.encoder.conv_in.weight.mul_(2)  # an in-place update shows through
    assert not torch.equal(M.encode(ref, x), before) and standalone.view_of(ref) is view
    ref.decoder.conv_in = torch.nn.Conv2d(4, 16, 3, padding=1)  # a replaced module: a new view
    assert standalone.view_of(ref) is not view
    renamed = M.make_vae({**M.config_dict("tiny"), **VARIANTS["micro"]})
    renamed.decoder.conv_in = torch.nn.Sequential(renamed.decoder.conv_in)  # weights under other names
    assert standalone.view_of(renamed) is None
    ref.set_attn_processor(AttnProcessor())  # a processor it does not implement: diffusers' own forward
    assert standalone.view_of(ref) is None
    z = M.encode(ref, x)
    assert torch.equal(M.decode(ref, z), _network_outputs(ref, x, z, True)[2].float().add(1).div(2).clamp(0, 1))


def test_in_place_ops_only_without_autograd():
    _, mine = _pair(VARIANTS["micro"], seed=5)
    mine.requires_grad_(True)
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = mine.decode(mine.encode(x).latent_dist.mean).sample
    out.square().mean().backward()  # in-place SiLU on a tensor autograd saved would raise here
    assert mine.encoder.conv_in.weight.grad is not None
    with torch.inference_mode():
        assert torch.equal(mine.decode(mine.encode(x).latent_dist.mean).sample, out.detach())


def test_tiled_paths_give_the_same_bits(micro_vae):
    ref, mine = _pair(VARIANTS["micro"], seed=3)
    x = torch.rand(1, 3, 96, 80, generator=torch.Generator().manual_seed(2))
    from latentkit import tiling

    with torch.inference_mode():
        a, b = (tiling.encode_tiled(m, x * 2 - 1, tile_px=32, attn_max_tokens=16) for m in (ref, mine))
        assert torch.equal(a.mean, b.mean) and torch.equal(a.logvar, b.logvar)
        za, zb = (tiling.decode_tiled(m, a.mean, tile_px=32, attn_max_tokens=16) for m in (ref, mine))
    assert torch.equal(za, zb)


def test_defaults_are_diffusers_defaults():
    params = inspect.signature(AutoencoderKL.__init__).parameters
    theirs = {k: (list(p.default) if isinstance(p.default, tuple) else p.default)
              for k, p in params.items() if k != "self"}
    assert standalone.DEFAULTS == theirs


def test_posterior_matches_diffusers_distribution():
    params = torch.randn(2, 8, 5, 7, generator=torch.Generator().manual_seed(0)) * 20  # logvar clamps too
    ours, theirs = standalone.DiagonalGaussian(params), DiagonalGaussianDistribution(params)
    for attr in ("mean", "logvar", "std", "var"):
        assert torch.equal(getattr(ours, attr), getattr(theirs, attr)), attr
    assert torch.equal(ours.kl(), theirs.kl()) and torch.equal(ours.mode(), theirs.mode())
    a = ours.sample(torch.Generator().manual_seed(5))
    b = theirs.sample(torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_supports_only_what_it_builds():
    assert standalone.supports(M.config_dict("sd")) and standalone.supports({})
    assert not standalone.supports({**M.config_dict("tiny"), "act_fn": "gelu"})
    cfg = M.config_dict("tiny")
    cfg["up_block_types"] = ["UpDecoderBlock2D"] * 3 + ["AttnUpDecoderBlock2D"]
    assert not standalone.supports(cfg)


def test_load_vae_standalone_and_fallback(tmp_path, micro_vae):
    folder = M.save_vae(micro_vae, tmp_path / "m", dtype=torch.float16)
    vae = M.load_vae(folder, standalone=True)
    assert isinstance(vae, standalone.StandaloneAutoencoderKL)
    assert vae.dtype == torch.float32 and not any(p.requires_grad for p in vae.parameters())
    assert M.model_id(vae) == M.model_id(M.load_vae(folder))
    assert vae.config.scaling_factor == micro_vae.config.scaling_factor and vae.config.shift_factor is None
    single = tmp_path / "m.safetensors"
    from safetensors.torch import save_file

    save_file(dict(micro_vae.state_dict()), single)  # diffusers keys, no stored config: groups inferred as 32
    with pytest.raises(LatentkitError):  # 16 channels in 32 groups: GroupNorm refuses
        M.load_vae(single, standalone=True)
    # a config the standalone network does not build loads as diffusers' model
    gelu = M.make_vae({**M.config_dict("tiny"), **VARIANTS["micro"], "act_fn": "gelu"})
    other = M.load_vae(M.save_vae(gelu, tmp_path / "gelu"), standalone=True)
    assert isinstance(other, AutoencoderKL)


def test_missing_weights_are_one_clear_error(tmp_path, micro_vae):
    from safetensors.torch import save_file

    folder = M.save_vae(micro_vae, tmp_path / "m")
    sd = {k: v for k, v in micro_vae.state_dict().items() if not k.startswith("decoder.conv_out")}
    save_file(sd, folder / M.WEIGHTS_FILE)
    with pytest.raises(LatentkitError, match="weights missing, e.g. decoder.conv_out"):
        M.load_vae(folder, standalone=True)


def test_shipped_weights_same_bits_on_a_photo():
    ref, mine = M.load_vae("codec"), M.load_vae("codec", standalone=True)
    x = torch.from_numpy(np.array(PILImage.open(M.REPO_WEIGHTS.parent / "docs" / "demo" / "kodim23.png")
                                    .convert("RGB"))[:128, :192]).permute(2, 0, 1).float() / 255
    z = M.encode(ref, x)
    assert torch.equal(M.encode(mine, x), z)
    assert torch.equal(M.decode(mine, z), M.decode(ref, z))


@pytest.mark.parametrize("job", ["roundtrip", "encode", "decode", "info"])
def test_model_commands_do_not_import_diffusers(job, tmp_path, micro_vae):
    folder = M.save_vae(micro_vae, tmp_path / "m")
    src = tmp_path / "in.png"
    PILImage.fromarray(np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(src)
    from latentkit.cli import main

    assert main(["encode", str(src), "-o", str(tmp_path / "a.latent"), "--model", str(folder)]) == 0
    argv = {"roundtrip": ["roundtrip", str(src), "-o", str(tmp_path / "r.png")],
            "encode": ["encode", str(src), "-o", str(tmp_path / "b.latent")],
            "decode": ["decode", str(tmp_path / "a.latent"), "-o", str(tmp_path / "d.png")], "info": ["info"]}[job]
    code = ("import sys\nfrom latentkit.cli import main\nrc = main(sys.argv[1:])\n"
            "print('RESULT', rc, 'diffusers' in sys.modules, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, *argv, "--model", str(folder)], capture_output=True, text=True,
                       timeout=600)
    assert r.stdout.strip().splitlines()[-1] == "RESULT 0 False True", r.stderr

"""Models with other downsampling factors than SD's 8 (f4: 3 blocks, f16: 5 blocks) work end to end: encode,
decode, reconstruct, the codec and tiling all take the factor from latentkit.model.downsampling_factor."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import tiled_with_exact_statistics
from latentkit import model, tiling
from latentkit.codec import compress, decompress
from latentkit.io import Image


def _vae(blocks: int):
    cfg = model.config_dict("tiny")
    cfg.update(block_out_channels=[8, 16, 16, 16, 16][:blocks], layers_per_block=1, norm_num_groups=4,
               down_block_types=["DownEncoderBlock2D"] * blocks, up_block_types=["UpDecoderBlock2D"] * blocks)
    return model.make_vae(cfg, seed=0).eval().requires_grad_(False)


@pytest.mark.parametrize("blocks,factor", [(3, 4), (5, 16)])
def test_other_downsampling_factors_end_to_end(blocks, factor):
    vae = _vae(blocks)
    assert model.downsampling_factor(vae) == factor
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 9, 13, generator=g), size=(37, 52), mode="bicubic",
                                        align_corners=False).clamp(0, 1)
    h, w = math.ceil(37 / factor), math.ceil(52 / factor)
    assert model.latent_shape(vae, 52, 37) == (4, h, w)
    z = model.encode(vae, x)
    assert z.shape == (1, 4, h, w)
    assert model.decode(vae, z).shape == (1, 3, factor * h, factor * w)
    assert model.reconstruct(vae, x).shape == x.shape

    back = decompress(compress(Image(x[0]), vae, quality=90), vae)
    assert back.rgb.shape == x[0].shape

    # tiling: with whole-image GroupNorm statistics, 32 px tiles reproduce the untiled encoder body exactly (the
    # halo and the output scale follow the factor); the tiled decoder gives the untiled output size
    big = torch.nn.functional.interpolate(x, size=(96, 128), mode="bicubic", align_corners=False).clamp(0, 1) * 2 - 1
    tiled, _ = tiling.encoder_parts(vae)
    with torch.inference_mode():
        ref = tiling.run_parts(tiled, big)
        out = tiled_with_exact_statistics(tiled, big, 32, tiling.encoder_halo_px(vae), 1 / factor)
        assert tiling.encode_tiled(vae, big, tile_px=32).mean.shape == z.shape[:2] + (96 // factor, 128 // factor)
        zb = vae.encode(big).latent_dist.mean
        assert tiling.decode_tiled(vae, zb, tile_px=32).shape == big.shape
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)

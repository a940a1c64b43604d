"""Shared fixtures: tiny models and small images, so the default suite stays fast on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SKIP_NO_SHARED = "../shared (the workspace's data folder beside the clone, see README 'Tests') is absent"


def shared_path(*parts: str) -> Path:
    """A file or folder under ../shared; the calling test is skipped, saying so, when it is not there."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p}: {SKIP_NO_SHARED}")
    return p


def kodak(name: str) -> Path:
    """A Kodak image file, e.g. ``kodak("kodim05")``; skips the calling test when ../shared is absent."""
    return shared_path("data", "kodak", f"{name}.png")

#: a narrow AutoencoderKL of the SD layout (4 blocks, 8x downsampling, attention in the middle): ~0.1M params
MICRO_CONFIG = dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4)


@pytest.fixture(scope="session")
def micro_vae():
    from latentkit.model import config_dict, make_vae

    cfg = config_dict("tiny")
    cfg.update(MICRO_CONFIG)
    return make_vae(cfg, seed=0).eval().requires_grad_(False)


@pytest.fixture
def rand_images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 32, 48, generator=g)


def tiled_with_exact_statistics(modules, x: torch.Tensor, core: int, halo: int, scale_out: float):
    """`modules` (run in order, :func:`latentkit.tiling.run_parts`) run in tiles of `core` (+ `halo`) with the
    GroupNorm statistics of the whole image: what tiling computes when its statistics are perfect, so any
    difference from the untiled ``run_parts(modules, x)`` is the halo's."""
    from latentkit import tiling

    def body(t):
        return tiling.run_parts(modules, t)

    whole = tiling._GroupNormStats(modules)  # one tile = the whole image: exact statistics after pass 1
    tiling._run_tiled(body, x, 1 << 20, 0, scale_out, 2, whole, "stats")
    assert whole.sums == {}  # the last pass collects nothing
    tiled = tiling._GroupNormStats(modules)
    tiled.stats = whole.stats
    return tiling._run_tiled(body, x, core, halo, scale_out, 1, tiled, "tiles")

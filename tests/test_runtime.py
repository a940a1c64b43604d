"""The fast CPU path (latentkit.runtime) through model.encode/decode, on the micro model."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from latentkit import model, runtime
from latentkit.metrics.psnr import psnr


def test_fast_dtype_follows_the_cpu():
    assert runtime.fast_dtype("cpu", fast=False) is None
    assert runtime.fast_dtype("cpu") == (torch.bfloat16 if runtime.cpu_has_bf16() else None)


def test_prepare_input_is_channels_last_only_when_fast():
    x = torch.rand(1, 3, 8, 8)
    assert runtime.prepare_input(x).is_contiguous(memory_format=torch.channels_last)
    assert runtime.prepare_input(x, fast=False) is x


@pytest.mark.skipif(not runtime.cpu_has_bf16(), reason="no native bf16 on this CPU: fast path is fp32")
def test_fast_path_close_to_fp32(micro_vae):
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 12, generator=g), size=(64, 96), mode="bicubic")
    x = x.clamp(0, 1)
    ref = model.decode(micro_vae, model.encode(micro_vae, x, fast=False), fast=False)
    fast = model.decode(micro_vae, model.encode(micro_vae, x))
    assert not torch.equal(ref, fast)  # really a different (bf16) path
    assert psnr(ref, fast).item() > 35  # bf16 has 8 mantissa bits: ~48 dB per op, a few dB lost over the net


def test_fast_path_is_deterministic(micro_vae, rand_images):
    z1, z2 = model.encode(micro_vae, rand_images), model.encode(micro_vae, rand_images)
    assert torch.equal(z1, z2) and z1.dtype == torch.float32 and z1.is_contiguous()
    assert torch.equal(model.decode(micro_vae, z1), model.decode(micro_vae, z2))


def test_inputs_one_latent_column_wide_take_the_fp32_path(micro_vae):
    """oneDNN's bf16 stride-2 convolutions give garbage (sometimes NaN) when their output is one column wide
    and >= 3 rows high: an 8 x 40 image once encoded to NaN latents (runtime.strided_convs_safe)."""
    x = torch.rand(1, 3, 40, 8, generator=torch.Generator().manual_seed(2))
    z = model.encode(micro_vae, x)
    assert torch.equal(z, model.encode(micro_vae, x, fast=False))
    assert runtime.strided_convs_safe(16, 8) and not runtime.strided_convs_safe(8, 8)
    if runtime.cpu_has_bf16():  # the fault itself, so the guard goes once PyTorch fixes it
        conv = torch.nn.Conv2d(128, 8, 3, stride=2)
        x = torch.randn(1, 128, 21, 3, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            ref, bf16 = conv(x), conv.bfloat16()(x.bfloat16()).float()
        assert not (bf16 - ref).abs().max() < 0.1


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_fast_path_makes_malloc_keep_freed_memory_unless_told_not_to():
    """The fast path's first use applies runtime.keep_freed_memory (process-wide, so fresh processes);
    LATENTKIT_KEEP_FREED_MEMORY=0 leaves glibc's defaults. Its effect (page faults, time) is measured by
    `scripts/bench_speed.py --sections malloc`."""
    code = ("from latentkit import runtime\n"
            "assert runtime.keep_freed_memory.cache_info().currsize == 0\n"
            "with runtime.inference('cpu'):\n"
            "    pass\n"
            "print(runtime.keep_freed_memory.cache_info().currsize, runtime.keep_freed_memory())\n")
    for keep, want in (("1", "1 True"), ("0", "1 False")):
        env = {**os.environ, "LATENTKIT_KEEP_FREED_MEMORY": keep}
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        assert r.stdout.split() == want.split()

"""The fast CPU inference path used by :func:`latentkit.model.encode` / :func:`~latentkit.model.decode`.

What it does (what each piece buys, measured per CPU family: README "Performance" and `scripts/bench_speed.py`):

- ``torch.inference_mode`` instead of plain autograd (no graph, no version counters);
- the network of :mod:`latentkit.standalone` (a diffusers model runs through :func:`~latentkit.standalone.view_of`
  on its own weights: the same bits, with SiLUs and residual sums computed in place);
- channels_last activations: the input is made channels_last and every oneDNN convolution keeps that
  layout, which avoids per-layer reorders (the model's own weights are not touched);
- bfloat16 autocast where the CPU has native bf16 (``avx512_bf16`` / AMX); elsewhere fp32. Convolutions,
  matmuls and GroupNorm run in bf16; results come back as float32;
- glibc keeps freed memory for reuse (:func:`keep_freed_memory`, on the first fast-path call): by default it
  hands every large tensor's pages back to the OS when the tensor dies and takes the page faults again for the
  next one (65,000-105,000 minor page faults per 512x512-768x512 decode; README "Performance").

``torch.compile`` is not used (its warm-up costs more than one image's inference saves). The thread count is
PyTorch's default (one per physical core). The output of a given path is deterministic on a given machine and
thread count (same input, same bits), which the codec relies on.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from functools import lru_cache

import torch


@lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """True when oneDNN can run bfloat16 natively on this CPU (otherwise bf16 would be emulated and slow)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fast_dtype(device: torch.device | str, fast: bool = True) -> torch.dtype | None:
    """The autocast dtype of the fast path on `device` (``torch.bfloat16``), or None for plain fp32."""
    return torch.bfloat16 if fast and torch.device(device).type == "cpu" and cpu_has_bf16() else None


#: glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: allocations below this come from the heap, which keeps them (glibc's largest threshold, 64-bit)
MMAP_THRESHOLD = 32 << 20
#: set to "0" to leave glibc's malloc settings alone
KEEP_MEMORY_ENV = "LATENTKIT_KEEP_FREED_MEMORY"


@lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse, for the whole process: allocations up to
    :data:`MMAP_THRESHOLD` come from the heap instead of fresh pages, and freed heap memory is not handed back to
    the OS (trim threshold 2 GiB). Without this every activation's pages are faulted in again on each layer and
    call. The cost: the process keeps its peak heap instead of shrinking after a large image. Returns whether it
    was applied (not on other C libraries, or with ``LATENTKIT_KEEP_FREED_MEMORY=0``); called once, by the fast
    path's first use."""
    if os.environ.get(KEEP_MEMORY_ENV, "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


@contextlib.contextmanager
def inference(device: torch.device | str, fast: bool = True) -> Iterator[None]:
    """Context for encode/decode: inference mode, plus bf16 autocast when `fast` and supported; the fast CPU
    path also makes malloc keep freed memory (:func:`keep_freed_memory`)."""
    dtype = fast_dtype(device, fast)
    if fast and torch.device(device).type == "cpu":
        keep_freed_memory()
    with torch.inference_mode():
        if dtype is None:
            yield
        else:
            with torch.autocast(torch.device(device).type, dtype=dtype):
                yield


def strided_convs_safe(width: int, factor: int) -> bool:
    """Whether the fast path may run an encoder on an input `width` pixels wide (padded to a multiple of its
    downsampling `factor`). oneDNN's bf16 stride-2 convolutions (PyTorch 2.13, seen on an AMX Xeon) return
    garbage, sometimes NaN, when their output is one column wide and three or more rows high (fp32 is right): an
    encoder's last downsampler is one column wide when the input is `factor` pixels wide, so such inputs (at most
    8 px wide) take the fp32 path."""
    return width > factor


def prepare_input(x: torch.Tensor, fast: bool = True) -> torch.Tensor:
    """The network input in the fast path's memory layout (channels_last on CPU when `fast`)."""
    if fast and x.device.type == "cpu" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x

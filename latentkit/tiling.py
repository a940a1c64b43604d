"""Encode and decode images of any size in tiles, with bounded memory and no seams.

Naive tiles disagree with the untiled network for two reasons, and this module handles both:

1. **GroupNorm** normalises with statistics over the *whole* feature map. Every GroupNorm in the tiled part
   is temporarily replaced by a variant that (a) accumulates per-group statistics over every tile and (b)
   normalises with fixed whole-image statistics when it has them. The first pass normalises each tile with
   its own statistics and only collects; each following pass uses the statistics of the pass before
   (``passes`` in total, the last one produces the output). Two passes get within ~0.1 dB of exact
   statistics (see tests). Only the output pass needs halos: a statistics pass runs on the tile cores alone
   when they are at least ``CORE_STATS_MIN_RATIO`` times the halo (512 px tiles: 64 latent positions against
   the default decoder's 5), so it counts every pixel once and computes no overlap. With halos, pixels near
   tile borders counted twice, and that bias outweighed what the zero padding at bare core borders adds: on
   2048x2048 photo mosaics (512 px tiles) tiled decoding went from 51.2-52.1 to 54.5-56.1 dB against untiled
   and from 1.29-1.37x to 1.21-1.29x its time; 768x512 images with 256 px tiles gained 0.8-2.9 dB decoding
   and 2.5-5.6 dB encoding (session 20; README, "Large images"). With smaller cores the padding wins
   (128 px tiles: 43.5 against 48.6 dB decoding; the micro test's 64 px tiles: 31.6 against 45.2 dB), so
   they keep their halos. GroupNorm's kernel returns a tile's statistics with the normalised tile, so the
   first pass costs about one untiled pass over the tiled part, where ``var_mean`` over each core cost
   5-15x the GroupNorm (session 13).
2. **Receptive field**: each tile is its core plus a halo that covers the convolutions' receptive field,
   and only the core is kept (halo cropping, no blending), so with exact statistics a tile's core is
   exactly what the untiled network computes there.

Everything at latent resolution (8x smaller per side) runs on the whole image, exactly as in the untiled
network: the mid-block (with its self-attention), the last down block's resnets and the first up block's
(:func:`encoder_parts`, :func:`decoder_parts`). Only the parts above latent resolution are tiled, so their
GroupNorm statistics are the only estimated ones, and the halo covers only their receptive field: 5 latent
positions (40 px) for the default model's decoder instead of 9 when the first up block's resnets were tiled
too, and 32 px instead of 48 for its encoder. In one run on 2048x2048 and 1536x1536 mosaics with 512 px tiles
that took tiled decoding from 1.55-2.19x to 1.28-1.68x the untiled time at the same agreement (README, "Large
images"). Above ``attn_max_tokens`` latent positions the attention's keys/values are average-pooled to at most
that many tokens (queries stay full resolution): a documented approximation that keeps the attention cost at
O(N * attn_max_tokens) instead of O(N^2).

Peak memory is one tile's activations plus the latent-resolution features (128 channels for the default model,
those of the widest block for others) and the output image.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .model import downsampling_factor
from .standalone import DiagonalGaussian

if TYPE_CHECKING:  # type hints only: commands run the model without importing diffusers
    from diffusers import AutoencoderKL

#: Automatic tiling: an untiled pass is used when its estimated extra memory fits MEMORY_BUDGET (and half the
#: memory the system has available). The estimate is BYTES_PER_ELEMENT x pixels x block_out_channels[0], the
#: widest full-resolution activation, with the factor measured as the growth of peak RSS over the loaded model
#: (default weights on the bf16 fast path, 1024^2 to 2048^2: decode 12.6-13.0 bytes, encode 8.1-8.5 bytes, so
#: decode 2048x2048 adds 1.70 GB untiled): 2048x2048 decodes untiled for the default model (32 channels),
#: about 1 MPx for the SD VAE (128 channels).
MEMORY_BUDGET = 2 << 30
BYTES_PER_ELEMENT = {"encode": 9, "decode": 13}
#: Tile core size in pixels (a multiple of 8).
DEFAULT_TILE_PX = 512
#: Above this many latent positions the mid-block attention uses pooled keys/values.
DEFAULT_ATTN_MAX_TOKENS = 65536
#: A statistics pass runs on the tile cores alone (no halos) when the core is at least this many times the halo
#: (see the module docstring); below that, zero padding at the core borders would bias the statistics more than
#: the overlap of halos does.
CORE_STATS_MIN_RATIO = 4
#: Number of tiled passes (statistics are refined by all but the last; the last produces the output).
DEFAULT_PASSES = 2


def available_memory() -> int | None:
    """Bytes of memory the system has available (``MemAvailable`` of /proc/meminfo), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def untiled_bytes(vae: AutoencoderKL, height: int, width: int, op: str = "decode") -> int:
    """Estimated extra memory (bytes) of an untiled ``op`` ("encode" or "decode") of a `height` x `width` image."""
    return BYTES_PER_ELEMENT[op] * height * width * vae.config.block_out_channels[0]


def should_tile(vae: AutoencoderKL, height: int, width: int, op: str = "decode") -> bool:
    """Whether an untiled ``op`` of a `height` x `width` image would pass the memory budget (MEMORY_BUDGET, or
    half the available memory when that is less): then it is tiled."""
    budget = MEMORY_BUDGET
    avail = available_memory()
    if avail is not None:
        budget = min(budget, avail // 2)
    return untiled_bytes(vae, height, width, op) > budget


def encoder_parts(vae: AutoencoderKL) -> tuple[list[torch.nn.Module], list[torch.nn.Module]]:
    """The encoder split for tiling: (tiled modules: ``conv_in`` and the down blocks above latent resolution, the
    last of them downsampling to it; whole-image modules: the last down block, at latent resolution (an encoder's
    final block has no downsampler), which then feeds the mid-block). Run in order, the two lists are the encoder
    up to its mid-block."""
    enc = vae.encoder
    return [enc.conv_in, *enc.down_blocks[:-1]], [enc.down_blocks[-1]]


def decoder_parts(vae: AutoencoderKL) -> tuple[list[torch.nn.Module], list[torch.nn.Module]]:
    """The decoder split for tiling: (whole-image modules after the mid-block: the resnets of the first up block,
    at latent resolution; tiled modules: that block's upsampler, the other up blocks and ``conv_norm_out``, then
    ``conv_act`` and ``conv_out``)."""
    dec = vae.decoder
    first = dec.up_blocks[0]
    tail = [*dec.up_blocks[1:], dec.conv_norm_out, dec.conv_act, dec.conv_out]
    return list(first.resnets), list(first.upsamplers or []) + tail


def run_parts(modules: Sequence[torch.nn.Module], t: torch.Tensor) -> torch.Tensor:
    """`t` through `modules` in order (resnets and up blocks get diffusers' ``temb=None``)."""
    for m in modules:
        t = m(t, None) if _takes_temb(m) else m(t)
    return t


def _takes_temb(m: torch.nn.Module) -> bool:
    """Whether `m` is a resnet or an up block (diffusers' and the standalone network's), called with ``temb``."""
    return type(m).__name__ in ("ResnetBlock2D", "UpDecoderBlock2D")


def encoder_halo_px(vae: AutoencoderKL) -> int:
    """Receptive-field radius (pixels, rounded up to a multiple of the downsampling factor) of the encoder's
    tiled part (:func:`encoder_parts`): ``conv_in``, the down blocks above latent resolution (each 3x3 conv at
    scale s adds s pixels) and their stride-2 convs (2s each)."""
    n, layers, f = len(vae.config.block_out_channels), vae.config.layers_per_block, downsampling_factor(vae)
    r = 1 + sum(2 * layers * 2 ** i + 2 * 2 ** i for i in range(n - 1))
    return f * math.ceil(r / f)


def decoder_halo_latents(vae: AutoencoderKL) -> int:
    """Receptive-field radius (latent positions, rounded up) of the decoder's tiled part (:func:`decoder_parts`):
    the first up block's upsampling conv, the other up blocks (``layers_per_block + 1`` resnets of two 3x3 convs
    each, then an upsampling conv) and ``conv_out``."""
    n, layers = len(vae.config.block_out_channels), vae.config.layers_per_block
    r = sum(2 * (layers + 1) / 2 ** i for i in range(1, n)) + sum(1 / 2 ** (i + 1) for i in range(n - 1))
    return math.ceil(r + 1 / 2 ** (n - 1))


def _spans(size: int, core: int, halo: int) -> list[tuple[int, int, int, int]]:
    """(tile_start, tile_end, core_start, core_end) along one axis, in the same units as `size`."""
    return [(max(0, c - halo), min(size, c + core + halo), c, min(size, c + core)) for c in range(0, size, core)]


def _dense(x: torch.Tensor) -> torch.Tensor:
    """`x` (N x C x H x W) in the dense layout GroupNorm's kernel requires: contiguous or channels_last with
    standard strides. Upsampled channels_last maps of one image can carry an odd batch stride, which the kernel's
    layout check rejects (``F.group_norm`` copies them to NCHW); for N = 1 that stride is only relabelled."""
    if x.is_contiguous():
        return x
    n, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last):
        return x if x.stride(0) == c * h * w or n > 1 else x.as_strided(x.shape, (c * h * w, 1, w * c, c))
    return x.contiguous(memory_format=torch.channels_last if x.stride(1) == 1 else torch.contiguous_format)


class _GroupNormStats:
    """Swaps the ``forward`` of GroupNorm modules for one that collects whole-image statistics over tiles and
    normalises with fixed statistics once it has them (see the module docstring).

    Each tile, halo included, adds its per-group element count, mean and sum of squared deviations (M2), and
    tiles are merged with Chan et al.'s pairwise update, in float32 without float64 copies. They come from
    GroupNorm's own kernel (in the input's precision: bf16 on the fast path, as the untiled network computes
    them), which in the first pass also gives the tile normalised with them; a pass that has fixed statistics
    and still collects (only with ``passes`` > 2) discards that output. Set ``collect = False`` for the last
    pass, whose statistics nobody uses."""

    def __init__(self, modules: Sequence[torch.nn.Module]):
        self.norms = [m for root in modules for m in root.modules() if isinstance(m, torch.nn.GroupNorm)]
        self.stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.sums: dict[int, tuple[int, torch.Tensor, torch.Tensor]] = {}  # count, mean, M2 per group (N x G)
        self.collect = True

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        for i, m in enumerate(self.norms):
            m.forward = (lambda x, m=m, i=i: self._forward(m, i, x))
        try:
            yield
        finally:
            for m in self.norms:
                del m.forward

    def next_pass(self) -> None:
        """Turn the statistics collected so far into those the next pass normalises with."""
        self.stats = {i: (mean, m2 / count) for i, (count, mean, m2) in self.sums.items()}
        self.sums = {}

    def _merge(self, i: int, count: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Add one tile's group statistics (`count` elements per group; mean and M2: N x G, float32)."""
        if i not in self.sums:
            self.sums[i] = (count, mean, m2)
            return
        n_a, mean_a, m2_a = self.sums[i]
        total = n_a + count
        delta = mean - mean_a
        self.sums[i] = (total, mean_a + delta * (count / total), m2_a + m2 + delta.square() * (n_a * count / total))

    def _forward(self, m: torch.nn.GroupNorm, i: int, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = m.num_groups
        if self.collect:  # GroupNorm's kernel: the tile's group statistics beside the tile normalised with them
            out, mean, rstd = torch.ops.aten.native_group_norm(_dense(x), m.weight, m.bias, n, c, h * w, g, m.eps)
            count = h * w * (c // g)
            self._merge(i, count, mean.float(), (rstd.float().reciprocal().square() - m.eps).clamp_min(0) * count)
            if i not in self.stats:
                return out
        elif i not in self.stats:
            return F.group_norm(x, g, m.weight, m.bias, m.eps)
        mean, var = self.stats[i]
        per_group = c // g
        rstd = (var + m.eps).rsqrt().repeat_interleave(per_group, 1)  # N x C
        scale = rstd * m.weight.float()
        shift = m.bias.float() - mean.repeat_interleave(per_group, 1) * scale
        return torch.addcmul(shift.to(x.dtype)[..., None, None], x, scale.to(x.dtype)[..., None, None])


class _PooledKV:
    """Attention processor wrapper: keys/values from the group-normed input average-pooled to at most
    `max_tokens` positions (linear projections commute with average pooling, so this is exactly attention
    over a coarser key/value grid); queries stay full resolution."""

    def __init__(self, inner, max_tokens: int):
        self.inner, self.max_tokens = inner, max_tokens

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        h, w = hidden_states.shape[-2:]
        f = math.ceil(math.sqrt(h * w / self.max_tokens))
        if f > 1 and hidden_states.dim() == 4 and encoder_hidden_states is None:
            normed = attn.group_norm(hidden_states) if attn.group_norm is not None else hidden_states
            kv = F.avg_pool2d(normed, f, ceil_mode=True)
            encoder_hidden_states = kv.flatten(2).transpose(1, 2)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kw)


@contextlib.contextmanager
def _pooled_attention(mid_block: torch.nn.Module, max_tokens: int | None) -> Iterator[None]:
    attns = [a for a in getattr(mid_block, "attentions", []) if a is not None] if max_tokens else []
    old = [a.processor for a in attns]
    for a in attns:
        a.set_processor(_PooledKV(a.processor, max_tokens))
    try:
        yield
    finally:
        for a, p in zip(attns, old):
            a.set_processor(p)


def _run_tiled(body, x: torch.Tensor, core: int, halo: int, scale_out: float, passes: int,
               norms: _GroupNormStats, desc: str) -> torch.Tensor:
    """Run `body` over tiles of `x` (N x C x H x W); out[..., core] = body(tile)[..., core].
    `scale_out` = output size / input size (1/8 for the encoder body, 8 for the decoder body)."""
    n, _, h, w = x.shape
    out = None
    count = len(_spans(h, core, 0)) * len(_spans(w, core, 0))
    with norms.patched(), tqdm(total=passes * count, desc=desc, unit="tile", leave=False,
                               disable=count * passes < 4) as bar:
        for p in range(passes):
            if p:
                norms.next_pass()
            last = p == passes - 1
            norms.collect = not last  # the last pass's statistics would be thrown away
            pad = halo if last or core < CORE_STATS_MIN_RATIO * halo else 0  # statistics: cores alone
            tiles = [(ys, xs) for ys in _spans(h, core, pad) for xs in _spans(w, core, pad)]
            for (t0, t1, c0, c1), (u0, u1, d0, d1) in tiles:
                y = body(x[..., t0:t1, u0:u1])
                if last:
                    if out is None:
                        out = y.new_empty(n, y.shape[1], round(h * scale_out), round(w * scale_out))
                    k = lambda v, o: round((v - o) * scale_out)  # noqa: E731
                    out[..., round(c0 * scale_out):round(c1 * scale_out), round(d0 * scale_out):round(d1 * scale_out)] \
                        = y[..., k(c0, t0):k(c1, t0), k(d0, u0):k(d1, u0)]
                bar.update()
    return out


def encode_tiled(vae: AutoencoderKL, x: torch.Tensor, tile_px: int = DEFAULT_TILE_PX,
                 passes: int = DEFAULT_PASSES, attn_max_tokens: int | None = DEFAULT_ATTN_MAX_TOKENS
                 ) -> DiagonalGaussian:
    """The posterior of `x` (N x 3 x H x W in the model's [-1, 1], H and W multiples of the downsampling factor f)
    computed in tiles of `tile_px` pixels (a multiple of f). Call inside :func:`latentkit.runtime.inference`."""
    enc = vae.encoder
    tiled, whole = encoder_parts(vae)
    norms = _GroupNormStats(tiled)
    feats = _run_tiled(lambda t: run_parts(tiled, t), x, tile_px, encoder_halo_px(vae),
                       1 / downsampling_factor(vae), passes, norms, "encode tiles")
    with _pooled_attention(enc.mid_block, attn_max_tokens):
        h = enc.conv_out(enc.conv_act(enc.conv_norm_out(enc.mid_block(run_parts(whole, feats)))))
    if vae.quant_conv is not None:
        h = vae.quant_conv(h)
    return DiagonalGaussian(h)


def decode_tiled(vae: AutoencoderKL, z: torch.Tensor, tile_px: int = DEFAULT_TILE_PX,
                 passes: int = DEFAULT_PASSES, attn_max_tokens: int | None = DEFAULT_ATTN_MAX_TOKENS
                 ) -> torch.Tensor:
    """The decoder output (model range, N x 3 x fh x fw, f the downsampling factor) of unscaled latents `z`
    computed in tiles of `tile_px` pixels (a multiple of the downsampling factor). Call inside
    :func:`latentkit.runtime.inference`."""
    dec = vae.decoder
    if vae.post_quant_conv is not None:
        z = vae.post_quant_conv(z)
    whole, tiled = decoder_parts(vae)
    with _pooled_attention(dec.mid_block, attn_max_tokens):
        feats = run_parts(whole, dec.mid_block(dec.conv_in(z), None))
    norms = _GroupNormStats(tiled)
    f = downsampling_factor(vae)
    return _run_tiled(lambda t: run_parts(tiled, t), feats, max(1, tile_px // f), decoder_halo_latents(vae), f,
                      passes, norms, "decode tiles")

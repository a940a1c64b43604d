"""diffusers' ``AutoencoderKL`` network for inference, in plain PyTorch: what the commands run, so that a command
does not pay diffusers' import (~2-3 s of a ~5 s process on a 2-core CPU: every autoencoder and UNet module,
``torch._dynamo``, ``transformers`` where installed; README "Performance").

:class:`StandaloneAutoencoderKL` has the same submodules, parameter names and ops, in the same order, as
``diffusers.AutoencoderKL`` with ``DownEncoderBlock2D`` / ``UpDecoderBlock2D`` blocks and SiLU (every SD-family
VAE and every latentkit config): the same weights load into it unchanged and it computes the same bits, on the
plain fp32 path and on the fast bf16 path (tests/test_standalone.py checks both against diffusers). It is
inference only: training, saving, pipelines and export use the diffusers model (:func:`latentkit.load_vae`);
:func:`latentkit.model.load_vae` with ``standalone=True`` gives this one where the config allows.

What it leaves out of diffusers' forward, each an identity here: division by ``output_scale_factor`` and
``rescale_output_factor`` (both 1 in these configs, and x / 1.0 == x exactly), dropout (p = 0), time
embeddings (none), attention masks and cross-attention normalisation (none). What it does differently, with the
same bits: without autograd, SiLUs and residual sums are computed in place where the tensor's layout is standard
(fewer activation-sized tensors and memory passes: decode 1.06-1.12x, encode 1.02-1.11x on this project's 2-core
Xeon, README "Performance").

:func:`view_of` runs a diffusers model through this network on the model's own parameters (shared, not copied):
:func:`latentkit.model.encode` / :func:`~latentkit.model.decode` use it on their fast path.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

#: diffusers' ``AutoencoderKL`` defaults (its ``__init__``), for the keys a config.json leaves out
DEFAULTS: dict[str, Any] = dict(
    in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"], up_block_types=["UpDecoderBlock2D"],
    block_out_channels=[64], layers_per_block=1, act_fn="silu", latent_channels=4, norm_num_groups=32,
    sample_size=32, scaling_factor=0.18215, shift_factor=None, latents_mean=None, latents_std=None,
    force_upcast=True, use_quant_conv=True, use_post_quant_conv=True, mid_block_add_attention=True)
#: diffusers' epsilon for every GroupNorm of the VAE
EPS = 1e-6


def supports(config: dict[str, Any]) -> bool:
    """Whether an ``AutoencoderKL`` config is one this module runs: SiLU, ``DownEncoderBlock2D`` /
    ``UpDecoderBlock2D`` blocks, one per entry of ``block_out_channels`` (the rest need diffusers)."""
    c = {**DEFAULTS, **config}
    n = len(c["block_out_channels"])
    return (c["act_fn"] == "silu" and list(c["down_block_types"]) == ["DownEncoderBlock2D"] * n
            and list(c["up_block_types"]) == ["UpDecoderBlock2D"] * n)


class Config(dict):
    """The model's config: a dict whose keys also read as attributes (``vae.config.scaling_factor``), as
    diffusers' ``FrozenDict``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class DiagonalGaussian:
    """The posterior q(z | x) = N(mean, exp(logvar)), from the encoder's 2C output channels (mean, then logvar
    clamped to [-30, 20]): the same attributes and the same random draws as diffusers'
    ``DiagonalGaussianDistribution``."""

    def __init__(self, parameters: torch.Tensor):
        self.parameters = parameters
        self.mean, logvar = torch.chunk(parameters, 2, dim=1)
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw mean + std * eps, eps ~ N(0, I) from `generator`."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.parameters.device,
                          dtype=self.parameters.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        """The mean."""
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL divergence to N(0, I) in nats, summed over C x h x w: one value per image."""
        return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=[1, 2, 3])


class EncoderOutput(NamedTuple):
    latent_dist: DiagonalGaussian


class DecoderOutput(NamedTuple):
    sample: torch.Tensor


def _in_place_ok(t: torch.Tensor) -> bool:
    """Whether an elementwise op may write into `t` (a fresh N x C x H x W tensor nothing else holds) and give
    the bits of the out-of-place op: no autograd graph is recorded, and `t` has the standard strides of NCHW or
    channels_last, which the out-of-place result would get (a channels_last slice of one image can carry another
    batch stride, and the next convolution would compute in another order)."""
    n, c, h, w = t.shape
    return not torch.is_grad_enabled() and t.stride() in ((c * h * w, h * w, w, 1), (c * h * w, 1, w * c, c))


def _silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x, inplace=_in_place_ok(x))


class ResnetBlock2D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=EPS)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, temb: None = None) -> torch.Tensor:
        h = self.conv1(_silu(self.norm1(x)))
        h = self.conv2(_silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return h.add_(x) if h.dtype == x.dtype and h.stride() == x.stride() and _in_place_ok(h) else x + h


class Downsample2D(nn.Module):
    """Pad right and bottom by one, then a 3x3 convolution of stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample2D(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] >= 64 or x.numel() * 2 > 2**31:  # as diffusers: upsample_nearest_nhwc fails on these
            x = x.contiguous()
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def sdpa_processor(attn: "Attention", hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                   attention_mask: None = None, temb: None = None) -> torch.Tensor:
    """Single-head self-attention over the positions of an N x C x H x W map, with a residual connection (diffusers'
    ``AttnProcessor2_0`` for the VAE's mid-block). ``encoder_hidden_states`` (N x L x C): other keys and values."""
    residual = hidden_states
    n, c, h, w = hidden_states.shape
    hidden_states = hidden_states.view(n, c, h * w).transpose(1, 2)
    hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    kv = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    key, value = attn.to_k(kv), attn.to_v(kv)
    query, key, value = (t.view(n, -1, 1, c).transpose(1, 2) for t in (query, key, value))
    hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False)
    hidden_states = hidden_states.transpose(1, 2).reshape(n, -1, c).to(query.dtype)
    hidden_states = attn.to_out[0](hidden_states)
    return hidden_states.transpose(-1, -2).reshape(n, c, h, w) + residual


class Attention(nn.Module):
    """The mid-block's attention (one head as wide as the channels); ``processor`` is swappable as in diffusers
    (:mod:`latentkit.tiling` wraps it)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=EPS)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])
        self.processor: Callable[..., torch.Tensor] = sdpa_processor

    def set_processor(self, processor: Callable[..., torch.Tensor]) -> None:
        self.processor = processor

    def forward(self, hidden_states: torch.Tensor, temb: None = None) -> torch.Tensor:
        return self.processor(self, hidden_states, None, None, temb)


class MidBlock2D(nn.Module):
    def __init__(self, channels: int, groups: int, attention: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([Attention(channels, groups) if attention else None])

    def forward(self, x: torch.Tensor, temb: None = None) -> torch.Tensor:
        x = self.resnets[0](x)
        if self.attentions[0] is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


def _resnets(in_channels: int, out_channels: int, layers: int, groups: int) -> nn.ModuleList:
    return nn.ModuleList([ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups)
                          for i in range(layers)])


class DownEncoderBlock2D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, downsample: bool):
        super().__init__()
        self.resnets = _resnets(in_channels, out_channels, layers, groups)
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels)]) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return self.downsamplers[0](x) if self.downsamplers is not None else x


class UpDecoderBlock2D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, upsample: bool):
        super().__init__()
        self.resnets = _resnets(in_channels, out_channels, layers, groups)
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if upsample else None

    def forward(self, x: torch.Tensor, temb: None = None) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return self.upsamplers[0](x) if self.upsamplers is not None else x


class Encoder(nn.Module):
    def __init__(self, in_channels: int, latent_channels: int, channels: list[int], layers: int, groups: int,
                 attention: bool):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            DownEncoderBlock2D(channels[max(i - 1, 0)], c, layers, groups, downsample=i < len(channels) - 1)
            for i, c in enumerate(channels)])
        self.mid_block = MidBlock2D(channels[-1], groups, attention)
        self.conv_norm_out = nn.GroupNorm(groups, channels[-1], eps=EPS)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels[-1], 2 * latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(_silu(self.conv_norm_out(self.mid_block(x))))  # conv_act, in place where it may


class Decoder(nn.Module):
    def __init__(self, latent_channels: int, out_channels: int, channels: list[int], layers: int, groups: int,
                 attention: bool):
        super().__init__()
        rev = channels[::-1]
        self.conv_in = nn.Conv2d(latent_channels, rev[0], 3, padding=1)
        self.mid_block = MidBlock2D(rev[0], groups, attention)
        self.up_blocks = nn.ModuleList([
            UpDecoderBlock2D(rev[max(i - 1, 0)], c, layers + 1, groups, upsample=i < len(rev) - 1)
            for i, c in enumerate(rev)])
        self.conv_norm_out = nn.GroupNorm(groups, channels[0], eps=EPS)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels[0], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(_silu(self.conv_norm_out(x)))  # conv_act, in place where it may


class StandaloneAutoencoderKL(nn.Module):
    """The KL autoencoder's inference network (see the module docstring), built from a diffusers
    ``AutoencoderKL`` config (:func:`supports` says which): ``encode(x).latent_dist`` and ``decode(z).sample`` as
    in diffusers, on images in [-1, 1] and unscaled latents."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        if not supports(config):
            raise ValueError("only DownEncoderBlock2D / UpDecoderBlock2D configs with SiLU run without diffusers")
        self.config = c = Config({**DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_")}})
        channels, groups, latent = list(c.block_out_channels), c.norm_num_groups, c.latent_channels
        args = (channels, c.layers_per_block, groups, c.mid_block_add_attention)
        self.encoder = Encoder(c.in_channels, latent, *args)
        self.decoder = Decoder(latent, c.out_channels, *args)
        self.quant_conv = nn.Conv2d(2 * latent, 2 * latent, 1) if c.use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(latent, latent, 1) if c.use_post_quant_conv else None

    @classmethod
    def from_state_dict(cls, config: dict[str, Any], state_dict: dict[str, torch.Tensor]
                        ) -> tuple["StandaloneAutoencoderKL", list[str], list[str]]:
        """The network of `config` with the weights of a diffusers-key `state_dict`, in float32 (as diffusers'
        ``from_pretrained``), and the names of its missing and unexpected weights. Built without initialising
        weights that the state dict replaces (0.5 s for the SD VAE's 84M)."""
        with torch.device("meta"):
            vae = cls(config)
        missing, unexpected = vae.load_state_dict(state_dict, strict=False, assign=True)
        if missing:
            return vae, missing, unexpected
        return vae.float(), missing, unexpected

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        """Images N x 3 x H x W in [-1, 1] (H, W multiples of the downsampling factor) -> the posterior."""
        h = self.encoder(x)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        return EncoderOutput(DiagonalGaussian(h))

    def decode(self, z: torch.Tensor) -> DecoderOutput:
        """Unscaled latents N x C x h x w -> images N x 3 x fh x fw in (about) [-1, 1]."""
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return DecoderOutput(self.decoder(z))


def view_of(vae: nn.Module) -> StandaloneAutoencoderKL | None:
    """A diffusers ``AutoencoderKL`` as this module's network on the very same ``Parameter`` objects (nothing is
    copied, so later in-place weight updates and ``.to()`` show through), cached on the model and rebuilt when its
    parameters were replaced; `vae` itself when it already is one. None when this network cannot stand in for it:
    a config it does not build (:func:`supports`), attention processors other than diffusers' default, accelerate
    hooks (offloading), or weights under other names (adapters)."""
    if isinstance(vae, StandaloneAutoencoderKL):
        return vae
    config = getattr(vae, "config", None)
    if config is None or not supports(dict(config)):
        return None
    default_processor = ("NoneType", "AttnProcessor2_0")
    if any(hasattr(m, "_hf_hook") or type(getattr(m, "processor", None)).__name__ not in default_processor
           for m in vae.modules()):
        return None
    params = tuple(vae.parameters())
    cached = vae.__dict__.get("_latentkit_standalone")
    if cached is not None and len(cached[0]) == len(params) and all(a is b for a, b in zip(cached[0], params)):
        return cached[1]
    with torch.device("meta"):
        net = StandaloneAutoencoderKL(dict(config))
    weights = vae.state_dict(keep_vars=True)
    if weights.keys() != net.state_dict().keys():  # e.g. adapter layers (LoRA) wrapped around some modules
        return None
    net.load_state_dict(weights, strict=True, assign=True)
    vae.__dict__["_latentkit_standalone"] = (params, net)
    return net

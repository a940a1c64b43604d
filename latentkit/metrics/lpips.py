"""LPIPS v0.1 (Zhang et al., CVPR 2018) in plain PyTorch, without torchvision or the `lpips` package.

A frozen ImageNet backbone (SqueezeNet 1.1, AlexNet or VGG16), features tapped after given layers,
unit-normalised along channels, squared differences weighted by the learned 1x1 "lin" layers, averaged over
space and summed over taps. Inputs are images in [0, 1], N x 3 x H x W; the result is one distance per image
(lower is more similar). As a loss module the weights are frozen and gradients flow to the inputs only.

Weights: ``weights/lpips/lin_{net}_v0.1.pth`` (shipped) and the backbone: ``squeezenet1_1_features.safetensors``
(shipped), or torchvision's ``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth`` (in
``$TORCH_HOME/hub/checkpoints`` or given explicitly; ``latentkit fetch lpips-alex|lpips-vgg`` downloads them).
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch
from torch import nn

from .. import weights
from ..errors import LatentkitError

BACKBONE_FILES = {
    "squeeze": "squeezenet1_1_features.safetensors",
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
}
BACKBONE_URLS = {
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
}
NETS = tuple(BACKBONE_FILES)
#: smallest image side each backbone accepts (its strides and pools leave no pixel below this)
MIN_SIDE = {"squeeze": 17, "alex": 31, "vgg": 16}


class _Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, e1: int, e3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1x1(x)), torch.relu(self.expand3x3(x))], 1)


def _squeeze_features() -> tuple[nn.Sequential, list[int], list[int]]:
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    f = nn.Sequential(nn.Conv2d(3, 64, 3, 2), nn.ReLU(), pool(), _Fire(64, 16, 64, 64), _Fire(128, 16, 64, 64),
                      pool(), _Fire(128, 32, 128, 128), _Fire(256, 32, 128, 128), pool(),
                      _Fire(256, 48, 192, 192), _Fire(384, 48, 192, 192), _Fire(384, 64, 256, 256),
                      _Fire(512, 64, 256, 256))
    return f, [2, 5, 8, 10, 11, 12, 13], [64, 128, 256, 384, 384, 512, 512]


def _alex_features() -> tuple[nn.Sequential, list[int], list[int]]:
    f = nn.Sequential(nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2),
                      nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
                      nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU())
    return f, [2, 5, 8, 10, 12], [64, 192, 384, 256, 256]


def _vgg_features() -> tuple[nn.Sequential, list[int], list[int]]:
    layers: list[nn.Module] = []
    cin = 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
            cin = v
    return nn.Sequential(*layers), [4, 9, 16, 23, 30], [64, 128, 256, 512, 512]


_ARCHS = {"squeeze": _squeeze_features, "alex": _alex_features, "vgg": _vgg_features}


def _load_backbone_state(net: str, path: str | os.PathLike | None) -> dict[str, torch.Tensor]:
    how = ("Run `latentkit fetch lpips-%s` on a machine with internet, or pass its path." % net
           if net in BACKBONE_URLS else "It ships in the repository's weights/lpips/.")
    p = weights.resolve(BACKBONE_FILES[net], "lpips", path, how_to_get=how)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(p)
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated or not a checkpoint at all
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise LatentkitError(f"cannot read LPIPS backbone weights {p}: {first}. {how}") from None
    return {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}


class LPIPS(nn.Module):
    """LPIPS v0.1 distance. ``forward(x, y)`` takes images in [0, 1] (N x 3 x H x W) and returns N distances.

    Args:
        net: ``"squeeze"`` (shipped, works offline), ``"alex"`` or ``"vgg"`` (need torchvision's checkpoints).
        backbone_path / lin_path: explicit weight files instead of the search path.
    """

    def __init__(self, net: str = "squeeze", backbone_path: str | os.PathLike | None = None,
                 lin_path: str | os.PathLike | None = None):
        super().__init__()
        if net not in _ARCHS:
            raise LatentkitError(f"unknown LPIPS net '{net}': use one of {', '.join(NETS)}")
        self.net = net
        self.features, self.taps, chans = _ARCHS[net]()
        try:
            self.features.load_state_dict(_load_backbone_state(net, backbone_path))
        except RuntimeError as e:  # wrong keys or shapes: not torchvision's checkpoint of this net
            raise LatentkitError(f"the LPIPS-{net} backbone weights do not fit torchvision's {net} layout "
                                 f"(features.N.weight): {' '.join(str(e).split())[:300]}") from None
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in chans)
        lin_file = weights.resolve(f"lin_{net}_v0.1.pth", "lpips", lin_path,
                                   how_to_get="It ships in the repository's weights/lpips/.")
        lin_sd = torch.load(lin_file, map_location="cpu", weights_only=True)
        for i, lin in enumerate(self.lins):
            lin.weight.data.copy_(lin_sd[f"lin{i}.model.1.weight"])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "LPIPS":  # always frozen in eval mode
        return super().train(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x * 2 - 1) - self.shift) / self.scale
        out, start = [], 0
        for end in self.taps:
            for layer in self.features[start:end]:
                x = layer(x)
            out.append(x)
            start = end
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor, spatial: bool = False) -> torch.Tensor:
        """N distances; with ``spatial``, the N x 1 x H x W map instead: each tap's weighted squared difference
        upsampled (bilinear) to the input size and summed over taps, as the `lpips` package's ``spatial=True``
        (its mean is close to, not exactly, the distance: the upsampling does not keep means exactly)."""
        if x.shape != y.shape or min(x.shape[-2:]) < MIN_SIDE[self.net]:
            raise LatentkitError(f"LPIPS-{self.net} needs two images of the same size, at least "
                                 f"{MIN_SIDE[self.net]} px a side; got {tuple(x.shape)} and {tuple(y.shape)}")
        n = x.shape[0]
        feats = self._taps(torch.cat([x, y]))
        total = 0.0
        for f, lin in zip(feats, self.lins):
            f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            d = lin((f[:n] - f[n:]).pow(2))
            if spatial:
                total = total + nn.functional.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=False)
            else:
                total = total + d.mean((1, 2, 3))
        return total


@lru_cache(maxsize=None)
def _cached(net: str, device: str) -> LPIPS:
    return LPIPS(net).to(device)


def lpips(x: torch.Tensor, y: torch.Tensor, net: str = "squeeze", spatial: bool = False) -> torch.Tensor:
    """LPIPS v0.1 between images in [0, 1] (N x 3 x H x W); returns N distances (no gradients), or with
    ``spatial`` the N x 1 x H x W map of :meth:`LPIPS.forward`."""
    model = _cached(net, str(x.device))
    with torch.no_grad():
        return model(x.float(), y.float(), spatial=spatial)

"""Training losses of the latent-diffusion recipe (``LPIPSWithDiscriminator``), re-derived for latentkit.

Normalisations (all "mean" so weights do not depend on crop size):
- reconstruction: mean absolute (L1) or squared (L2) error per pixel and channel, images in [-1, 1];
- perceptual: LPIPS per image, averaged over the batch;
- KL: nats per latent element (mean over batch, channels and positions) of KL(q(z|x) || N(0, I));
- adversarial: hinge loss on PatchGAN logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean, exp(logvar)) || N(0, 1)) in nats: 0.5 * (mean^2 + var - 1 - logvar).

    mean=1, var=1 gives 0.5 nats; mean=0, var=1 gives 0.
    """
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)


def kl_loss(mean: torch.Tensor, logvar: torch.Tensor, free_bits: float = 0.0) -> torch.Tensor:
    """KL in nats per latent element. With ``free_bits`` > 0 each channel's mean KL is clamped from below at
    that many nats per element (against posterior collapse: a channel pays nothing under the floor)."""
    kl = kl_divergence(mean.float(), logvar.float())
    if free_bits > 0:
        per_channel = kl.mean(dim=(0, 2, 3))
        return per_channel.clamp(min=free_bits).mean()
    return kl.mean()


def reconstruction_loss(x: torch.Tensor, x_rec: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Per-pixel mean L1 or L2 between images in [-1, 1]."""
    if kind == "l1":
        return (x - x_rec).abs().mean()
    if kind == "l2":
        return (x - x_rec).pow(2).mean()
    raise ValueError(f"unknown reconstruction loss {kind}")


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_adv_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """Balance the adversarial term against reconstruction: ||grad rec|| / (||grad adv|| + 1e-4) at the
    decoder's last layer, clamped to [0, max_weight] and detached (as in latent-diffusion)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    w = rec_grad.norm() / (g_grad.norm() + 1e-4)
    return w.clamp(0.0, max_weight).detach()


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix NLayerDiscriminator layout): strided 4x4 convs, BatchNorm, LeakyReLU;
    one logit per overlapping patch. Input: images in [-1, 1]."""

    def __init__(self, in_channels: int = 3, width: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(width * prev, width * mult, 4, stride, 1, bias=False),
                       nn.BatchNorm2d(width * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(width * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)

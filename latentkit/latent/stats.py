"""Latent statistics over a folder: what each channel of the posterior carries.

Per channel: mean and std of the posterior means and of posterior samples, the mean posterior std, and the mean
KL(q(z|x) || N(0, 1)) per latent element in nats (:func:`latentkit.train.losses.kl_divergence`). The KL is the
rate the VAE's own bound charges for the channel: ~0 nats is posterior collapse (the channel says nothing about
the image), a weak KL term (SD's and our default's) lets it grow to several nats, with posteriors a few
thousandths wide. Also the correlation matrix of the channels' posterior means, and the ``scaling_factor`` the
samples imply (1 / their pooled std, :func:`latentkit.pipeline.estimate_scale_factor`'s definition).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Iterable

import numpy as np
import torch
from tqdm import tqdm

from ..errors import LatentkitError
from ..model import centre_crop, posterior
from ..train.losses import kl_divergence
from ._images import read_rgb

if TYPE_CHECKING:  # type hints only: commands run the model without importing diffusers
    from diffusers import AutoencoderKL


@dataclass
class LatentStats:
    """Per-channel figures (lists of C floats) over ``images`` images and ``positions`` latent positions."""

    images: int
    positions: int
    mean_of_means: list[float]
    std_of_means: list[float]
    mean_of_samples: list[float]
    std_of_samples: list[float]
    posterior_std: list[float]  # mean over positions of the posterior's own std
    kl_nats: list[float]  # mean KL per latent element, nats
    correlation: list[list[float]]  # C x C, of the posterior means
    scaling_factor: float  # 1 / std of all samples pooled

    def as_dict(self) -> dict:
        return asdict(self)


class _Moments:
    """Running per-channel sums (float64) of values, their squares and (optionally) their cross products."""

    def __init__(self, channels: int):
        self.n, self.s1, self.s2 = 0, np.zeros(channels), np.zeros(channels)
        self.cross = np.zeros((channels, channels))

    def add(self, z: torch.Tensor) -> None:
        v = z.double().permute(1, 0, 2, 3).reshape(z.shape[1], -1).numpy()  # C x positions
        self.n += v.shape[1]
        self.s1 += v.sum(1)
        self.s2 += (v * v).sum(1)
        self.cross += v @ v.T

    def mean(self) -> np.ndarray:
        return self.s1 / self.n

    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.s2 / self.n - self.mean() ** 2, 0.0))

    def correlation(self) -> np.ndarray:
        m = self.mean()
        cov = self.cross / self.n - np.outer(m, m)
        d = np.sqrt(np.maximum(np.diag(cov), 1e-300))
        return np.clip(cov / np.outer(d, d), -1, 1)

    def pooled_std(self) -> float:
        m = self.s1.sum() / (self.n * len(self.s1))
        return float(np.sqrt(max(self.s2.sum() / (self.n * len(self.s1)) - m * m, 0.0)))


def latent_stats(vae: AutoencoderKL, images: str | os.PathLike | Iterable[torch.Tensor], limit: int | None = None,
                 crop: int | None = None, seed: int = 0, progress: bool = True) -> LatentStats:
    """Latent statistics of `images` (a folder, searched recursively, of RGB images; or 1 x 3 x H x W / 3 x H x W
    tensors in [0, 1]), at most `limit` of them, each centre-cropped to at most `crop` x `crop` px; `seed` seeds
    the posterior samples."""
    if isinstance(images, (str, os.PathLike)):
        from ..io import list_images

        files = list_images(images, recursive=True, limit=limit)
        batches: Iterable[torch.Tensor] = (read_rgb(p).batch() for p in files)
        total: int | None = len(files)
    else:
        batches, total = images, None
    C = vae.config.latent_channels
    means, samples, kl, pstd = _Moments(C), _Moments(C), np.zeros(C), np.zeros(C)
    gen = torch.Generator().manual_seed(seed)
    count = 0
    for x in tqdm(batches, total=total, desc="latent statistics", unit="image", disable=not progress):
        if limit is not None and count >= limit:
            break
        x = x if x.dim() == 4 else x[None]
        if crop:
            x = centre_crop(x, crop, crop)
        post = posterior(vae, x)
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        means.add(post.mean)
        samples.add(z)
        kl += kl_divergence(post.mean, post.logvar).double().sum((0, 2, 3)).numpy()
        pstd += post.std.double().sum((0, 2, 3)).numpy()
        count += x.shape[0]
    if count == 0:
        raise LatentkitError("no images to measure latent statistics on")
    pooled = samples.pooled_std()
    if pooled == 0:
        raise LatentkitError("the latents are constant: no statistics to show")
    r = lambda a: [round(float(v), 6) for v in a]  # noqa: E731
    return LatentStats(count, means.n, r(means.mean()), r(means.std()), r(samples.mean()), r(samples.std()),
                       r(pstd / means.n), r(kl / means.n), [r(row) for row in means.correlation()],
                       round(1.0 / pooled, 6))


def table(s: LatentStats) -> str:
    """The statistics as one plain-text table (a row per channel) plus the correlation matrix."""
    C = len(s.kl_nats)
    lines = [f"{s.images} images, {s.positions} latent positions; scaling_factor implied: {s.scaling_factor:.5g}",
             "",
             f"{'channel':>7} {'mean(mu)':>9} {'std(mu)':>8} {'mean(z)':>8} {'std(z)':>7} {'post.std':>9} "
             f"{'KL nats':>8}  corr(mu) with channels 0..{C - 1}"]
    for c in range(C):
        corr = " ".join(f"{v:+.2f}" for v in s.correlation[c])
        lines.append(f"{c:>7} {s.mean_of_means[c]:>9.4f} {s.std_of_means[c]:>8.4f} {s.mean_of_samples[c]:>8.4f} "
                     f"{s.std_of_samples[c]:>7.4f} {s.posterior_std[c]:>9.5f} {s.kl_nats[c]:>8.3f}  {corr}")
    lines.append(f"{'all':>7} {'':>9} {'':>8} {'':>8} {'':>7} {'':>9} {sum(s.kl_nats) / C:>8.3f}  (mean KL per element)")
    return "\n".join(lines)


def plot(s: LatentStats, path: str | os.PathLike) -> None:
    """A PNG: KL per channel (bars) and the channel correlation matrix (heatmap), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_write

    C = len(s.kl_nats)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.8), dpi=110)
    try:
        a1.bar(range(C), s.kl_nats, color="tab:blue")
        a1.set_xlabel("latent channel")
        a1.set_ylabel("mean KL per element (nats)")
        a1.set_title("information per channel")
        a1.set_xticks(range(C))
        im = a2.imshow(np.array(s.correlation), vmin=-1, vmax=1, cmap="RdBu_r")
        a2.set_title("correlation of posterior means")
        a2.set_xticks(range(C))
        a2.set_yticks(range(C))
        fig.colorbar(im, ax=a2)
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)

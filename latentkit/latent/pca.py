"""The optimal linear autoencoder: PCA of 8 x 8 x 3 image patches.

Each non-overlapping 8 x 8 patch (3 colour channels, 192 values in [0, 1], ordered channel, row, column) minus
the training mean is projected on the top k principal components: k = 4 gives 4 coefficients per 64 pixels, the
same 48x reduction as an f8c4 VAE's 4 latent channels at 1/8 resolution, and the coefficient maps are shaped like
its latents (N x k x H/8 x W/8). By the Eckart-Young theorem no linear encoder/decoder pair of that width has a
lower mean squared error on the training patches, and a linear autoencoder trained by gradient descent on the MSE
ends up spanning the same subspace (Baldi & Hornik 1989; tests/test_latent_tools.py checks it). What the VAE's
nonlinearity buys is what it does better than this.

The shipped basis (``weights/pca/patch8.npz``, all 192 components) was fitted with :func:`fit_pca` on
``../shared/data/train`` (see ``weights/pca/README.md``); never on Kodak.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from tqdm import tqdm

from ..errors import LatentkitError
from ..model import pad_to_multiple

#: patch side in pixels (the VAE's downsampling factor)
PATCH = 8
#: components the ``pca`` codec keeps (as many as the default VAE's latent channels: the same 48x reduction)
CODEC_COMPONENTS = 4
#: the shipped basis file, below the weights folder
SHIPPED = ("pca", "patch8.npz")


def patches(images: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """Images N x 3 x H x W (H, W multiples of `patch`) -> their non-overlapping patches as rows,
    (N * H/patch * W/patch) x (3 * patch * patch), in raster order of the patches, each ordered (channel, row,
    column)."""
    n, c, h, w = images.shape
    if h % patch or w % patch:
        raise LatentkitError(f"images of {w}x{h} px do not split into {patch}x{patch} patches")
    t = images.reshape(n, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return t.reshape(-1, c * patch * patch)


def unpatch(rows: torch.Tensor, n: int, height: int, width: int, patch: int = PATCH) -> torch.Tensor:
    """Inverse of :func:`patches`: rows -> images N x 3 x height x width (multiples of `patch`)."""
    h, w = height // patch, width // patch
    t = rows.reshape(n, h, w, 3, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return t.reshape(n, 3, height, width)


@dataclass
class PCABasis:
    """A PCA basis of patches: ``mean`` (D,), ``components`` (K x D, orthonormal rows, by decreasing variance),
    ``variances`` (K,, the eigenvalues: variance of each coefficient on the fitting data), ``patch`` side,
    and where it was fitted (``source``, ``images``, ``patches``)."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    patch: int = PATCH
    source: str = ""
    images: int = 0
    patches: int = 0

    def _k(self, k: int | None) -> int:
        k = len(self.components) if k is None else k
        if not 1 <= k <= len(self.components):
            raise LatentkitError(f"k must be from 1 to {len(self.components)}, got {k}")
        return k

    def encode(self, images: torch.Tensor, k: int | None = CODEC_COMPONENTS) -> torch.Tensor:
        """Images in [0, 1] (N x 3 x H x W, any size >= 1; padded by edge replication to multiples of the patch)
        -> coefficient maps N x k x ceil(H/p) x ceil(W/p) (float32): the latents of the linear autoencoder."""
        k = self._k(k)
        x = pad_to_multiple(images.float(), self.patch)
        n, _, h, w = x.shape
        rows = patches(x, self.patch) - torch.from_numpy(self.mean).float()
        coeffs = rows @ torch.from_numpy(self.components[:k]).float().T
        return coeffs.reshape(n, h // self.patch, w // self.patch, k).permute(0, 3, 1, 2).contiguous()

    def decode(self, coeffs: torch.Tensor, height: int | None = None, width: int | None = None) -> torch.Tensor:
        """Coefficient maps N x k x h x w -> images N x 3 x height x width in [0, 1] (clamped; cropped to
        height x width, default the full p*h x p*w)."""
        n, k, h, w = coeffs.shape
        rows = coeffs.float().permute(0, 2, 3, 1).reshape(-1, k) @ torch.from_numpy(self.components[:self._k(k)]).float()
        x = unpatch(rows + torch.from_numpy(self.mean).float(), n, h * self.patch, w * self.patch, self.patch)
        return x[..., :height or h * self.patch, :width or w * self.patch].clamp(0, 1).contiguous()

    def reconstruct(self, images: torch.Tensor, k: int | None = CODEC_COMPONENTS) -> torch.Tensor:
        """Project on the top k components and back (images in [0, 1], cropped to the input size)."""
        return self.decode(self.encode(images, k), *images.shape[-2:])

    def basis_id(self, k: int | None = CODEC_COMPONENTS) -> bytes:
        """8 bytes identifying the mean and top k components (what ``pca`` codec files carry as model id)."""
        h = hashlib.sha256(np.ascontiguousarray(self.mean, "<f4").tobytes())
        h.update(np.ascontiguousarray(self.components[:self._k(k)], "<f4").tobytes())
        return h.digest()[:8]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the basis as a .npz (float32 arrays and the fitting facts), atomically."""
        from ..io import atomic_write

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, mean=self.mean.astype(np.float32), components=self.components.astype(np.float32),
                         variances=self.variances.astype(np.float32), patch=np.int64(self.patch),
                         source=np.str_(self.source), images=np.int64(self.images), patches=np.int64(self.patches))

        return atomic_write(path, write)


def load_pca(path: str | os.PathLike | None = None) -> PCABasis:
    """A basis written by :meth:`PCABasis.save`; None: the shipped ``weights/pca/patch8.npz``."""
    from .. import weights

    p = weights.resolve(SHIPPED[1], SHIPPED[0], path, how_to_get="It ships in the repository's weights/pca/.")
    try:
        with np.load(p, allow_pickle=False) as z:
            return PCABasis(z["mean"], z["components"], z["variances"], int(z["patch"]), str(z["source"]),
                            int(z["images"]), int(z["patches"]))
    except (OSError, ValueError, KeyError) as e:
        raise LatentkitError(f"cannot read a PCA basis from {p}: {str(e).splitlines()[0] if str(e) else e}") from None


def fit_pca(images: str | os.PathLike | Iterable[torch.Tensor], k: int | None = None, patch: int = PATCH,
            limit: int | None = None, progress: bool = True) -> PCABasis:
    """Fit PCA on every non-overlapping `patch` x `patch` x 3 patch of `images` (a folder, searched recursively,
    of RGB images; or 3 x H x W / N x 3 x H x W tensors in [0, 1]; each cropped at the bottom/right to multiples
    of the patch). Exact: the mean and covariance are accumulated in float64 over all patches, then
    eigendecomposed. Keeps the top `k` components (None: all 3 * patch**2). Each component's sign is fixed so
    that its largest-magnitude entry is positive (the same basis on every run)."""
    source = ""
    if isinstance(images, (str, os.PathLike)):
        from ..io import list_images
        from ._images import read_rgb

        files = list_images(images, recursive=True, limit=limit)
        source, batches, total = str(images), (read_rgb(f).batch() for f in files), len(files)
    else:
        batches, total = images, None
    d = 3 * patch * patch
    n_img, n, s1, s2 = 0, 0, np.zeros(d), np.zeros((d, d))
    for x in tqdm(batches, total=total, desc="pca patches", unit="image", disable=not progress):
        x = x if x.dim() == 4 else x[None]
        h, w = x.shape[-2] // patch * patch, x.shape[-1] // patch * patch
        if h == 0 or w == 0:
            continue
        rows = patches(x[..., :h, :w].double(), patch).numpy()
        n_img, n = n_img + x.shape[0], n + len(rows)
        s1 += rows.sum(0)
        s2 += rows.T @ rows
    if n < d:
        raise LatentkitError(f"PCA of {d}-value patches needs at least {d} patches; got {n}")
    mean = s1 / n
    cov = s2 / n - np.outer(mean, mean)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:k]
    comps = vecs[:, order].T
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])
    comps = comps * signs[:, None]
    return PCABasis(mean.astype(np.float32), comps.astype(np.float32), np.maximum(vals[order], 0).astype(np.float32),
                    patch, source, n_img, n)


def principal_angle_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between the row spaces of `a` (k x D) and `b` (m x D), descending: the
    singular values of Qa^T Qb for orthonormal bases Qa, Qb (1: a shared direction, 0: orthogonal)."""
    qa, _ = np.linalg.qr(np.asarray(a, dtype=np.float64).T)
    qb, _ = np.linalg.qr(np.asarray(b, dtype=np.float64).T)
    return np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0, 1)

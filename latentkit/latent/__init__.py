"""Latent-space tools from the autoencoder literature, for any model :func:`latentkit.load_vae` accepts.

    >>> from latentkit import latent, load_vae
    >>> vae = load_vae()
    >>> frames = latent.interpolate(vae, a, b, steps=8, slerp=True)   # steps x 3 x H x W, ends = reconstructions
    >>> draws = latent.sample_prior(vae, n=16, height=128, width=128)  # decoded draws from N(0, I)
    >>> result = latent.anomaly(vae, image, metric="l2")              # .score, .map (H x W), .reconstruction
    >>> stats = latent.latent_stats(vae, "train/")                     # KL per channel (nats), correlations, ...
    >>> basis = latent.pca.load_pca()                                  # the linear baseline: PCA of 8x8x3 patches

Modules: :mod:`.interp` (lerp / slerp), :mod:`.prior`, :mod:`.anomalies`, :mod:`.stats`, :mod:`.pca`. All of them
import torch; the CLI's command modules import them only when a command runs.
"""

from . import pca
from ._images import check_rgb, grid, read_rgb
from .anomalies import Anomaly, anomaly, overlay, threshold
from .interp import interpolate, interpolate_latents, lerp, slerp
from .pca import PCABasis, fit_pca, load_pca, principal_angle_cosines
from .prior import sample_prior
from ..model import posterior
from .stats import LatentStats, latent_stats

__all__ = ["Anomaly", "LatentStats", "PCABasis", "anomaly", "check_rgb", "fit_pca", "grid", "interpolate",
           "interpolate_latents", "latent_stats", "lerp", "load_pca", "overlay", "pca", "posterior",
           "principal_angle_cosines", "read_rgb", "sample_prior", "slerp", "threshold"]

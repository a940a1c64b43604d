"""The codecs ``bench rd`` knows and the default quality sweep of each (no torch here: ``--help`` reads them).

Each codec's quality is in its own scale (0..100 for the classic ones, 1..100 for the latent codec); the default
sweeps span about 0.02..1 bpp on Kodak (768 x 512 photographs).
"""

LATENT = "latent"
#: classic codec -> default sweep (low to high rate)
CLASSIC_QUALITIES = {
    "jpeg": (1, 5, 10, 20, 35, 50, 70),
    "webp": (0, 5, 15, 30, 50, 70, 80),
    "avif": (5, 15, 25, 35, 45, 55, 65),
    "jxl": (0, 10, 25, 40, 55, 70, 80),
}
#: The latent codec's quality runs 1..100; the default sweep covers all of it, densest at the low end.
LATENT_QUALITIES = (1, 8, 16, 24, 32, 40, 50, 60, 75, 100)
#: the linear baseline (latentkit.bench.pca_codec): PCA coefficients coded as latents, on the latent codec's scale
PCA = "pca"
PCA_QUALITIES = LATENT_QUALITIES
CODECS = (LATENT, PCA, *CLASSIC_QUALITIES)

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
#: the latent codec with encoder-side refinement (`latentkit encode --refine REFINE_STEPS`, latentkit.codec.refine):
#: ~100x the encoding time of the plain codec, so only run when named in --codecs; its sweep covers the qualities
#: where refinement is recommended and a low one for the trade below them
LATENT_REFINE = "latent-refine"
REFINE_STEPS = 20
LATENT_REFINE_QUALITIES = (30, 40, 50, 60, 75)
#: the codecs that run a latentkit model (one model, shared)
LATENT_CODECS = (LATENT, LATENT_REFINE)
#: the linear baseline (latentkit.bench.pca_codec): PCA coefficients coded as latents, on the latent codec's scale
PCA = "pca"
PCA_QUALITIES = LATENT_QUALITIES
#: what runs without --codecs
DEFAULT_CODECS = (LATENT, PCA, *CLASSIC_QUALITIES)
#: every codec bench rd knows
CODECS = (LATENT, LATENT_REFINE, PCA, *CLASSIC_QUALITIES)

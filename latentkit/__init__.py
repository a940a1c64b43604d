"""latentkit: Stable-Diffusion-style KL autoencoders as an image codec, a metrics kit and a diffusers VAE.

    >>> import latentkit
    >>> vae = latentkit.load_vae()                      # the shipped default weights
    >>> img = latentkit.io.read_image("kodim01.png")    # colour in [0, 1]
    >>> z = latentkit.encode(vae, img.batch())          # unscaled latents, 1 x 4 x H/8 x W/8
    >>> x = latentkit.decode(vae, z)                    # images in [0, 1]
"""

from . import io
from .errors import LatentkitError
from .model import decode, encode, load_vae, make_vae, reconstruct, save_vae

__version__ = "0.1.0"
__all__ = ["LatentkitError", "decode", "encode", "io", "load_vae", "make_vae", "reconstruct", "save_vae"]

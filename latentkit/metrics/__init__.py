"""Image quality metrics on batched tensors in [0, 1], N x C x H x W; each returns one value per image.

- :func:`psnr`: dB, peak 1.0 (higher is better; 120 dB for identical images);
- :func:`ssim`: Wang et al. 2004, in [-1, 1] (1 = identical);
- :func:`ms_ssim`: Wang et al. 2003, 5 scales, in [0, 1] (1 = identical; shorter side >= 161 px);
- :func:`ssimulacra2`: the JPEG XL project's SSIMULACRA 2.1, 0..100 (higher is better; 100 = identical);
- :func:`butteraugli`: libjxl's Butteraugli (max and 3-norm, lower is better) through ``butteraugli_main``;
- :func:`lpips` / :class:`LPIPS`: LPIPS v0.1 distance, >= 0 (0 = identical; typically below 1).
"""

from .lpips import LPIPS, lpips
from .psnr import psnr, to_8bit_levels
from .butteraugli import butteraugli
from .ssim import ms_ssim, ssim
from .ssimulacra2 import ssimulacra2

__all__ = ["psnr", "ssim", "ms_ssim", "ssimulacra2", "butteraugli", "lpips", "LPIPS", "to_8bit_levels"]

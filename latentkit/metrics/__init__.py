"""Image quality metrics on batched tensors in [0, 1], N x C x H x W; each returns one value per image."""

from .lpips import LPIPS, lpips
from .psnr import psnr

__all__ = ["psnr", "lpips", "LPIPS"]

"""Image-quality metrics on 8-bit RGB (see each module for the exact protocol)."""

from expocorr.metrics.psnr import psnr
from expocorr.metrics.ssim import ssim

__all__ = ["psnr", "ssim"]

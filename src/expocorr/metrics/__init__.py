"""Image-quality metrics on 8-bit RGB (see each module for the exact protocol).

Full-reference, per image: `psnr`, `ssim` (both with an optional BT.601 Y-channel variant),
`delta_e2000`. Between the set of outputs and the set of references: `HistogramSimilarity`
(Hu et al. 2018). No-reference: `NoReference` — per image BRISQUE and NIQE, per set the Inception
Score (Salimans et al. 2016, `expocorr.metrics.inception_score`) when their model files are given;
LPIPS and the perceptual index are reported as "not computed" with the reason.
"""

from expocorr.metrics.delta_e import delta_e2000
from expocorr.metrics.histogram import HistogramSimilarity
from expocorr.metrics.noref import NoReference
from expocorr.metrics.psnr import psnr
from expocorr.metrics.ssim import ssim

__all__ = ["HistogramSimilarity", "NoReference", "delta_e2000", "psnr", "ssim"]

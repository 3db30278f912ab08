"""Image-quality metrics on 8-bit RGB (see each module for the exact protocol).

Full-reference, per image: `psnr`, `ssim` (both with an optional BT.601 Y-channel variant),
`delta_e2000`. Between the set of outputs and the set of references: `HistogramSimilarity`
(Hu et al. 2018). No-reference, per image: `NoReference` (BRISQUE, NIQE; the rest reported as
"not computed").
"""

from expocorr.metrics.delta_e import delta_e2000
from expocorr.metrics.histogram import HistogramSimilarity
from expocorr.metrics.noref import NoReference
from expocorr.metrics.psnr import psnr
from expocorr.metrics.ssim import ssim

__all__ = ["HistogramSimilarity", "NoReference", "delta_e2000", "psnr", "ssim"]

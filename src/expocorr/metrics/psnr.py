"""PSNR on 8-bit RGB, peak 255, MSE over all pixels and channels.

``psnr(out, ref, y_channel=True)`` instead compares the BT.601 luma Y of both images (MATLAB's
``rgb2ycbcr``, Y in [16, 235] as float, see `expocorr.metrics.ycbcr`), still with peak 255.
Identical inputs give ``float("inf")``; capping or aggregating that is the caller's decision.
"""

from __future__ import annotations

import numpy as np

from expocorr.metrics.ycbcr import rgb_to_y


def psnr(output: np.ndarray, reference: np.ndarray, y_channel: bool = False) -> float:
    """PSNR in dB between two uint8 images of the same shape (``inf`` when identical).

    With ``y_channel=True`` both must be H×W×3 RGB and only their BT.601 luma is compared.
    """
    from skimage.metrics import peak_signal_noise_ratio  # SciPy's stats: loaded on first use, not on import

    if output.shape != reference.shape:
        raise ValueError(f"psnr: shapes differ: {output.shape} vs {reference.shape}")
    if y_channel:
        output, reference = rgb_to_y(output), rgb_to_y(reference)
    if np.array_equal(output, reference):
        return float("inf")
    return float(peak_signal_noise_ratio(reference, output, data_range=255))

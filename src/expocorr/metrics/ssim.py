"""SSIM with the settings of Wang et al. (2004) and their MATLAB ``ssim_index.m``: Gaussian window
sigma 1.5 truncated to 11×11 (scikit-image's truncate 3.5 gives radius 5), K1 0.01, K2 0.03, data
range 255, no sample-covariance correction, the mean taken over the pixels whose window lies inside
the image ('valid'); for RGB, the mean of the three per-channel SSIMs.

Not reproduced: the automatic downsampling by round(min(H, W) / 256) of Wang's later ``ssim.m``,
and MATLAB's built-in ``ssim`` (7×7 window, replicate padding, an RGB image treated as a volume).

``ssim(out, ref, y_channel=True)`` computes the SSIM of the BT.601 luma Y of both images instead
(MATLAB's ``rgb2ycbcr``, Y in [16, 235] as float, data range 255; see `expocorr.metrics.ycbcr`).
"""

from __future__ import annotations

import numpy as np

from expocorr.metrics.ycbcr import rgb_to_y


def ssim(output: np.ndarray, reference: np.ndarray, y_channel: bool = False) -> float:
    """Mean SSIM between two uint8 RGB (or gray) images of the same shape (Y only with `y_channel`)."""
    if output.shape != reference.shape:
        raise ValueError(f"ssim: shapes differ: {output.shape} vs {reference.shape}")
    from skimage.metrics import structural_similarity  # SciPy's stats: loaded on first use, not on import

    if y_channel:
        output, reference = rgb_to_y(output), rgb_to_y(reference)
    return float(
        structural_similarity(
            reference, output, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            channel_axis=-1 if output.ndim == 3 else None,
        )
    )

"""SSIM with MATLAB-compatible settings (Wang et al. 2004): Gaussian window sigma 1.5, K1 0.01,
K2 0.03, data range 255, no sample-covariance correction; mean over RGB channels."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def ssim(output: np.ndarray, reference: np.ndarray) -> float:
    """Mean SSIM between two uint8 RGB (or gray) images of the same shape."""
    if output.shape != reference.shape:
        raise ValueError(f"ssim: shapes differ: {output.shape} vs {reference.shape}")
    return float(
        structural_similarity(
            reference, output, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            channel_axis=-1 if output.ndim == 3 else None,
        )
    )

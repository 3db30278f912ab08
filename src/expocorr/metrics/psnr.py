"""PSNR on 8-bit RGB, peak 255, MSE over all pixels and channels."""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio


def psnr(output: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB between two uint8 images of the same shape (inf when identical)."""
    if output.shape != reference.shape:
        raise ValueError(f"psnr: shapes differ: {output.shape} vs {reference.shape}")
    return float(peak_signal_noise_ratio(reference, output, data_range=255))

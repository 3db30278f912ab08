"""Mean CIEDE2000 colour difference between two 8-bit sRGB images.

Each pixel is converted to CIELAB with scikit-image's ``rgb2lab`` (sRGB decoding, D65 white,
2° observer) and compared with ``deltaE_ciede2000`` (Sharma, Wu & Dalal 2005; kL = kC = kH = 1);
the score is the mean over all pixels (lower is better, 0 for identical images). The formula is
symmetric in its two arguments. Pixels are processed in bands of rows so that memory stays bounded
on full-resolution photos.
"""

from __future__ import annotations

import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab

_BAND_PIXELS = 1 << 20  # pixels per band: bounds the float64 temporaries of deltaE_ciede2000


def delta_e2000(output: np.ndarray, reference: np.ndarray) -> float:
    """Mean CIEDE2000 between two uint8 H×W×3 sRGB images of the same shape."""
    if output.shape != reference.shape:
        raise ValueError(f"delta_e2000: shapes differ: {output.shape} vs {reference.shape}")
    for name, image in (("output", output), ("reference", reference)):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"delta_e2000: {name} must be uint8 H×W×3 RGB, got {image.dtype} {image.shape}")
    height, width = output.shape[:2]
    if height * width == 0:
        raise ValueError(f"delta_e2000: empty image {output.shape}")
    rows = max(1, _BAND_PIXELS // width)
    total = 0.0
    for top in range(0, height, rows):
        band = slice(top, top + rows)
        lab_out = rgb2lab(output[band], illuminant="D65", observer="2")
        lab_ref = rgb2lab(reference[band], illuminant="D65", observer="2")
        total += float(deltaE_ciede2000(lab_ref, lab_out).sum(dtype=np.float64))
    return total / (height * width)

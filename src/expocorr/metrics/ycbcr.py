"""BT.601 luma as MATLAB's ``rgb2ycbcr`` computes it: the Y channel of the Y-channel PSNR/SSIM variants.

For 8-bit R, G, B in 0..255 (equivalently r, g, b = R/255, ... in [0, 1])::

    Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255  =  16 + 65.481 r + 128.553 g + 24.966 b

so Y lies in [16, 235] (studio swing) and is compared with data range 255, as in MATLAB and in the
super-resolution / exposure-correction literature (e.g. BasicSR's ``test_y_channel``). Y is kept in
float64 and *not* rounded to integers (MATLAB's ``rgb2ycbcr`` on a uint8 image would round; the
difference in PSNR is a few hundredths of a dB at most).
"""

from __future__ import annotations

import numpy as np

BT601_Y = np.array([65.481, 128.553, 24.966])  # per unit of r, g, b in [0, 1]


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma Y in [16, 235] (float64, H×W) of a uint8 H×W×3 RGB image."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb_to_y: need a uint8 H×W×3 RGB image, got {rgb.dtype} {rgb.shape}")
    return 16.0 + rgb.astype(np.float64) @ (BT601_Y / 255.0)

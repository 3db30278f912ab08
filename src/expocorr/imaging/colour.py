"""Colour curves and exposure in linear light: sRGB (IEC 61966-2-1) and gamma camera curves, the
log-average key of an image (Reinhard et al. 2002) and re-exposure by a number of stops.

The bottom of the package: the render stages, the baselines and the registration build on it.
"""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2gray

LUMA_BT601 = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights (OpenCV's RGB2GRAY)
MID_GREY = 0.18  # Reinhard's key: the linear luminance a well-exposed image's log-average sits at


LOG_DELTA = 1e-4  # keeps log() finite on black pixels (Reinhard et al. 2002, eq. 1)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB decoding of values in [0, 1] (clipped to that range first)."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB encoding of linear values in [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def decode_curve(x: np.ndarray, curve: str, gamma: float) -> np.ndarray:
    """Camera-curve values in [0, 1] -> linear light."""
    return srgb_to_linear(x) if curve == "srgb" else np.power(np.clip(x, 0, 1), gamma)


def encode_curve(x: np.ndarray, curve: str, gamma: float) -> np.ndarray:
    """Linear light -> camera-curve values in [0, 1]."""
    return linear_to_srgb(x) if curve == "srgb" else np.power(np.clip(x, 0, 1), 1 / gamma)


def key_ev(linear: np.ndarray, key: float = MID_GREY) -> float:
    """Stops that bring the log-average luminance ``exp(mean(log(delta + Y)))`` of linear RGB (Y: Rec. 709,
    ``skimage.color.rgb2gray``; Reinhard et al. 2002, eq. 1) to `key`."""
    return float(np.log2(key / np.exp(np.mean(np.log(LOG_DELTA + rgb2gray(linear))))))


def expose(linear: np.ndarray, ev: float, tau: float) -> np.ndarray:
    """Scale linear light by 2**ev; for ev > 0 clip highlights at tau and rescale to [0, 1]."""
    x = linear * 2.0**ev
    if ev > 0 and tau < 1:
        x = np.minimum(x, tau) / tau
    return np.clip(x, 0.0, 1.0)

"""Single-image classical baselines: identity, histogram equalisation, CLAHE, automatic gamma and
automatic exposure (OpenCV / scikit-image implementations; see each docstring for the exact recipe)."""

from __future__ import annotations

import cv2
import numpy as np
from skimage.color import rgb2gray
from skimage.exposure import adjust_gamma

from expocorr.baselines.registry import camera_curve, register
from expocorr.imaging.images import to_uint8
from expocorr.imaging.colour import decode_curve, encode_curve, key_ev

CLAHE_CLIP_LIMIT = 2.0
CLAHE_TILES = (8, 8)
GAMMA_RANGE = (0.25, 4.0)  # gamma_auto never applies a gamma outside this range
EV_AUTO_RANGE = (-6.0, 6.0)  # ev_auto never changes exposure by more stops than this


@register("identity")
def identity(rgb: np.ndarray, ctx: dict) -> np.ndarray:
    """The input unchanged: the floor every method must beat."""
    return rgb.copy()


@register("he")
def he(rgb: np.ndarray, ctx: dict) -> np.ndarray:
    """Global histogram equalisation of the luma: 8-bit RGB -> YCrCb (OpenCV, BT.601),
    ``cv2.equalizeHist`` on Y, chroma kept, back to RGB."""
    ycrcb = cv2.cvtColor(to_uint8(rgb), cv2.COLOR_RGB2YCrCb)
    ycrcb[..., 0] = cv2.equalizeHist(np.ascontiguousarray(ycrcb[..., 0]))
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB).astype(np.float32) / 255.0


@register("clahe")
def clahe(rgb: np.ndarray, ctx: dict) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (Zuiderveld 1994) of CIELAB L: 8-bit RGB -> LAB
    (OpenCV), ``cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))`` on L, a and b kept, back to RGB."""
    lab = cv2.cvtColor(to_uint8(rgb), cv2.COLOR_RGB2LAB)
    equaliser = cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=CLAHE_TILES)
    lab[..., 0] = equaliser.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).astype(np.float32) / 255.0


@register("gamma_auto")
def gamma_auto(rgb: np.ndarray, ctx: dict) -> np.ndarray:
    """Global gamma chosen so the mean luma maps to 0.5: ``gamma = log(0.5) / log(mean luma)``
    (luma: Rec. 709 weights on the encoded values, ``skimage.color.rgb2gray``), clipped to
    ``GAMMA_RANGE``, applied per channel with ``skimage.exposure.adjust_gamma``."""
    return np.clip(adjust_gamma(rgb, auto_gamma(rgb)), 0.0, 1.0).astype(np.float32)


def auto_gamma(rgb: np.ndarray) -> float:
    """The gamma `gamma_auto` applies to `rgb` (see there)."""
    mean = float(np.clip(rgb2gray(rgb).mean(), 1e-4, 1.0 - 1e-4))  # black or white: the range's end
    return float(np.clip(np.log(0.5) / np.log(mean), *GAMMA_RANGE))


@register("ev_auto")
def ev_auto(rgb: np.ndarray, ctx: dict) -> np.ndarray:
    """Global exposure in linear light, Reinhard et al. (2002) key: decode the camera curve of
    ``ctx["render"]``, scale so the log-average luminance ``exp(mean(log(delta + Y)))`` (Y: Rec. 709
    luminance of linear RGB, delta = 1e-4) becomes mid-grey 0.18, the scale limited to
    ``EV_AUTO_RANGE`` stops; clip at white and re-encode."""
    curve, gamma = camera_curve(ctx)
    linear = decode_curve(rgb.astype(np.float64), curve, gamma)
    scale = 2.0 ** auto_ev(linear)
    return encode_curve(np.clip(linear * scale, 0.0, 1.0), curve, gamma).astype(np.float32)


def auto_ev(linear: np.ndarray) -> float:
    """The exposure change in stops `ev_auto` applies to linear RGB `linear` (see there)."""
    return float(np.clip(key_ev(linear), *EV_AUTO_RANGE))

"""ECC registration of one exposure to a template (a reference image or another exposure of the stack).

Images are compared as *exposure-normalised grayscale*: linear luminance (sRGB decoded, Rec. 709
weights) scaled so its median over the unclipped pixels is mid-grey, sRGB-encoded, with clipped and
crushed pixels masked out. Two exposures of one scene then differ by little more than noise and clipping, so brightness
does not bias the fit. The warp is found coarse to fine (an image pyramid) with OpenCV's
``findTransformECC`` (Evangelidis & Psarakis 2008), masks on both images where OpenCV has
``findTransformECCWithMask`` (4.11 and later), on the input only before that.

A warp ``W`` (3×3, float64) maps template pixel coordinates ``x`` to input coordinates: the aligned
input is ``input(W x)``, i.e. ``cv2.warpAffine``/``warpPerspective`` with ``WARP_INVERSE_MAP``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from expocorr.imaging.colour import linear_to_srgb, srgb_to_linear

MOTIONS = {
    "translation": cv2.MOTION_TRANSLATION,
    "euclidean": cv2.MOTION_EUCLIDEAN,
    "affine": cv2.MOTION_AFFINE,
    "homography": cv2.MOTION_HOMOGRAPHY,
}
LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # Rec. 709 weights of linear RGB
CLIPPED = 0.98  # an encoded channel at or above this is clipped (masked out)
CRUSHED = 0.002  # linear luminance below this (8-bit code ~7) is noise (masked out)
MID_GREY = 0.18  # the median luminance every image is normalised to
MIN_VALID = 0.05  # fewer valid pixels than this fraction: no fit
GAUSS_FILTER = 5  # findTransformECC's Gaussian pre-filter (OpenCV's default)
MIN_LEVEL_SIDE = 32  # the pyramid stops before a level's short side drops below this
CROP_SLACK = 0.1  # px a warped border pixel may sample outside the input (the border is replicated there)


@dataclass
class Alignment:
    """The fitted warp (3×3, template -> input coordinates), the ECC correlation of the aligned pair
    over the pixels valid in both (NaN when there are too few), and a note when the fit failed."""

    warp: np.ndarray
    ecc: float
    note: str = ""


def _luminance(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear luminance of sRGB `rgb` and where it is valid (neither clipped nor crushed)."""
    rgb = np.asarray(rgb, dtype=np.float32)
    luminance = (srgb_to_linear(rgb) @ LUMA).astype(np.float32)
    return luminance, (rgb.max(axis=-1) < CLIPPED) & (luminance >= CRUSHED)


def normalised_greys(template: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, ...]:
    """Exposure-normalised grayscale of two sRGB images and their validity masks:
    ``(template grey, template mask, image grey, image mask)``.

    Each image's linear luminance is scaled so that its median over the pixels valid in *both* images
    (neither clipped nor crushed; all valid pixels of each when they share too few) is mid-grey 0.18,
    then clipped to [0, 1] and sRGB-encoded (float32): a scene point then has nearly the same grey in
    two exposures, and clipped areas stay as flat as the camera clipped them. Masks are uint8 (255: valid).
    """
    (t_lum, t_valid), (i_lum, i_valid) = _luminance(template), _luminance(image)
    joint = t_valid & i_valid if t_lum.shape == i_lum.shape else None
    if joint is None or joint.mean() < MIN_VALID:
        t_ref, i_ref = t_lum[t_valid], i_lum[i_valid]
    else:
        t_ref, i_ref = t_lum[joint], i_lum[joint]
    greys = [linear_to_srgb(np.clip(lum * (MID_GREY / max(float(np.median(ref)) if ref.size else 1.0, 1e-6)), 0, 1))
             .astype(np.float32) for lum, ref in ((t_lum, t_ref), (i_lum, i_ref))]
    return greys[0], t_valid.astype(np.uint8) * 255, greys[1], i_valid.astype(np.uint8) * 255


def _level_map(level: int) -> np.ndarray:
    """Pixel coordinates at full resolution -> at pyramid `level` (each level an area halving)."""
    half = np.array([[0.5, 0.0, -0.25], [0.0, 0.5, -0.25], [0.0, 0.0, 1.0]])
    return np.linalg.matrix_power(half, level)


def _half(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape
    size = (max(1, round(w / 2)), max(1, round(h / 2)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    small_mask = cv2.resize(mask.astype(np.float32) / 255.0, size, interpolation=cv2.INTER_AREA)
    return small, ((small_mask > 0.99) * 255).astype(np.uint8)


def _pyramid(image: np.ndarray, mask: np.ndarray, levels: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = [(image, mask)]
    while len(out) < levels and min(out[-1][0].shape) // 2 >= MIN_LEVEL_SIDE:
        out.append(_half(*out[-1]))
    return out


def warp_points(warp: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3×3 warp to N×2 points (x, y)."""
    homogeneous = np.c_[points, np.ones(len(points))] @ np.asarray(warp, dtype=np.float64).T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def corners(shape: tuple[int, ...]) -> np.ndarray:
    """The four corner pixel centres (x, y) of an image of `shape` (H, W, ...)."""
    h, w = shape[:2]
    return np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], dtype=np.float64)


def corner_shift(warp: np.ndarray, shape: tuple[int, ...]) -> float:
    """The largest distance (pixels, max-norm) any image corner moves under `warp`."""
    c = corners(shape)
    return float(np.abs(warp_points(warp, c) - c).max())


def warp_image(image: np.ndarray, warp: np.ndarray, shape: tuple[int, ...],
               interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """`image` resampled into the template frame of `shape` (H, W): out(x) = image(warp x); borders
    replicated (the caller crops them). The identity warp returns the image unresampled."""
    h, w = shape[:2]
    if np.allclose(warp, np.eye(3), atol=0, rtol=0) and image.shape[:2] == (h, w):
        return image
    flags = interpolation | cv2.WARP_INVERSE_MAP
    src = np.ascontiguousarray(image)
    if np.allclose(warp[2], [0, 0, 1]):
        out = cv2.warpAffine(src, np.asarray(warp[:2], np.float64), (w, h), flags=flags,
                             borderMode=cv2.BORDER_REPLICATE)
    else:
        out = cv2.warpPerspective(src, np.asarray(warp, np.float64), (w, h), flags=flags,
                                  borderMode=cv2.BORDER_REPLICATE)
    return np.clip(out, 0.0, 1.0).astype(image.dtype) if np.issubdtype(image.dtype, np.floating) else out


def correlation(template: np.ndarray, image: np.ndarray, warp: np.ndarray) -> float:
    """ECC correlation coefficient of the normalised greys of `template` and `image` warped onto it,
    over the pixels valid in both; NaN when fewer than MIN_VALID of them are."""
    return _correlation(*normalised_greys(template, image), warp)


def _correlation(t_grey, t_mask, i_grey, i_mask, warp) -> float:
    aligned = warp_image(i_grey, warp, t_grey.shape, cv2.INTER_LINEAR)
    valid = (t_mask > 0) & (_warp_mask(i_mask, warp, t_grey.shape) > 0)
    if valid.mean() < MIN_VALID:
        return float("nan")
    return float(cv2.computeECC(t_grey, aligned.astype(np.float32), valid.astype(np.uint8) * 255))


def _warp_mask(mask: np.ndarray, warp: np.ndarray, shape: tuple) -> np.ndarray:
    """A uint8 mask resampled like `warp_image`, 0 where the warp samples outside the input."""
    h, w = shape[:2]
    flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    if np.allclose(warp[2], [0, 0, 1]):
        return cv2.warpAffine(mask, np.asarray(warp[:2], np.float64), (w, h), flags=flags,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.warpPerspective(mask, np.asarray(warp, np.float64), (w, h), flags=flags,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _ecc(template, t_mask, image, i_mask, warp, motion, criteria):
    """One findTransformECC run at one pyramid level; returns the refined 3×3 warp."""
    start = warp.astype(np.float32) if motion == "homography" else warp[:2].astype(np.float32)
    if hasattr(cv2, "findTransformECCWithMask"):
        _, found = cv2.findTransformECCWithMask(template, image, t_mask, i_mask, start, MOTIONS[motion], criteria,
                                                GAUSS_FILTER)
    else:  # OpenCV < 4.11: only the input has a mask
        _, found = cv2.findTransformECC(template, image, start, MOTIONS[motion], criteria, i_mask, GAUSS_FILTER)
    out = np.eye(3)
    out[: found.shape[0]] = found
    return out


def align(template: np.ndarray, image: np.ndarray, motion: str = "euclidean", max_iterations: int = 200,
          epsilon: float = 1e-6, levels: int = 3, max_shift: float = math.inf,
          start: np.ndarray | None = None) -> Alignment:
    """Fit the warp that aligns sRGB `image` to sRGB `template` (float RGB in [0, 1], any sizes).

    `motion` is ``none`` (the `start` warp, identity by default, is kept; only the correlation is
    measured), ``translation``, ``euclidean``, ``affine`` or ``homography``. The fit starts from
    `start` and runs over `levels` pyramid levels (halvings), coarse to fine, each with at most
    `max_iterations` ECC iterations or until the correlation gains less than `epsilon`. A level where ECC
    does not converge, or whose warp moves an image corner more than `max_shift` pixels, keeps the warp
    it started from; a final warp that correlates worse than `start` is replaced by `start`. Each such
    event is recorded in `Alignment.note`.
    """
    t_grey, t_mask, i_grey, i_mask = normalised_greys(template, image)
    first = np.eye(3) if start is None else np.asarray(start, dtype=np.float64)
    if min((t_mask > 0).mean(), (i_mask > 0).mean()) < MIN_VALID:
        return Alignment(first, float("nan"), "too few pixels neither clipped nor crushed")
    notes, warp = [], first
    if motion != "none":
        if motion not in MOTIONS:
            raise ValueError(f"unknown motion {motion!r}; known: none, {', '.join(MOTIONS)}")
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, int(max_iterations), float(epsilon))
        t_levels, i_levels = _pyramid(t_grey, t_mask, levels), _pyramid(i_grey, i_mask, levels)
        for level in reversed(range(min(len(t_levels), len(i_levels)))):
            to_level = _level_map(level)
            try:
                found = _ecc(*t_levels[level], *i_levels[level], to_level @ warp @ np.linalg.inv(to_level), motion,
                             criteria)
            except cv2.error:
                notes.append(f"ECC did not converge at pyramid level {level}")
                continue
            found = np.linalg.inv(to_level) @ found @ to_level
            found /= found[2, 2]
            if corner_shift(found, t_grey.shape) > max_shift:
                notes.append(f"pyramid level {level} moved a corner more than {max_shift:g} px; ignored")
                continue
            warp = found
    ecc = _correlation(t_grey, t_mask, i_grey, i_mask, warp)
    if motion != "none" and warp is not first:
        before = _correlation(t_grey, t_mask, i_grey, i_mask, first)
        if math.isnan(ecc) or before > ecc:
            notes.append("the fit did not improve the correlation of its start warp; start kept")
            warp, ecc = first, before
    if math.isnan(ecc):
        notes.append("too little overlap of valid pixels after alignment")
    return Alignment(warp, ecc, "; ".join(notes))


def crop_margin(warps: list[np.ndarray], shape: tuple[int, ...]) -> int:
    """Pixels to crop from every side so that no output pixel of any of `warps` samples more than
    CROP_SLACK px outside the input: the largest corner shift less the slack, rounded up (exact for
    affine warps, whose shift is largest at a corner). Sub-pixel fits of an aligned stack crop nothing."""
    shift = max((corner_shift(w, shape) for w in warps), default=0.0)
    return max(0, math.ceil(shift - CROP_SLACK))

"""Histogram similarity of luminance, contrast and saturation between a SET of outputs and a SET of
references, the unpaired measure of Hu et al., "Exposure: A White-Box Photo Post-Processing
Framework" (ACM TOG 37(2), 2018), as released with the paper in
``histogram_intersection.py`` of github.com/yuanming-hu/exposure; exposure-GAN reports borrow it.

Definition implemented (identical to that script unless noted):

1. Samples. An 8-bit image becomes float RGB x = value / 255 in [0, 1]. With ``patches=True``
   (the default, Hu et al.'s protocol) each image gives 16 samples: 4 times, a random square crop
   whose side is the image's short side is resized to 80×80 with area interpolation (OpenCV
   INTER_AREA, float, not requantised), and 4 random 64×64 crops are taken from it (offsets
   uniform in 0..15, as ``random.randrange(0, 80 - 64)`` draws them). Differences from the script:
   the random numbers come from ``numpy.random.default_rng((seed, k))`` for the k-th `add` call, so
   a run is reproducible, two methods evaluated on the same list of images get the same crops, and
   an output and its reference (same size) get the same crops. With ``patches=False`` the whole
   image is the one sample.
2. Statistics of a sample (`image_statistics`), all in [0, 1]:
     luminance  L = mean over pixels of  l = 0.27 r + 0.67 g + 0.06 b   (on the stored, gamma-encoded
                    values; Hu et al.'s weights, not BT.601 or BT.709),
     contrast   C = 2 · std over pixels of l   (population std; the factor 2 maps the largest
                    possible std, 0.5, to 1 so that C fills the same [0, 1] range),
     saturation S = mean over pixels of the HLS saturation (OpenCV ``COLOR_RGB2HLS`` on float32:
                    (max − min) / (max + min) if lightness < 0.5 else (max − min) / (2 − max − min),
                    0 for grey pixels).
3. Histograms. For each statistic, the values of all samples of one set are counted in 32 equal bins
   on [0, 1] (the last bin closed) and divided by the number of samples, giving p (outputs) and q
   (references), each summing to 1. 32 bins and [0, 1] are Hu et al.'s HIST_BINS and range: every
   statistic lies in [0, 1] by construction (so no sample is lost and no range is data-dependent,
   which keeps the score comparable between methods and runs), and 32 bins of width 1/32 ≈ 0.03
   resolve an exposure shift of about a quarter stop at mid-grey while keeping a few samples per bin for test
   sets of a few hundred images × 16 patches.
4. Similarity = histogram intersection  Σ_i min(p_i, q_i)  in [0, 1]; 1 means identical histograms,
   0 disjoint ones. Reported as ``hist_luminance``, ``hist_contrast``, ``hist_saturation`` (Hu et al.
   print them as percentages). NaN when either set is empty.

The sets are unpaired: only the distributions matter (this is what makes the measure usable for
methods trained without paired data), so it says nothing about any single image.

The report's luminance-histogram figure (the GAN seed's figure 10) plots the per-pixel
distribution of the same l (`luminance`) over the example outputs and references.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

HIST_BINS = 32
LUMINANCE_WEIGHTS = np.array([0.27, 0.67, 0.06])  # r, g, b, as in Hu et al.'s histogram_intersection.py
PATCHES_PER_IMAGE = 16  # 4 square crops × 4 sub-crops
_CROP_RESIZE, _PATCH = 80, 64
KEYS = ("hist_luminance", "hist_contrast", "hist_saturation")


def _as_float_rgb(rgb: np.ndarray, name: str = "image") -> np.ndarray:
    """uint8 → float32 / 255; float → clipped to [0, 1] (as Hu et al. clip); checks H×W×3."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"{name}: need an H×W×3 RGB image, got shape {rgb.shape}")
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(rgb.dtype, np.floating):
        return np.clip(rgb, 0.0, 1.0).astype(np.float32)
    raise ValueError(f"{name}: need uint8 or float RGB, got {rgb.dtype}")


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel l = 0.27 r + 0.67 g + 0.06 b in [0, 1] (float64, H×W) of uint8 or float [0, 1] RGB."""
    return _as_float_rgb(rgb).astype(np.float64) @ LUMINANCE_WEIGHTS


def image_statistics(rgb: np.ndarray) -> tuple[float, float, float]:
    """(luminance, contrast, saturation) of one image or patch, each in [0, 1] (see the module doc).

    `rgb` is uint8 (divided by 255) or float in [0, 1] (clipped).
    """
    x = _as_float_rgb(rgb)
    lum = x.astype(np.float64) @ LUMINANCE_WEIGHTS
    sat = cv2.cvtColor(x, cv2.COLOR_RGB2HLS)[:, :, 2]
    return float(lum.mean()), float(2.0 * lum.std()), float(sat.mean(dtype=np.float64))


def _crop_plan(shape: tuple[int, ...], rng: np.random.Generator) -> list[tuple[int, int, int, int, int]]:
    """Hu et al.'s 16 crops of an image of `shape`: (y, x, side, sub_y, sub_x) each."""
    height, width = shape[:2]
    side = min(height, width)
    plan = []
    for _ in range(4):
        y = int(rng.integers(0, height - side + 1))
        x = int(rng.integers(0, width - side + 1))
        for _ in range(4):
            sub_y = int(rng.integers(0, _CROP_RESIZE - _PATCH))
            sub_x = int(rng.integers(0, _CROP_RESIZE - _PATCH))
            plan.append((y, x, side, sub_y, sub_x))
    return plan


def _apply_plan(x: np.ndarray, plan: list[tuple[int, int, int, int, int]]) -> list[np.ndarray]:
    patches, resized = [], {}
    for y, x0, side, sub_y, sub_x in plan:
        key = (y, x0)
        if key not in resized:
            square = np.ascontiguousarray(x[y:y + side, x0:x0 + side])
            resized[key] = cv2.resize(square, (_CROP_RESIZE, _CROP_RESIZE), interpolation=cv2.INTER_AREA)
        patches.append(resized[key][sub_y:sub_y + _PATCH, sub_x:sub_x + _PATCH])
    return patches


def sample_patches(rgb: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Hu et al.'s 16 float32 64×64 patches of one image (4 square crops → 80×80 → 4 random 64×64 each)."""
    return _apply_plan(_as_float_rgb(rgb), _crop_plan(np.shape(rgb), rng))


def set_similarity(
    output_stats: Sequence[Sequence[float]] | np.ndarray,
    reference_stats: Sequence[Sequence[float]] | np.ndarray,
    bins: int = HIST_BINS,
) -> dict[str, float]:
    """Histogram intersections of two sets of (luminance, contrast, saturation) rows (N×3 and M×3).

    Returns ``{"hist_luminance", "hist_contrast", "hist_saturation"}``, each Σ_i min(p_i, q_i) over
    `bins` equal bins on [0, 1], histograms divided by the set's size; NaN if a set is empty.
    """
    out = np.asarray(output_stats, dtype=np.float64).reshape(-1, 3)
    ref = np.asarray(reference_stats, dtype=np.float64).reshape(-1, 3)
    if len(out) == 0 or len(ref) == 0:
        return {key: float("nan") for key in KEYS}
    result = {}
    for column, key in enumerate(KEYS):
        p = np.histogram(out[:, column], bins=bins, range=(0.0, 1.0))[0] / len(out)
        q = np.histogram(ref[:, column], bins=bins, range=(0.0, 1.0))[0] / len(ref)
        result[key] = float(np.minimum(p, q).sum())
    return result


class HistogramSimilarity:
    """Accumulates outputs and references one pair at a time; `result()` compares the two sets.

    ``patches=True`` follows Hu et al. (16 random 64×64 patches per image, reproducible from
    `seed` and the order of `add` calls); ``patches=False`` uses one sample per whole image.
    """

    def __init__(self, bins: int = HIST_BINS, patches: bool = True, seed: int = 0):
        if bins < 1:
            raise ValueError(f"HistogramSimilarity: bins must be >= 1, got {bins}")
        self.bins, self.patches, self.seed = int(bins), bool(patches), int(seed)
        self.output_stats: list[tuple[float, float, float]] = []
        self.reference_stats: list[tuple[float, float, float]] = []
        self._count = 0

    def add(self, output: np.ndarray, reference: np.ndarray) -> None:
        """Add one output to the output set and its reference to the reference set (uint8 H×W×3)."""
        out, ref = _as_float_rgb(output, "output"), _as_float_rgb(reference, "reference")
        if not self.patches:
            self.output_stats.append(image_statistics(out))
            self.reference_stats.append(image_statistics(ref))
        else:
            rng = np.random.default_rng((self.seed, self._count))
            plan = _crop_plan(out.shape, rng)
            ref_plan = plan if ref.shape == out.shape else _crop_plan(ref.shape, rng)
            self.output_stats.extend(image_statistics(p) for p in _apply_plan(out, plan))
            self.reference_stats.extend(image_statistics(p) for p in _apply_plan(ref, ref_plan))
        self._count += 1

    def __len__(self) -> int:
        """The number of pairs added."""
        return self._count

    def result(self) -> dict[str, float]:
        """``{"hist_luminance": …, "hist_contrast": …, "hist_saturation": …}`` in [0, 1] (NaN if empty)."""
        return set_similarity(self.output_stats, self.reference_stats, self.bins)



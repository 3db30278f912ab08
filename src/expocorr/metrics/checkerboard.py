"""Grid (checkerboard) artefacts: the amplitude of the pattern an image repeats with a period of 2, 4 or 8 px.

Transposed convolutions and strided decoders can print a faint periodic pattern on their output
(Odena et al., "Deconvolution and checkerboard artifacts", Distill 2016). For each period p, the luma's
high-pass residual h = Y − box_p(Y) (a p×p box mean, which keeps any p-periodic pattern) is folded
onto one p×p cell (the mean of h over every pixel with the same (y mod p, x mod p)); the RMS of that
cell, in 8-bit grey levels, is the image's p-periodic amplitude. Natural detail does not line up with a
fixed grid and averages out (a fraction of a level on a 512-px photo); a printed ±2-level checkerboard
scores 2. `grid_amplitude` is the largest over the periods, and `grid_excess` the output's amplitude
above its input's at the worst period (JPEG's own 8-px blocks are in both).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from expocorr.imaging.colour import LUMA_BT601

PERIODS = (2, 4, 8)  # longer periods: natural detail alone folds to a level or more at 512 px
LUMA = np.array(LUMA_BT601)


def periodic_amplitudes(image: np.ndarray, periods: tuple[int, ...] = PERIODS) -> dict[int, float]:
    """{period: RMS (8-bit grey levels) of the pattern repeating with that period} of an RGB or grey
    image in [0, 1]."""
    y = np.asarray(image, dtype=np.float64)
    if y.ndim == 3:
        y = y[..., :3] @ LUMA
    amplitudes = {}
    for p in periods:
        h, w = (y.shape[0] // p) * p, (y.shape[1] // p) * p
        if h < 2 * p or w < 2 * p:
            continue
        hp = (y - ndimage.uniform_filter(y, size=p, mode="reflect"))[:h, :w]
        cell = hp.reshape(h // p, p, w // p, p).mean(axis=(0, 2))
        amplitudes[p] = 255 * float(np.sqrt(np.mean(cell ** 2)))
    return amplitudes


def grid_amplitude(image: np.ndarray) -> float:
    """The largest periodic amplitude of `image` over PERIODS (8-bit grey levels)."""
    return max(periodic_amplitudes(image).values(), default=0.0)


def grid_excess(output: np.ndarray, source: np.ndarray) -> float:
    """How many grey levels more of a fixed-grid pattern the output has than its input, at the worst period."""
    out, src = periodic_amplitudes(output), periodic_amplitudes(source)
    return max((out[p] - src.get(p, 0.0) for p in out), default=0.0)

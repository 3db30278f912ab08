"""Grid-artefact metric (expocorr.metrics.checkerboard): natural photos score near zero, a faint printed
grid and a stride-2 transposed convolution's output do not, and resampling does not create one."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from expocorr.metrics.checkerboard import grid_amplitude, grid_excess, periodic_amplitudes


@pytest.fixture(scope="module")
def photo():
    return data.astronaut().astype(np.float64) / 255


def _checker(shape, period, amplitude):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return amplitude * np.where(((yy // (period // 2)) + (xx // (period // 2))) % 2, 1.0, -1.0)[..., None]


def test_natural_photo_has_no_grid(photo):
    """Under half a grey level at every period (2, 4, 8 px), on a 512-px photo."""
    assert grid_amplitude(photo) < 0.5
    assert grid_excess(photo, photo) == 0.0


@pytest.mark.parametrize("period", [2, 4, 8])
def test_faint_grid_is_found_at_its_period(photo, period):
    """A ±1 % checkerboard (2.5 grey levels, barely visible) at 2–8 px: found at its period and the
    periods it divides, not below."""
    gridded = np.clip(photo + _checker(photo.shape, period, 0.01), 0, 1)
    amplitudes = periodic_amplitudes(gridded)
    assert all(amplitudes[p] > 2 if p % period == 0 else amplitudes[p] < 0.5 for p in amplitudes)
    assert grid_excess(gridded, photo) > 2


def test_resampling_and_tone_changes_make_no_grid(photo):
    """What a correct exposure method does (brighten, smooth, resize) stays on no grid."""
    brighter = np.clip(photo ** 0.6, 0, 1)
    blurred = cv2.GaussianBlur(photo, (0, 0), 1.5)
    resized = cv2.resize(cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA), (512, 512),
                         interpolation=cv2.INTER_LINEAR)
    for image in (brighter, blurred, resized):
        assert grid_excess(image, photo) < 0.5


def test_stride_two_transposed_convolution_prints_a_grid(photo):
    """The failure mode the metric is for: an untrained 2×2 stride-2 transposed convolution (the exposure
    GAN's decoder upsampling) applied to a half-size copy prints a 2-px pattern."""
    torch.manual_seed(0)
    up = torch.nn.ConvTranspose2d(3, 3, 2, stride=2)
    small = cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA)
    with torch.no_grad():
        out = up(torch.from_numpy(small).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).numpy()
    out = (out - out.min()) / (out.max() - out.min())
    assert grid_excess(out, photo) > 2

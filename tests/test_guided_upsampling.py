"""Bilateral guided upsampling on a real photo: what it reproduces, to a measured tolerance."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from expocorr.imaging import guided_upsampling
from expocorr.baselines import BASELINES
from expocorr.imaging.guided_upsampling import fit_grid, guided_upsample, slice_grid


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo (scikit-image's astronaut, 512²) upscaled to 1024×1536 float RGB."""
    rgb = skimage.data.astronaut().astype(np.float32) / 255.0
    return np.clip(cv2.resize(rgb, (1536, 1024), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def downscale(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(rgb, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def varying_tone(rgb: np.ndarray) -> np.ndarray:
    """A spatially varying tone curve (gamma 0.5 -> 1.5 left to right) and a colour mix: a smooth local operator."""
    gamma = np.linspace(0.5, 1.5, rgb.shape[1], dtype=np.float32)[None, :, None]
    mix = np.array([[0.9, 0.1, 0.0], [0.05, 0.9, 0.05], [0.0, 0.1, 0.9]], dtype=np.float32)
    return np.clip(rgb**gamma @ mix.T, 0.0, 1.0)


def test_shape_dtype_range(photo):
    low = downscale(photo, (256, 384))
    out = guided_upsample(photo, low, np.clip(low * 1.5, 0, 1))
    assert out.shape == photo.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_recovers_a_smooth_local_operator_at_full_resolution(photo):
    """The operator applied at full size is what the low-res fit reproduces there (far better than bilinear)."""
    low = downscale(photo, (342, 512))
    out = guided_upsample(photo, low, varying_tone(low))
    truth = varying_tone(photo)
    bilinear = cv2.resize(varying_tone(low), (photo.shape[1], photo.shape[0]), interpolation=cv2.INTER_LINEAR)
    assert psnr(out, truth) > 42.0  # measured 46.7 dB
    assert psnr(out, truth) > psnr(bilinear, truth) + 5.0  # measured +8.4 dB


@pytest.mark.parametrize("operator", ["varying_tone", "clahe", "gamma_auto"])
def test_full_size_output_downscaled_matches_the_low_res_result(photo, operator):
    """The issue's check: the full-size result, downscaled back, is the low-res result within a tolerance."""
    low = downscale(photo, (342, 512))
    fn = varying_tone if operator == "varying_tone" else (lambda x: BASELINES[operator].fn(x, {}))
    low_out = fn(low)
    out = guided_upsample(photo, low, low_out)
    back = downscale(out, low.shape[:2])
    # Measured: varying_tone 46.7 dB, gamma_auto > 45 dB, CLAHE (a local, tiled histogram operator) 35.5 dB.
    assert psnr(back, low_out) > (33.0 if operator == "clahe" else 40.0)


def test_identity_pair_gives_back_the_input(photo):
    low = downscale(photo, (342, 512))
    assert psnr(guided_upsample(photo, low, low), photo) > 45.0


def test_row_bands_and_fit_chunks_do_not_change_the_result(photo, monkeypatch):
    low = downscale(photo, (171, 256))
    low_out = varying_tone(low)
    whole = guided_upsample(photo, low, low_out)
    monkeypatch.setattr(guided_upsampling, "BAND_PIXELS", photo.shape[1] * 7)  # 7-row bands
    monkeypatch.setattr(guided_upsampling, "FIT_CHUNK", 1000)
    np.testing.assert_allclose(guided_upsample(photo, low, low_out), whole, atol=1e-6)


def test_grid_shape_and_slicing_of_a_global_affine_map():
    rng = np.random.default_rng(0)
    low = rng.random((40, 60, 3), dtype=np.float32)
    matrix = np.array([[0.5, 0.1, 0.0], [0.0, 0.6, 0.1], [0.1, 0.0, 0.7]], dtype=np.float32)
    grid = fit_grid(low, low @ matrix.T + 0.1, cell=16, bins=4)
    assert grid.shape == (4, 5, 5, 3, 4)  # ceil(40/16)+1, ceil(60/16)+1, bins+1 nodes; 3×4 affine
    full = rng.random((80, 120, 3), dtype=np.float32)
    np.testing.assert_allclose(slice_grid(grid, full, (40, 60), cell=16), full @ matrix.T + 0.1, atol=2e-3)


def test_bad_shapes_are_refused(photo):
    low = downscale(photo, (64, 96))
    with pytest.raises(ValueError, match="low_out"):
        guided_upsample(photo, low, low[:10])
    with pytest.raises(ValueError, match="full_in"):
        guided_upsample(photo[..., 0], low, low)


# ------------------------------------------- the NumPy implementation the torch one replaced (expocorr 02b111a)

def numpy_fit_grid(low_in, low_out, cell, bins, eps=1e-4, smooth=1):
    """The former fit: per-node float64 normal equations splatted with np.bincount, scipy's [1, 2, 1] blur."""
    from scipy.ndimage import convolve1d

    def axis_weights(coord, n):
        coord = np.clip(coord, 0.0, n - 1)
        i0 = np.minimum(np.floor(coord).astype(np.int64), n - 2)
        return i0, (coord - i0).astype(np.float32)

    h, w = low_in.shape[:2]
    gh, gw, gd = int(np.ceil(h / cell)) + 1, int(np.ceil(w / cell)) + 1, bins + 1
    flat_in, flat_out = low_in.reshape(-1, 3), low_out.reshape(-1, 3)
    index = np.arange(h * w)
    x = np.concatenate([flat_in.astype(np.float64), np.ones((h * w, 1))], axis=1)
    y = flat_out.astype(np.float64)
    iy, fy = axis_weights((index // w + 0.5) / cell, gh)
    ix, fx = axis_weights((index % w + 0.5) / cell, gw)
    iz, fz = axis_weights((flat_in @ np.array([0.25, 0.5, 0.25], np.float32)) * bins, gd)
    stats = np.concatenate([(x[:, :, None] * x[:, None, :]).reshape(-1, 16),
                            (x[:, :, None] * y[:, None, :]).reshape(-1, 12), np.ones((h * w, 1))], axis=1)
    acc = np.zeros((gh * gw * gd, 29))
    for dy, dx, dz in np.ndindex(2, 2, 2):
        node = ((iy + dy) * gw + (ix + dx)) * gd + (iz + dz)
        weight = ((fy if dy else 1 - fy) * (fx if dx else 1 - fx) * (fz if dz else 1 - fz)).astype(np.float64)
        for k in range(29):
            acc[:, k] += np.bincount(node, weights=weight * stats[:, k], minlength=gh * gw * gd)
    total = acc.sum(axis=0)
    global_a = np.linalg.lstsq(total[:16].reshape(4, 4) + 1e-9 * np.eye(4), total[16:28].reshape(4, 3), rcond=None)[0]
    acc = acc.reshape(gh, gw, gd, -1)
    for _ in range(smooth):
        for axis in range(3):
            acc = convolve1d(acc, [0.25, 0.5, 0.25], axis=axis, mode="nearest")
    lam = (eps * acc[..., 28] + 1e-6)[..., None, None]
    a = np.linalg.solve(acc[..., :16].reshape(gh, gw, gd, 4, 4) + lam * np.eye(4),
                        acc[..., 16:28].reshape(gh, gw, gd, 4, 3) + lam * global_a)
    return np.swapaxes(a, -1, -2).astype(np.float32)


def numpy_slice_grid(grid, full_in, low_shape, cell):
    """The former slice: the grid's trilinear interpolation gathered with NumPy fancy indexing."""
    gh, gw, gd = grid.shape[:3]
    (big_h, big_w), (low_h, low_w) = full_in.shape[:2], low_shape
    cx = np.clip((np.arange(big_w) + 0.5) * (low_w / big_w) / cell, 0, gw - 1)
    cy = np.clip((np.arange(big_h) + 0.5) * (low_h / big_h) / cell, 0, gh - 1)
    cz = np.clip(full_in @ np.array([0.25, 0.5, 0.25], np.float32) * (gd - 1), 0, gd - 1)
    ix, iy, iz = (np.minimum(np.floor(c).astype(np.int64), n - 2) for c, n in ((cx, gw), (cy, gh), (cz, gd)))
    fx, fy, fz = cx - ix, cy - iy, cz - iz
    a = np.zeros((big_h, big_w, 3, 4), np.float64)
    for dy, dx, dz in np.ndindex(2, 2, 2):
        weight = ((fy if dy else 1 - fy)[:, None] * (fx if dx else 1 - fx)[None, :] * (fz if dz else 1 - fz))
        a += grid[(iy + dy)[:, None], (ix + dx)[None, :], iz + dz] * weight[..., None, None]
    return (a[..., :3] @ full_in[..., None].astype(np.float64))[..., 0] + a[..., 3]


@pytest.mark.parametrize("cell, bins", [(16.0, 8), (200 / 21, 7)], ids=["default", "msec"])
def test_torch_fit_and_slice_match_the_former_numpy_implementation(photo, cell, bins):
    """The torch grid (sparse splat, batched solves) and slice (grid_sample over row bands) give the former
    NumPy implementation's grid and full-resolution result within 1e-4, at the default grid and MSEC's."""
    low = downscale(photo, (200, 300))
    low_out = varying_tone(low)
    grid = fit_grid(low, low_out, cell=cell, bins=bins)
    reference = numpy_fit_grid(low, low_out, cell, bins)
    np.testing.assert_allclose(grid.numpy(), reference, atol=1e-4)
    full = photo[:600, :900]
    np.testing.assert_allclose(slice_grid(grid, full, low.shape[:2], cell=cell),
                               numpy_slice_grid(reference, full, low.shape[:2], cell), atol=1e-4)

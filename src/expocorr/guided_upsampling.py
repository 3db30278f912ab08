"""Bilateral guided upsampling (Chen, Adams, Wadhwa & Hasinoff, SIGGRAPH Asia 2016).

Run an expensive image operator on a downscaled copy of a photo, then bring its result to the full
resolution by fitting a *bilateral grid of local affine colour transforms* to the low-resolution
pair (input -> output) and applying it to the full-resolution input ("slicing"):

    fit:    A[i, j, k] = argmin_A  Σ_p w_ijk(p) · ‖A · [x_p, 1] − y_p‖²  +  λ_ijk · ‖A − A_global‖²
    slice:  out(P) = A(P) · [X_P, 1],   A(P) = trilinear interpolation of the grid at (col, row, luma(X_P))

`x_p`, `y_p` are the low-resolution input and output at pixel p, `X_P` the full-resolution input;
each A is a 3×4 matrix (RGB -> RGB, plus an offset). The grid has one node every `cell`
low-resolution pixels in x and y and `bins` + 1 nodes in luma ((R + 2G + B) / 4 of the input), so a
node only sees pixels of similar brightness near it: the transform follows edges. Each pixel
splats its normal equations trilinearly into its 8 neighbouring nodes (`w_ijk`).

Differences from the paper, which solves one global sparse least-squares problem with second-order
smoothness terms over the grid: here the smoothness comes from blurring the normal equations
(a [1, 2, 1] kernel along each grid axis, `smooth` passes) and every node is solved on its own, a
local weighted least-squares fit — the same model, a closed-form, vectorised fit. The ridge term
pulls each node towards the global affine fit of the whole image, weighted by `eps` times the
node's own weight (so flat or empty regions take the global transform instead of an unstable one).

Memory: the grid is tiny (for a 512-px low-res image, 33 × 25 × 9 nodes); slicing runs in row bands,
so a 24-megapixel image needs the full-resolution input, the output and a few megabytes per band.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import convolve1d

LUMA_WEIGHTS = np.array([0.25, 0.5, 0.25], dtype=np.float32)  # (R + 2G + B) / 4: the grid's range axis
BAND_PIXELS = 1 << 20  # pixels sliced per band (about 1 M): bounds the temporaries to ~100 MB
FIT_CHUNK = 1 << 18  # low-res pixels splatted at a time (~60 MB of float64 sums)


def _check(name: str, x: np.ndarray) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 3 or x.shape[2] != 3 or x.shape[0] < 1 or x.shape[1] < 1:
        got = f"shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"guided_upsample: {name} must be an H×W×3 RGB array, got {got}")


def _features(rgb: np.ndarray) -> np.ndarray:
    """N×4 design rows [R, G, B, 1] (float64 for the fit's sums) of N×3 pixels."""
    flat = rgb.astype(np.float64)
    return np.concatenate([flat, np.ones((flat.shape[0], 1))], axis=1)


def _axis_weights(coord: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower node index and the weight of the upper node for continuous grid coordinates."""
    coord = np.clip(coord, 0.0, n_nodes - 1)
    i0 = np.minimum(np.floor(coord).astype(np.int64), n_nodes - 2) if n_nodes > 1 else np.zeros(coord.shape, np.int64)
    return i0, (coord - i0).astype(np.float32) if n_nodes > 1 else np.zeros(coord.shape, np.float32)


def fit_grid(low_in: np.ndarray, low_out: np.ndarray, cell: float = 16.0, bins: int = 8, eps: float = 1e-4,
             smooth: int = 1) -> np.ndarray:
    """The bilateral grid of affine transforms (gh × gw × gd × 3 × 4, float32) mapping `low_in` to `low_out`."""
    _check("low_in", low_in)
    _check("low_out", low_out)
    if low_in.shape != low_out.shape:
        raise ValueError(f"guided_upsample: low_in {low_in.shape} and low_out {low_out.shape} differ in shape")
    if not (cell > 0 and bins >= 1 and eps >= 0 and smooth >= 0):
        raise ValueError(f"guided_upsample: need cell > 0, bins >= 1, eps >= 0, smooth >= 0; got {cell}, {bins}, "
                         f"{eps}, {smooth}")
    h, w = low_in.shape[:2]
    gh, gw, gd = int(np.ceil(h / cell)) + 1, int(np.ceil(w / cell)) + 1, bins + 1
    n_nodes = gh * gw * gd
    # Per pixel the 16 entries of x xᵀ, the 12 of x yᵀ and a count, splatted trilinearly into the 8
    # neighbouring nodes; in chunks of FIT_CHUNK pixels, so the float64 sums stay small at any size.
    acc = np.zeros((n_nodes, 29))
    flat_in, flat_out = low_in.reshape(-1, 3), low_out.reshape(-1, 3)
    for start in range(0, h * w, FIT_CHUNK):
        index = np.arange(start, min(h * w, start + FIT_CHUNK))
        x = _features(flat_in[index])
        y = flat_out[index].astype(np.float64)
        iy, fy = _axis_weights((index // w + 0.5) / cell, gh)
        ix, fx = _axis_weights((index % w + 0.5) / cell, gw)
        iz, fz = _axis_weights((flat_in[index] @ LUMA_WEIGHTS) * bins, gd)
        stats = np.concatenate([(x[:, :, None] * x[:, None, :]).reshape(-1, 16),
                                (x[:, :, None] * y[:, None, :]).reshape(-1, 12), np.ones((x.shape[0], 1))], axis=1)
        for dy in (0, 1):
            wy = fy if dy else 1 - fy
            for dx in (0, 1):
                wx = fx if dx else 1 - fx
                for dz in (0, 1):
                    wz = fz if dz else 1 - fz
                    node = ((iy + dy) * gw + (ix + dx)) * gd + (iz + dz)
                    weight = (wy * wx * wz).astype(np.float64)
                    for k in range(stats.shape[1]):
                        acc[:, k] += np.bincount(node, weights=weight * stats[:, k], minlength=n_nodes)
    # Global affine fit (least squares over the whole image): the prior every node is pulled towards.
    total = acc.sum(axis=0)
    global_a = np.linalg.lstsq(total[:16].reshape(4, 4) + 1e-9 * np.eye(4), total[16:28].reshape(4, 3), rcond=None)[0]
    acc = acc.reshape(gh, gw, gd, -1)
    for _ in range(smooth):
        for axis in range(3):
            acc = convolve1d(acc, [0.25, 0.5, 0.25], axis=axis, mode="nearest")
    m = acc[..., :16].reshape(gh, gw, gd, 4, 4)
    b = acc[..., 16:28].reshape(gh, gw, gd, 4, 3)
    count = acc[..., 28]
    lam = (eps * count + 1e-6)[..., None, None]
    a = np.linalg.solve(m + lam * np.eye(4), b + lam * global_a)  # gh×gw×gd×4×3
    return np.ascontiguousarray(np.swapaxes(a, -1, -2)).astype(np.float32)  # gh×gw×gd×3×4


def slice_grid(grid: np.ndarray, full_in: np.ndarray, low_shape: tuple[int, int], cell: float = 16.0,
               out: np.ndarray | None = None) -> np.ndarray:
    """Apply `grid` (from `fit_grid` on a low-res image of `low_shape`) to `full_in` (H×W×3), in row bands.

    Returns float32 H×W×3 (written into `out` when given), not clipped.
    """
    _check("full_in", full_in)
    gh, gw, gd = grid.shape[:3]
    bins = gd - 1
    big_h, big_w = full_in.shape[:2]
    low_h, low_w = low_shape
    if out is None:
        out = np.empty(full_in.shape, dtype=np.float32)
    # Continuous low-res coordinates of full-res pixel centres, then grid coordinates.
    ix, fx = _axis_weights((np.arange(big_w) + 0.5) * (low_w / big_w) / cell, gw)
    iy_all, fy_all = _axis_weights((np.arange(big_h) + 0.5) * (low_h / big_h) / cell, gh)
    band = max(1, BAND_PIXELS // big_w)
    for r0 in range(0, big_h, band):
        r1 = min(big_h, r0 + band)
        iy, fy = iy_all[r0:r1], fy_all[r0:r1]
        # Interpolate the grid along y for each row of the band (rows × gw × gd × 12): a small array.
        rows_grid = grid[iy] * (1 - fy)[:, None, None, None, None] + grid[iy + 1] * fy[:, None, None, None, None]
        rows_grid = rows_grid.reshape(r1 - r0, gw * gd, 12)
        x = full_in[r0:r1].astype(np.float32, copy=False)
        iz, fz = _axis_weights(x @ LUMA_WEIGHTS * bins, gd)  # rows × W
        row_index = np.arange(r1 - r0)[:, None]
        a = np.zeros((r1 - r0, big_w, 12), dtype=np.float32)
        for dx in (0, 1):
            wx = fx if dx else 1 - fx
            for dz in (0, 1):
                wz = fz if dz else 1 - fz
                a += rows_grid[row_index, (ix + dx)[None, :] * gd + iz + dz] * (wx[None, :] * wz)[..., None]
        a = a.reshape(r1 - r0, big_w, 3, 4)
        res = a[..., 3]
        for j in range(3):
            res += a[..., j] * x[..., j:j + 1]
        out[r0:r1] = res
    return out


def guided_upsample(full_in: np.ndarray, low_in: np.ndarray, low_out: np.ndarray, cell: float = 16.0,
                    bins: int = 8, eps: float = 1e-4, smooth: int = 1) -> np.ndarray:
    """`low_out` (an operator's result on `low_in`, a downscaled `full_in`) brought to `full_in`'s size.

    All three are float RGB in [0, 1]; the result is float32 H×W×3 of `full_in`'s size, clipped to [0, 1].
    `cell` is the grid spacing in low-res pixels, `bins` the number of luma intervals, `eps` the ridge
    weight towards the global affine fit, `smooth` the number of blur passes over the normal equations.
    """
    _check("full_in", full_in)
    grid = fit_grid(low_in, low_out, cell=cell, bins=bins, eps=eps, smooth=smooth)
    out = slice_grid(grid, full_in, low_in.shape[:2], cell=cell)
    return np.clip(out, 0.0, 1.0, out=out)

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
so a 24-megapixel image needs the full-resolution input, the output and about 100 MB per band.

In torch, on the CPU or the GPU (`device`): the fit splats with ``index_add_`` in float64 and solves the
nodes' 4×4 systems in one batch; the slice interpolates the grid along y for each row of a band, then
reads it bilinearly in (x, luma) with ``grid_sample`` (rows as the batch; HDRNet slices a 3-D grid the
same way) and applies the affine transforms.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

LUMA_WEIGHTS = (0.25, 0.5, 0.25)  # (R + 2G + B) / 4: the grid's range axis
BAND_PIXELS = 1 << 20  # pixels sliced per band (about 1 M): bounds the temporaries to ~100 MB
FIT_CHUNK = 1 << 18  # low-res pixels splatted at a time (~60 MB of float64 sums)
SMOOTHING = (0.25, 0.5, 0.25)  # the blur of the normal equations along each grid axis (`smooth` passes)


def _check(name: str, x: np.ndarray) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 3 or x.shape[2] != 3 or x.shape[0] < 1 or x.shape[1] < 1:
        got = f"shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"guided_upsample: {name} must be an H×W×3 RGB array, got {got}")


def _axis_weights(coord: torch.Tensor, n_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower node index and the weight of the upper node for continuous grid coordinates."""
    coord = coord.clamp(0.0, n_nodes - 1)
    i0 = coord.floor().long().clamp(max=n_nodes - 2)
    return i0, coord - i0


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    return rgb[..., 0] * LUMA_WEIGHTS[0] + rgb[..., 1] * LUMA_WEIGHTS[1] + rgb[..., 2] * LUMA_WEIGHTS[2]


def _blur(acc: torch.Tensor, axis: int) -> torch.Tensor:
    """`acc` convolved with SMOOTHING along `axis`, edges repeated (scipy's mode "nearest")."""
    n = acc.shape[axis]
    before = torch.cat([acc.narrow(axis, 0, 1), acc.narrow(axis, 0, n - 1)], axis)
    after = torch.cat([acc.narrow(axis, 1, n - 1), acc.narrow(axis, n - 1, 1)], axis)
    return SMOOTHING[0] * before + SMOOTHING[1] * acc + SMOOTHING[2] * after


def fit_grid(low_in: np.ndarray, low_out: np.ndarray, cell: float = 16.0, bins: int = 8, eps: float = 1e-4,
             smooth: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
    """The bilateral grid of affine transforms (gh × gw × gd × 3 × 4, float32, on `device`) mapping `low_in`
    to `low_out`."""
    _check("low_in", low_in)
    _check("low_out", low_out)
    if low_in.shape != low_out.shape:
        raise ValueError(f"guided_upsample: low_in {low_in.shape} and low_out {low_out.shape} differ in shape")
    if not (cell > 0 and bins >= 1 and eps >= 0 and smooth >= 0):
        raise ValueError(f"guided_upsample: need cell > 0, bins >= 1, eps >= 0, smooth >= 0; got {cell}, {bins}, "
                         f"{eps}, {smooth}")
    fit_device = torch.device(device) if torch.device(device).type == "cuda" else torch.device("cpu")  # float64
    h, w = low_in.shape[:2]
    gh, gw, gd = int(np.ceil(h / cell)) + 1, int(np.ceil(w / cell)) + 1, bins + 1
    # Per pixel the 16 entries of x xᵀ, the 12 of x yᵀ and a count, splatted trilinearly into the 8
    # neighbouring nodes: one sparse (nodes × pixels) matrix of weights times the pixels' statistics, in
    # chunks of FIT_CHUNK pixels, so the float64 sums stay small at any size.
    acc = torch.zeros(gh * gw * gd, 29, dtype=torch.float64, device=fit_device)
    flat_in = torch.from_numpy(np.ascontiguousarray(low_in, dtype=np.float32).reshape(-1, 3)).to(fit_device)
    flat_out = torch.from_numpy(np.ascontiguousarray(low_out, dtype=np.float32).reshape(-1, 3)).to(fit_device)
    for start in range(0, h * w, FIT_CHUNK):
        index = torch.arange(start, min(h * w, start + FIT_CHUNK), device=fit_device)
        pixels = flat_in[index]
        x = torch.cat([pixels.double(), torch.ones(len(index), 1, dtype=torch.float64, device=fit_device)], 1)
        y = flat_out[index].double()
        iy, fy = _axis_weights((torch.div(index, w, rounding_mode="floor") + 0.5) / cell, gh)
        ix, fx = _axis_weights((index % w + 0.5) / cell, gw)
        iz, fz = _axis_weights(_luma(pixels) * bins, gd)
        stats = torch.cat([(x[:, :, None] * x[:, None, :]).reshape(-1, 16),
                           (x[:, :, None] * y[:, None, :]).reshape(-1, 12), x[:, 3:]], 1)
        nodes, weights = [], []
        for dy in (0, 1):
            for dx in (0, 1):
                for dz in (0, 1):
                    nodes.append(((iy + dy) * gw + (ix + dx)) * gd + (iz + dz))
                    weights.append((fy if dy else 1 - fy) * (fx if dx else 1 - fx) * (fz if dz else 1 - fz))
        splat = torch.sparse_coo_tensor(torch.stack([torch.cat(nodes), torch.arange(len(index), device=fit_device)
                                                     .repeat(8)]), torch.cat(weights).double(),
                                        (gh * gw * gd, len(index)), check_invariants=False)
        acc += torch.sparse.mm(splat, stats)  # duplicate (node, pixel) entries are summed
    # Global affine fit (least squares over the whole image): the prior every node is pulled towards.
    total = acc.sum(0)
    eye = torch.eye(4, dtype=torch.float64, device=fit_device)
    global_a = torch.linalg.solve(total[:16].reshape(4, 4) + 1e-9 * eye, total[16:28].reshape(4, 3))
    acc = acc.reshape(gh, gw, gd, 29)
    for _ in range(smooth):
        for axis in range(3):
            acc = _blur(acc, axis)
    m = acc[..., :16].reshape(gh, gw, gd, 4, 4)
    b = acc[..., 16:28].reshape(gh, gw, gd, 4, 3)
    lam = (eps * acc[..., 28] + 1e-6)[..., None, None]
    a = torch.linalg.solve(m + lam * eye, b + lam * global_a)  # gh×gw×gd×4×3
    return a.transpose(-1, -2).float().contiguous().to(device)  # gh×gw×gd×3×4


def slice_grid(grid: torch.Tensor, full_in: np.ndarray, low_shape: tuple[int, int], cell: float = 16.0,
               out: np.ndarray | None = None) -> np.ndarray:
    """Apply `grid` (from `fit_grid` on a low-res image of `low_shape`) to `full_in` (H×W×3), in row bands on
    the grid's device. Returns float32 H×W×3 (written into `out` when given), not clipped."""
    _check("full_in", full_in)
    gh, gw, gd = grid.shape[:3]
    device = grid.device
    big_h, big_w = full_in.shape[:2]
    low_h, low_w = low_shape
    if out is None:
        out = np.empty(full_in.shape, dtype=np.float32)
    nodes = grid.reshape(gh, gw, gd, 12)
    # Continuous low-res coordinates of full-res pixel centres, then grid coordinates; x as grid_sample's
    # [-1, 1] (align_corners: -1 and 1 are the first and last node), y as (node, weight) per row.
    xs = ((torch.arange(big_w, device=device) + 0.5) * (low_w / big_w) / cell).clamp(0, gw - 1) * (2 / (gw - 1)) - 1
    iy_all, fy_all = _axis_weights((torch.arange(big_h, device=device) + 0.5) * (low_h / big_h) / cell, gh)
    band = max(1, BAND_PIXELS // big_w)
    pixels = torch.from_numpy(np.ascontiguousarray(full_in, dtype=np.float32))
    result = torch.from_numpy(out)
    for r0 in range(0, big_h, band):
        r1 = min(big_h, r0 + band)
        # rows × gw × gd × 12: the grid interpolated at each row's y
        rows = torch.lerp(nodes[iy_all[r0:r1]], nodes[iy_all[r0:r1] + 1], fy_all[r0:r1, None, None, None])
        x = pixels[r0:r1].to(device)
        z = (_luma(x) * (gd - 1)).clamp(0, gd - 1) * (2 / (gd - 1)) - 1  # rows × W, the luma axis in [-1, 1]
        where = torch.stack([xs.expand(r1 - r0, big_w), z], -1)[:, None]  # rows × 1 × W × (x, luma)
        a = F.grid_sample(rows.permute(0, 3, 2, 1), where, mode="bilinear", padding_mode="border",
                          align_corners=True)[:, :, 0]  # rows × 12 × W: A(P), row-major 3×4
        for c in range(3):  # out_c = A_c3 + Σ_j A_cj · x_j, accumulated in place
            channel = a[:, 4 * c + 3].clone()
            for j in range(3):
                channel.addcmul_(a[:, 4 * c + j], x[..., j])
            result[r0:r1, :, c] = channel.cpu()
    return out


def guided_upsample(full_in: np.ndarray, low_in: np.ndarray, low_out: np.ndarray, cell: float = 16.0,
                    bins: int = 8, eps: float = 1e-4, smooth: int = 1, device: torch.device | str = "cpu") -> np.ndarray:
    """`low_out` (an operator's result on `low_in`, a downscaled `full_in`) brought to `full_in`'s size.

    All three are float RGB in [0, 1]; the result is float32 H×W×3 of `full_in`'s size, clipped to [0, 1].
    `cell` is the grid spacing in low-res pixels, `bins` the number of luma intervals, `eps` the ridge
    weight towards the global affine fit, `smooth` the number of blur passes over the normal equations;
    `device` where the grid is fitted and sliced (the CPU, or a GPU).
    """
    _check("full_in", full_in)
    grid = fit_grid(low_in, low_out, cell=cell, bins=bins, eps=eps, smooth=smooth, device=device)
    out = slice_grid(grid, full_in, low_in.shape[:2], cell=cell)
    return np.clip(out, 0.0, 1.0, out=out)

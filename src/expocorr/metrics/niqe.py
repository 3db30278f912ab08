"""NIQE, the Natural Image Quality Evaluator (Mittal, Soundararajan & Bovik, IEEE SPL 20(3), 2013),
following the authors' MATLAB release (``computequality.m``, ``estimatemodelparam.m``,
``computefeature.m``, ``estimateaggdparam.m``). Lower is better (closer to pristine statistics).

Algorithm (``niqe``):

1. Grey image as MATLAB's ``rgb2gray`` on uint8: 0.298936 R + 0.587043 G + 0.114021 B rounded to
   integers, as float in [0, 255]; cropped to a multiple of 96 in both directions (top-left kept).
2. At two scales (the image, then MATLAB ``imresize(im, 0.5)``: bicubic with antialiasing, symmetric
   border — reimplemented here), the MSCN coefficients
   ``(im − μ) / (σ + 1)`` with μ, σ the local mean and std under a 7×7 Gaussian window (σ_w = 7/6,
   normalised; 'replicate' borders), cut into non-overlapping blocks of 96×96 (48×48 at scale 2).
3. Per block, 18 features: an asymmetric generalised Gaussian (AGGD) fit of the MSCN values gives
   (α, (β_l + β_r)/2); AGGD fits of the products with the circularly shifted block along four
   orientations (shifts (0,1), (1,0), (1,1), (−1,1)) give (α, η, β_l, β_r) each, with
   η = (β_r − β_l) Γ(2/α)/Γ(1/α). α is found by MATLAB's grid search over 0.2:0.001:10.
   36 features per block (two scales).
4. The test image's blocks give a mean ν₂ (NaN-ignoring) and covariance Σ₂ (rows with a NaN dropped);
   with the pristine model (ν₁, Σ₁):  NIQE = sqrt((ν₁ − ν₂)ᵀ pinv((Σ₁ + Σ₂)/2) (ν₁ − ν₂)),
   pinv with MATLAB's default tolerance.

The pristine model is read from a parameter file (`load_params`): the MATLAB release's
``modelparameters.mat`` (``mu_prisparam`` 1×36, ``cov_prisparam`` 36×36), or an ``.npz``/``.mat``
with BasicSR's names ``mu_pris_param`` / ``cov_pris_param``. `fit_params` estimates one from a set of
pristine photos as ``estimatemodelparam.m`` does (blocks whose mean σ exceeds 0.75 × the image's
sharpest block), and `save_params` writes it in the MATLAB layout.

`BUNDLED_PARAMS` (``niqe_bundled.npz`` next to this file, ``evaluate.noref.niqe_params: bundled``) is a
pristine model fitted on the bundled photos (``expocorr.sources.bundled.BUNDLED``, at their stored size) with
every block kept (`BUNDLED_THRESHOLD`: 0.75 keeps 31 blocks of the 8 photos, too few for a 36×36
covariance). It is **not** the MATLAB release's model (fitted on 125 pristine photos): its scores rank
outputs within this pipeline and are not comparable to published NIQE numbers. Regenerate it with
``python -m expocorr.metrics fit-niqe-bundled OUT.npz``.

Not verified against MATLAB output here (no MATLAB available); each step follows the published code.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import numpy as np
import scipy.io
from scipy import ndimage
from scipy.special import gammaln

from expocorr.errors import UserError
from expocorr.imaging.images import read_rgb, to_uint8

BLOCK = 96
N_FEATURES = 36
_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))
_ALPHAS = np.linspace(0.2, 10.0, 9801)  # MATLAB 0.2:0.001:10
_R_ALPHA = np.exp(2 * gammaln(2 / _ALPHAS) - gammaln(1 / _ALPHAS) - gammaln(3 / _ALPHAS))
_RGB2GRAY = np.linalg.inv(np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]]))[0]
_BLOCKS_PER_CHUNK = 256  # bounds the memory of the per-block feature computation
BUNDLED_PARAMS = Path(__file__).with_name("niqe_bundled.npz")
BUNDLED_THRESHOLD = 0.0


class NiqeParamsError(UserError, ValueError):
    """A NIQE parameter file that cannot be used; the message names the file."""


def _gaussian_window(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)`` normalised to sum 1."""
    r = np.arange(size) - (size - 1) / 2
    window = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return window / window.sum()


_WINDOW = _gaussian_window()


def rgb2gray_matlab(rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``double(rgb2gray(uint8 RGB))``: weighted sum rounded to integers, float64 in [0, 255]."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise ValueError(f"niqe: need a uint8 image, got {rgb.dtype}")
    if rgb.ndim == 2:
        return rgb.astype(np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"niqe: need an H×W×3 RGB or H×W grey image, got shape {rgb.shape}")
    return np.floor(rgb.astype(np.float64) @ _RGB2GRAY + 0.5).clip(0, 255)


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1) + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * (
        (ax > 1) & (ax <= 2)
    )


def _resize_axis(image: np.ndarray, scale: float, axis: int) -> np.ndarray:
    """MATLAB ``imresize`` along one axis: bicubic, antialiased when shrinking, symmetric borders."""
    in_len = image.shape[axis]
    out_len = int(np.ceil(in_len * scale))
    width = 4.0 / scale if scale < 1 else 4.0
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(np.ceil(width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based, as in MATLAB
    distance = u[:, None] - indices
    weights = scale * _cubic(scale * distance) if scale < 1 else _cubic(distance)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    moved = np.moveaxis(image, axis, 0)
    out = np.zeros((out_len,) + moved.shape[1:], dtype=np.float64)
    for k in range(taps):
        out += weights[:, k].reshape((-1,) + (1,) * (moved.ndim - 1)) * moved[indices[:, k]]
    return np.moveaxis(out, 0, axis)


def imresize_matlab(image: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(image, scale)`` (bicubic, antialiasing) of a 2-D float image; rows first."""
    return _resize_axis(_resize_axis(np.asarray(image, dtype=np.float64), scale, 0), scale, 1)


def _mscn(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MSCN coefficients (im − μ)/(σ + 1) and σ, 7×7 Gaussian window, 'replicate' borders."""
    mu = ndimage.correlate(image, _WINDOW, mode="nearest")
    sigma = np.sqrt(np.abs(ndimage.correlate(image * image, _WINDOW, mode="nearest") - mu * mu))
    return (image - mu) / (sigma + 1), sigma


def _blocks(image: np.ndarray, size: int) -> np.ndarray:
    """Non-overlapping size×size blocks, row-major: (n_blocks, size, size)."""
    rows, cols = image.shape[0] // size, image.shape[1] // size
    return image[: rows * size, : cols * size].reshape(rows, size, cols, size).swapaxes(1, 2).reshape(-1, size, size)


def aggd_fit(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MATLAB ``estimateaggdparam`` on each row of `values` (n, m): (α, β_l, β_r), arrays of length n.

    A row without negative or positive values gives NaN betas (α then 0.2, as MATLAB's ``min``
    of an all-NaN vector returns the first index).
    """
    values = np.asarray(values, dtype=np.float64)
    neg, pos = values < 0, values > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt((values**2 * neg).sum(axis=1) / neg.sum(axis=1))
        right = np.sqrt((values**2 * pos).sum(axis=1) / pos.sum(axis=1))
        gamma_hat = left / right
        r_hat = np.abs(values).mean(axis=1) ** 2 / (values**2).mean(axis=1)
        r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    alpha = _ALPHAS[np.argmin((_R_ALPHA[None, :] - r_norm[:, None]) ** 2, axis=1)]
    scale = np.exp(0.5 * (gammaln(1 / alpha) - gammaln(3 / alpha)))
    return alpha, left * scale, right * scale


def _block_features(blocks: np.ndarray) -> np.ndarray:
    """MATLAB ``computefeature`` on each block: (n_blocks, 18)."""
    flat = blocks.reshape(len(blocks), -1)
    alpha, beta_l, beta_r = aggd_fit(flat)
    features = [alpha, (beta_l + beta_r) / 2]
    for shift in _SHIFTS:
        pair = flat * np.roll(blocks, shift, axis=(1, 2)).reshape(len(blocks), -1)
        alpha, beta_l, beta_r = aggd_fit(pair)
        eta = (beta_r - beta_l) * np.exp(gammaln(2 / alpha) - gammaln(1 / alpha))
        features += [alpha, eta, beta_l, beta_r]
    return np.stack(features, axis=1)


def _features(blocks: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [_block_features(blocks[i:i + _BLOCKS_PER_CHUNK]) for i in range(0, len(blocks), _BLOCKS_PER_CHUNK)]
    )


def block_features(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 36 NIQE features of each 96×96 block of a uint8 image, and each block's sharpness.

    Returns (features (n_blocks, 36), sharpness (n_blocks,)), sharpness being the mean local σ of
    the block at scale 1 (used only when fitting a model).
    """
    image = rgb2gray_matlab(rgb)
    rows, cols = image.shape[0] // BLOCK, image.shape[1] // BLOCK
    if rows == 0 or cols == 0:
        raise ValueError(f"niqe: the image ({image.shape[1]}×{image.shape[0]}) is smaller than one "
                         f"{BLOCK}×{BLOCK} block")
    image = image[: rows * BLOCK, : cols * BLOCK]
    mscn, sigma = _mscn(image)
    scale1 = _features(_blocks(mscn, BLOCK))
    sharpness = _blocks(sigma, BLOCK).mean(axis=(1, 2))
    mscn2, _ = _mscn(imresize_matlab(image, 0.5))
    scale2 = _features(_blocks(mscn2, BLOCK // 2))
    return np.concatenate([scale1, scale2], axis=1), sharpness


def _nan_mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB ``nanmean`` (per column) and ``nancov`` (complete rows, normalised by N − 1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice" for an all-NaN column
        mean = np.nanmean(features, axis=0)
    complete = features[np.isfinite(features).all(axis=1)]
    if len(complete) < 2:
        cov = np.zeros((features.shape[1], features.shape[1]))
    else:
        cov = np.cov(complete, rowvar=False)
    return mean, cov


def _pinv(matrix: np.ndarray) -> np.ndarray:
    """Moore–Penrose inverse with MATLAB ``pinv``'s tolerance max(size)·σ_max·eps."""
    u, s, vt = np.linalg.svd(matrix)
    tol = max(matrix.shape) * (s.max() if s.size else 0.0) * np.finfo(np.float64).eps
    inv_s = np.where(s > tol, 1.0 / np.where(s > tol, s, 1.0), 0.0)
    return (vt.T * inv_s) @ u.T


def niqe(rgb: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> float:
    """NIQE of a uint8 RGB (or grey) image of at least 96×96 against the pristine model (mu, cov).

    NaN when no block has finite features (e.g. a constant image).
    """
    features, _ = block_features(rgb)
    mu_d, cov_d = _nan_mean_cov(features)
    if not np.isfinite(mu_d).all():
        return float("nan")
    diff = np.asarray(mu, dtype=np.float64).reshape(-1) - mu_d
    value = diff @ _pinv((np.asarray(cov, dtype=np.float64) + cov_d) / 2) @ diff
    return float(np.sqrt(max(value, 0.0)))


def fit_params(images: Iterable[np.ndarray], sharpness_threshold: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """A pristine model (mu (36,), cov (36, 36)) from uint8 photos, as ``estimatemodelparam.m``.

    Of each image, the blocks whose sharpness exceeds `sharpness_threshold` × the image's largest
    block sharpness are pooled (0 keeps every block with non-zero sharpness).
    """
    pooled = []
    for image in images:
        features, sharpness = block_features(image)
        pooled.append(features[sharpness > sharpness_threshold * sharpness.max()])
    if not pooled:
        raise ValueError("niqe.fit_params: no images given")
    selected = np.concatenate(pooled)
    if len(selected) <= N_FEATURES:
        raise ValueError(f"niqe.fit_params: only {len(selected)} blocks selected; "
                         f"need more than {N_FEATURES} for a usable covariance")
    return _nan_mean_cov(selected)


def save_params(path: str | Path, mu: np.ndarray, cov: np.ndarray) -> None:
    """Write a model in the MATLAB release's layout (``mu_prisparam`` 1×36, ``cov_prisparam`` 36×36)."""
    scipy.io.savemat(str(path), {"mu_prisparam": np.asarray(mu, np.float64).reshape(1, -1),
                                 "cov_prisparam": np.asarray(cov, np.float64)})


def load_params(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read (mu (36,), cov (36, 36)) from a ``.mat`` (MATLAB release or BasicSR names) or ``.npz``."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path) as data:
                content = {k: data[k] for k in data.files}
        else:
            content = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise
    except Exception as exc:  # scipy/numpy raise several types for a corrupt or foreign file
        raise NiqeParamsError(f"{path}: not a readable NIQE parameter file (.mat or .npz): {exc}") from None
    for mu_key, cov_key in (("mu_prisparam", "cov_prisparam"), ("mu_pris_param", "cov_pris_param")):
        if mu_key in content and cov_key in content:
            mu = np.asarray(content[mu_key], dtype=np.float64).reshape(-1)
            cov = np.asarray(content[cov_key], dtype=np.float64)
            break
    else:
        keys = sorted(k for k in content if not k.startswith("__"))
        raise NiqeParamsError(f"{path}: no mu_prisparam/cov_prisparam (or mu_pris_param/cov_pris_param) "
                              f"in it; found {keys}")
    if mu.shape != (N_FEATURES,) or cov.shape != (N_FEATURES, N_FEATURES):
        raise NiqeParamsError(f"{path}: expected a mean of {N_FEATURES} values and a {N_FEATURES}×{N_FEATURES} "
                              f"covariance, got {mu.shape} and {cov.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(cov).all()):
        raise NiqeParamsError(f"{path}: the model holds non-finite values")
    return mu, cov


def bundled_photos(bundled: list[tuple[str, str, str]]) -> list[np.ndarray]:
    """The photos `bundled` lists (`expocorr.sources.bundled.BUNDLED`: scene, package, resource path) as uint8
    RGB, at their stored size, in its order."""
    photos = []
    for _, package, resource in bundled:
        with resources.as_file(resources.files(package).joinpath(resource)) as path:
            photos.append(to_uint8(read_rgb(path)))
    return photos


def main(argv: list[str], bundled: list[tuple[str, str, str]]) -> int:
    """``python -m expocorr.metrics fit-niqe-bundled OUT.npz``: write the bundled pristine model (BasicSR names)."""
    if len(argv) != 2 or argv[0] != "fit-niqe-bundled" or not argv[1].endswith(".npz"):
        print("usage: python -m expocorr.metrics fit-niqe-bundled OUT.npz", file=sys.stderr)
        return 2
    photos = bundled_photos(bundled)
    mu, cov = fit_params(photos, BUNDLED_THRESHOLD)
    np.savez(argv[1], mu_pris_param=mu.reshape(1, -1), cov_pris_param=cov)
    print(f"{argv[1]}: NIQE pristine model fitted on {len(photos)} bundled photos")
    return 0

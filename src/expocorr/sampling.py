"""How the train stage feeds images to a model: `train.NAME.sampling` and the patch curriculum.

* ``crop``: random ``size``-px crops (random horizontal flip), one per item, from row i mod n.
* ``resize``: the whole image resized (area) to ``size``×``size``, as Zero-DCE's and ExpoNet's
  training scripts feed whole images; no flip.
* ``patches``: MSEC's pre-extracted training patches (`msec_patches`): a fixed bank of patches per
  stage size, built once from every training pair (the same corners for every exposure of a scene,
  as the official script cuts them), visited in a new random order every epoch, each patch flipped
  horizontally with probability ½ (the official ``augmentBatch.m`` flips whole mini-batches).

Every item is reproducible from (seed, epoch, index), so batches do not depend on worker
processes, ranks or where an interrupted run stopped.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from expocorr.imaging.images import read_rgb

SAMPLINGS = ("crop", "resize", "patches")


@dataclass(frozen=True)
class Stage:
    """One step of the patch curriculum: from 0-based epoch `start` on, `size`-px items in batches of `batch`."""

    index: int
    start: int
    size: int
    batch: int


def curriculum(common: dict, cfg: dict) -> list[Stage]:
    """The stages of `train.NAME.patch_curriculum` ([[epoch, size], ...] or [[epoch, size, batch], ...]).

    Before its first entry (or without one) the model trains at `train.common.patch_size` in batches of
    `train.common.batch_size`; an entry without a batch size keeps the global batch size.
    """
    entries = {0: (common["patch_size"], common["batch_size"])}
    for entry in cfg["patch_curriculum"] or []:
        start, size = int(entry[0]), int(entry[1])
        entries[start] = (size, int(entry[2]) if len(entry) > 2 else common["batch_size"])
    return [Stage(i, start, *entries[start]) for i, start in enumerate(sorted(entries))]


def stage_at(stages: list[Stage], epoch: int) -> Stage:
    """The stage that 0-based `epoch` belongs to."""
    return [s for s in stages if s.start <= epoch][-1]


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def _read(row: dict, paired: bool) -> list[np.ndarray]:
    """A row's input, and its reference for a paired model."""
    return [read_rgb(row["input"])] + ([read_rgb(row["reference"])] if paired else [])


def _pad_to(images: list[np.ndarray], size: int) -> list[np.ndarray]:
    """Mirror-pad images smaller than `size` on either side."""
    h, w = images[0].shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        images = [np.pad(im, ((0, ph), (0, pw), (0, 0)), mode="reflect") for im in images]
    return images


class TrainingSet(Dataset):
    """`samples` items per epoch from the split's rows, fed the way `mode` says (see the module doc)."""

    def __init__(self, rows: list[dict], mode: str, seed: int, paired: bool) -> None:
        if mode not in SAMPLINGS:
            raise ValueError(f"sampling {mode!r}: expected one of {', '.join(SAMPLINGS)}")
        self.rows, self.mode, self.seed, self.paired = rows, mode, seed, paired
        self.size, self.samples, self.epoch, self.bank = 0, 0, 0, []

    def set_stage(self, size: int) -> int:
        """Feed `size`-px items (building the patch bank for a new size); returns how many distinct items
        one pass holds (patches in the bank, else rows)."""
        if self.mode == "patches" and size != self.size:
            self.bank = patch_bank(self.rows, size, self.seed, self.paired)
        self.size = size
        return len(self.bank) if self.mode == "patches" else len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.mode == "patches":
            self.order = np.random.default_rng([self.seed, epoch]).permutation(len(self.bank))

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        size = self.size
        if self.mode == "patches":
            r, y, x = self.bank[self.order[i % len(self.bank)]]
            crops = [im[y : y + size, x : x + size] for im in _pad_to(_read(self.rows[r], self.paired), size)]
            if np.random.default_rng([self.seed, self.epoch, i]).integers(0, 2):
                crops = [c[:, ::-1] for c in crops]
        elif self.mode == "resize":
            crops = [cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)
                     for im in _read(self.rows[i % len(self.rows)], self.paired)]
        else:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            images = _pad_to(_read(self.rows[i % len(self.rows)], self.paired), size)
            h, w = images[0].shape[:2]
            y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            crops = [im[y : y + size, x : x + size] for im in images]
            if rng.integers(0, 2):
                crops = [c[:, ::-1] for c in crops]
        item = {"input": _to_tensor(crops[0])}
        if self.paired:
            item["target"] = _to_tensor(crops[1])
        return item


def patch_bank(rows: list[dict], size: int, seed: int, paired: bool) -> list[tuple[int, int, int]]:
    """(row, y, x) of every MSEC training patch of `size` px kept from the rows (deterministic per seed;
    one generator state per scene, so all its exposures get the same corners)."""
    bank = []
    for r, row in enumerate(rows):
        images = _pad_to(_read(row, paired), size)
        rng = np.random.default_rng([seed, size, zlib.crc32(row["scene"].encode())])
        bank += [(r, y, x) for y, x in msec_patches(images[0], images[-1], size, rng)]
    if not bank:
        raise ValueError(f"sampling patches: no {size}-px patch of the {len(rows)} training images passed "
                         "the patch filter")
    return bank


# MSEC's patch extraction: mahmoudnafifi/Exposure_Correction, src/patches_extraction.m (counts) and
# src/randPatchExtraction.m (draws and filters), run once per patch size before training.
MSEC_PATCHES_BASE = 2**10  # patches_extraction.m: 2^(10 - i) training patches per image of 2^i-px patches
MSEC_EXTRA_PATCHES = 2  # randPatchExtraction.m stops when count == Pnum_per_img + 2
MSEC_MAX_REJECTIONS = 200  # randPatchExtraction.m gives up after 200 rejected draws
MSEC_MIN_RGB_SUM = 0.02  # rejected: sum(patch) / (P·P) < 0.02, i.e. the mean R + G + B of a pixel
MSEC_MAX_MEAN = 0.98  # rejected: sum(patch) / (P·P·3) > 0.98
MSEC_MIN_GRADIENT = 0.06  # rejected: mean(imgradient(rgb2gray(patch))) < 0.06
MSEC_GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)  # MATLAB's rgb2gray weights


def msec_mean_gradient(patch: np.ndarray) -> float:
    """MATLAB's mean(imgradient(rgb2gray(patch))): the Sobel magnitude (unnormalised 3×3 kernels,
    replicated border) of the grey patch, averaged."""
    gray = patch.astype(np.float64) @ np.array(MSEC_GRAY)
    gx = cv2.Sobel(gray, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.Sobel(gray, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)
    return float(np.hypot(gx, gy).mean())


def msec_patches(inp: np.ndarray, ref: np.ndarray, size: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the `size`-px patches MSEC's randPatchExtraction.m keeps for one pair.

    Corners are drawn uniformly (0 <= y < H − size, 0 <= x < W − size, as MATLAB's randi(H − size))
    until MSEC_PATCHES_BASE // size + MSEC_EXTRA_PATCHES are kept (10 / 6 / 4 at 128 / 256 / 512 px)
    or MSEC_MAX_REJECTIONS were rejected. A patch of the reference is rejected when too dark
    (MSEC_MIN_RGB_SUM), too bright (MSEC_MAX_MEAN) or too flat (MSEC_MIN_GRADIENT). An image not
    larger than `size` in both directions gives none. The filter reads `ref` alone, so all exposures of
    a scene get the same corners from the same `rng` state, as the official script cuts one set of
    corners from every exposure of the scene. Images: float H×W×3 in [0, 1].
    """
    if ref.ndim != 3 or ref.shape[2] != 3 or inp.shape != ref.shape:
        raise ValueError(f"msec_patches: expected two H×W×3 images of one shape, got {inp.shape} and {ref.shape}")
    h, w = ref.shape[:2]
    if h <= size or w <= size:
        return []
    wanted = MSEC_PATCHES_BASE // size + MSEC_EXTRA_PATCHES
    kept: list[tuple[int, int]] = []
    rejected = 0
    while len(kept) < wanted and rejected < MSEC_MAX_REJECTIONS:
        y, x = int(rng.integers(0, h - size)), int(rng.integers(0, w - size))
        patch = ref[y : y + size, x : x + size]
        total = float(patch.sum(dtype=np.float64))
        if (total / size**2 < MSEC_MIN_RGB_SUM or total / (3 * size**2) > MSEC_MAX_MEAN
                or msec_mean_gradient(patch) < MSEC_MIN_GRADIENT):
            rejected += 1
        else:
            kept.append((y, x))
    return kept

"""How the train stage feeds images to a model: `train.NAME.sampling` and the patch curriculum.

* ``crop``: random ``size``-px crops (random horizontal flip), one per item, from row i mod n.
* ``resize``: the whole image resized (area) to ``size``×``size``, as Zero-DCE's and ExpoNet's
  training scripts feed whole images; no flip.
* ``patches``: MSEC's pre-extracted training patches (`msec_patches`): a fixed bank of patches per
  stage size, built once from every training pair, visited in a new random order every epoch.

Every item is reproducible from (seed, epoch, index), so batches do not depend on worker
processes, ranks or where an interrupted run stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from expocorr.images import read_rgb

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


def _pad_to(images: list[np.ndarray], size: int) -> list[np.ndarray]:
    """Mirror-pad images smaller than `size` on either side."""
    h, w = images[0].shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        images = [np.pad(im, ((0, ph), (0, pw), (0, 0)), mode="reflect") for im in images]
    return images


class TrainingSet(Dataset):
    """`samples` items per epoch from the split's rows, fed the way `mode` says (see the module doc)."""

    def __init__(self, rows: list[dict], mode: str, samples: int, seed: int, paired: bool) -> None:
        if mode not in SAMPLINGS:
            raise ValueError(f"sampling {mode!r}: expected one of {', '.join(SAMPLINGS)}")
        self.rows, self.mode, self.samples, self.seed, self.paired = rows, mode, samples, seed, paired
        self.size, self.epoch, self.bank = 0, 0, []

    def set_stage(self, size: int, samples: int) -> None:
        """Feed `size`-px items, `samples` per epoch (building the patch bank for a new size)."""
        if self.mode == "patches" and size != self.size:
            self.bank = patch_bank(self.rows, size, self.seed, self.paired)
        self.size, self.samples = size, samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.mode == "patches":
            self.order = np.random.default_rng([self.seed, epoch]).permutation(len(self.bank))

    def __len__(self) -> int:
        return self.samples

    def _images(self, row: dict) -> list[np.ndarray]:
        return [read_rgb(row["input"])] + ([read_rgb(row["reference"])] if self.paired else [])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        size = self.size
        if self.mode == "patches":
            r, y, x = self.bank[self.order[i % len(self.bank)]]
            crops = [im[y : y + size, x : x + size] for im in _pad_to(self._images(self.rows[r]), size)]
        elif self.mode == "resize":
            crops = [cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)
                     for im in self._images(self.rows[i % len(self.rows)])]
        else:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            images = _pad_to(self._images(self.rows[i % len(self.rows)]), size)
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
    """(row, y, x) of every MSEC training patch of `size` px kept from the rows (deterministic per seed)."""
    bank = []
    for r, row in enumerate(rows):
        images = _pad_to([read_rgb(row["input"])] + ([read_rgb(row["reference"])] if paired else []), size)
        rng = np.random.default_rng([seed, size, r])
        bank += [(r, y, x) for y, x in msec_patches(images[0], images[-1], size, rng)]
    if not bank:
        raise ValueError(f"sampling patches: no {size}-px patch of the {len(rows)} training images passed "
                         "the patch filter")
    return bank

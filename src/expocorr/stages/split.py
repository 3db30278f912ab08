"""Stage `split`: data/rendered/manifest.csv -> data/splits/{train,val,test}.csv, by scene."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from expocorr.stages import render
from expocorr.errors import UserError
from expocorr.tables import read_csv, write_csv

log = logging.getLogger(__name__)

OUT = Path("data/splits")
SPLITS = ("train", "val", "test")
DATASET_SPLITS = {"training": "train", "validation": "val", "testing": "test"}


class SplitError(UserError, ValueError):
    """The scenes cannot be split as asked; the message names the key."""


def split_by_scene(scenes: list[str], fractions: dict, seed: int) -> dict[str, list[str]]:
    """Assign whole scenes to train/val/test: a seeded shuffle, then counts from the fractions.

    Every split with a non-zero fraction gets at least one scene.
    """
    scenes = sorted(set(scenes))
    n = len(scenes)
    counts = {s: (max(1, round(fractions[s] * n)) if fractions[s] > 0 else 0) for s in ("val", "test")}
    counts["train"] = n - counts["val"] - counts["test"]
    if counts["train"] < 1:
        raise SplitError(
            f"split.fractions: {n} scene(s) cannot fill train, val ({counts['val']}) and test ({counts['test']}); "
            "add photos or set split.fractions.val to 0"
        )
    order = [scenes[i] for i in np.random.default_rng(seed).permutation(n)]
    out, start = {}, 0
    for s in ("test", "val", "train"):
        out[s] = sorted(order[start : start + counts[s]])
        start += counts[s]
    return out


def _dataset_assignment(rows: list[dict]) -> dict[str, str]:
    """Scene -> split from the manifest's `split` column (MSEC, LOL, SICE, LCDP); every row must name a known split, and
    a scene only one."""
    assignment: dict[str, str] = {}
    for row in rows:
        name = DATASET_SPLITS.get(row.get("split") or "", row.get("split") or "")
        if name not in SPLITS:
            allowed = ", ".join(sorted(set(DATASET_SPLITS) | set(SPLITS)))
            raise SplitError(
                f"{render.MANIFEST}: scene {row['scene']!r} has split {row.get('split')!r}; allowed: {allowed}"
            )
        if assignment.setdefault(row["scene"], name) != name:
            raise SplitError(
                f"{render.MANIFEST}: scene {row['scene']!r} is in both {assignment[row['scene']]} and {name}"
            )
    return assignment


def carve_val(assignment: dict[str, str], fraction: float, seed: int) -> dict[str, str]:
    """A dataset split without val scenes (LOL, SICE publish none): `fraction` of its train scenes, at least
    one, drawn with `seed`, become val; the test scenes stay as published."""
    train = sorted(s for s, name in assignment.items() if name == "train")
    if fraction <= 0 or len(train) < 2 or any(name == "val" for name in assignment.values()):
        return assignment
    count = min(len(train) - 1, max(1, round(fraction * len(train))))
    chosen = {train[i] for i in np.random.default_rng(seed).permutation(len(train))[:count]}
    log.info("split: the dataset has no validation split: %d of its %d training scenes become val "
             "(split.fractions.val %g, split.seed %d)", count, len(train), fraction, seed)
    return {s: "val" if s in chosen else name for s, name in assignment.items()}


def run(params: dict) -> None:
    """Write the train/val/test CSVs (manifest rows, whole scenes per split)."""
    rows = read_csv(render.MANIFEST)
    if not rows:
        raise SplitError(f"{render.MANIFEST}: no rows to split (run the render stage first)")
    if any(row.get("split") for row in rows):
        assignment = _dataset_assignment(rows)
        log.info("split: using the dataset's own train/val/test split")
        assignment = carve_val(assignment, params["split"]["fractions"]["val"], params["split"]["seed"])
    else:
        cfg = params["split"]
        by_split = split_by_scene([row["scene"] for row in rows], cfg["fractions"], cfg["seed"])
        assignment = {scene: s for s, scenes in by_split.items() for scene in scenes}
    fields = list(rows[0].keys())
    for s in SPLITS:
        chosen = [row for row in rows if assignment[row["scene"]] == s]
        write_csv(OUT / f"{s}.csv", chosen, fields)
        log.info("split: %s = %d rows, %d scenes", s, len(chosen), len({row["scene"] for row in chosen}))

"""Stage `render_extra`: the real bracketed scenes of ``evaluate.extra_sets`` -> data/extra/NAME/
(images/, manifest.csv, registration.csv) and data/extra/sets.json, extra test sets every evaluate stage scores.

Each set is a folder laid out as a ``data.source: stacks`` folder (README "Exposure stacks"): its scenes
are gathered as the download stage gathers them (`stacks.collect`, into a temporary folder) and rendered
as the render stage renders a stack (`render_stacks.render_scene`): every registered exposure is an input,
its EV is log2(its exposure time / the reference exposure's), and the reference is the set's
``reference`` (``nearest_mid_grey``: the exposure nearest mid-grey, so that exposure scores as an
identical pair), at most ``max_side`` px, registered with the render stage's default ECC settings.

Reads only ``evaluate.extra_sets``; writes data/extra (with sets.json) even when no set is named.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from expocorr import render_stacks, stacks
from expocorr.atomic import atomic_dir
from expocorr.errors import UserError
from expocorr.images import ImageError
from expocorr.tables import write_csv

log = logging.getLogger(__name__)

EXTRA = Path("data/extra")
MANIFEST_FIELDS = ["scene", "ev", "input", "reference", "stack", "exposure_time"]
DEFAULT_REFERENCE = "nearest_mid_grey"
DEFAULT_MAX_SIDE = 512
# render.stacks of params.yaml's defaults: registration as in the render stage; no augmented copies.
STACKS = {
    "fallback": "mertens", "ev_steps_per_stop": 3,
    "register": {"motion": "euclidean", "threshold": 0.8, "max_shift": 0.05, "levels": 3, "max_iterations": 200,
                 "epsilon": 1.0e-6},
    "augment": {"copies": 0, "flip": False, "rotate": False, "crop": 1.0, "seed": 0},
}


class ExtraSetError(UserError, ValueError):
    """An extra set that cannot be rendered; the message names its key."""


def manifest(name: str) -> Path:
    """data/extra/NAME/manifest.csv: one row per (scene, exposure) of extra set `name`."""
    return EXTRA / name / "manifest.csv"


def settings(entry: dict) -> dict:
    """The `render` settings `render_stacks.render_scene` reads, for one ``evaluate.extra_sets`` entry."""
    max_side = entry.get("max_side", DEFAULT_MAX_SIDE)
    return {"max_side": max_side, "raw": {"half_size": False},
            "stacks": {**STACKS, "reference": entry.get("reference", DEFAULT_REFERENCE)}}


def render_set(name: str, entry: dict, out: Path) -> dict:
    """Render extra set `name` into `out` (its final place is EXTRA/name); return its summary."""
    key = f"evaluate.extra_sets.{name}"
    root = Path(entry["folder"]).expanduser()
    r = settings(entry)
    rows = []
    with tempfile.TemporaryDirectory(prefix="expocorr-extra-") as sources:
        try:
            index, skipped = stacks.collect(root, Path(sources), None)
        except stacks.StackError as exc:
            raise ExtraSetError(f"{key}.folder: {exc}") from None
        for row in index:
            folder = out / "images" / row["scene"]
            folder.mkdir(parents=True)
            try:
                rendered = render_stacks.render_scene(row, folder, r)
            except ImageError as exc:
                log.warning("render-extra %s: skipped %s", name, exc)
                skipped.append({"path": row["path"], "reason": str(exc)})
                shutil.rmtree(folder)
                continue
            for item in rendered:
                item["scene"] = row["scene"]
                rows.append({k: EXTRA / name / v.relative_to(out) if isinstance(v, Path) else v
                             for k, v in item.items()})
    if not rows:
        raise ExtraSetError(f"{key}.folder: no scene of {str(root)!r} could be rendered")
    write_csv(out / "manifest.csv", rows, MANIFEST_FIELDS)
    write_csv(out / "registration.csv", render_stacks.registration_table(out / "images"),
              render_stacks.REGISTRATION_FIELDS)
    scenes = sorted({row["scene"] for row in rows})
    log.info("render-extra %s: %d scenes, %d exposures from %s (%d skipped)", name, len(scenes), len(rows), root,
             len(skipped))
    return {"folder": str(root), "reference": r["stacks"]["reference"], "max_side": r["max_side"],
            "scenes": scenes, "pairs": len(rows), "skipped": [{"path": str(s["path"]), "reason": s["reason"]}
                                                               for s in skipped]}


def run(params: dict) -> None:
    """Render every set of ``evaluate.extra_sets`` into data/extra/ (replaced as a whole)."""
    sets = params["evaluate"]["extra_sets"] or {}
    with atomic_dir(EXTRA) as tmp:
        summary = {name: render_set(name, entry, tmp / name) for name, entry in sets.items()}
        (tmp / "sets.json").write_text(json.dumps(summary, indent=2) + "\n")

"""Stage `render_extra`: the real bracketed scenes of ``evaluate.extra_sets`` -> data/extra/NAME/
(images/, manifest.csv, registration.csv), the real photos without references of ``evaluate.unpaired_sets``
-> data/extra/NAME/ (images/, manifest.csv), and data/extra/sets.json: the extra sets every evaluate stage scores.

Each set is a folder laid out as a ``data.source: stacks`` folder (README "Exposure stacks"): its scenes
are gathered as the download stage gathers them (`stacks.collect`, into a temporary folder) and rendered
as the render stage renders a stack (`render_stacks.render_scene`): every registered exposure is an input,
its EV is log2(its exposure time / the reference exposure's), and the reference is the set's
``reference`` (``nearest_mid_grey``: the exposure nearest mid-grey, so that exposure scores as an
identical pair), at most ``max_side`` px, registered with the render stage's default ECC settings.

An unpaired set is a folder of photos (JPEG/PNG/TIFF, searched recursively, hidden files passed over):
the first ``limit`` readable regular files in sorted order of their path in the folder, each downscaled
(area) to at most ``max_side`` px and stored as PNG; an unreadable photo is skipped with a log line naming
it and listed in sets.json. The two kinds share the folder data/extra/, so their names must differ.

Reads only ``evaluate.extra_sets`` and ``evaluate.unpaired_sets``; writes data/extra (with sets.json) even
when no set is named.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from expocorr.sources import stacks
from expocorr.stages import render_stacks
from expocorr.atomic import atomic_dir
from expocorr.sources.files import scene_id
from expocorr.errors import UserError
from expocorr.imaging.images import SRGB_SUFFIXES, ImageError, read_rgb, resize_max_side, write_rgb
from expocorr.tables import write_csv

log = logging.getLogger(__name__)

EXTRA = Path("data/extra")
MANIFEST_FIELDS = ["scene", "ev", "input", "reference", "stack", "exposure_time"]
DEFAULT_REFERENCE = "nearest_mid_grey"
UNPAIRED_FIELDS = ["photo", "input", "source"]
DEFAULT_MAX_SIDE = 512
DEFAULT_LIMIT = 40
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


def set_kinds(cfg: dict) -> dict[str, str]:
    """Set name -> ``bracketed`` (``evaluate.extra_sets``) or ``unpaired`` (``evaluate.unpaired_sets``);
    `ExtraSetError` for a name in both (both would be data/extra/NAME)."""
    bracketed, unpaired = cfg["extra_sets"] or {}, cfg["unpaired_sets"] or {}
    for name in unpaired:
        if name in bracketed:
            raise ExtraSetError(f"evaluate.unpaired_sets.{name}: also a set of evaluate.extra_sets (both would be "
                                f"{EXTRA / name}); rename one")
    return {**dict.fromkeys(bracketed, "bracketed"), **dict.fromkeys(unpaired, "unpaired")}


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


def _photos(root: Path) -> list[Path]:
    """The photo files under `root` (recursive, regular files, hidden ones passed over), sorted by path."""
    found = [p for p in root.rglob("*") if p.suffix.lower() in SRGB_SUFFIXES and p.is_file()]
    return sorted((p for p in found if not any(part.startswith(".") for part in p.relative_to(root).parts)),
                  key=lambda p: p.relative_to(root).as_posix())


def prepare_unpaired(name: str, entry: dict, out: Path) -> dict:
    """Prepare unpaired set `name` into `out` (its final place is EXTRA/name); return its summary."""
    key = f"evaluate.unpaired_sets.{name}"
    root = Path(entry["folder"]).expanduser()
    max_side, limit = entry.get("max_side", DEFAULT_MAX_SIDE), entry.get("limit", DEFAULT_LIMIT)
    if not root.is_dir():
        raise ExtraSetError(f"{key}.folder: {str(root)!r} is not a folder")
    rows, skipped, used = [], [], set()
    for path in _photos(root):
        if len(rows) == limit:
            break
        try:
            rgb = resize_max_side(read_rgb(path), max_side)
        except ImageError as exc:
            log.warning("render-extra %s: skipped %s", name, exc)
            skipped.append({"path": str(path), "reason": str(exc)})
            continue
        photo, n = scene_id(path.relative_to(root)), 1
        while photo.casefold() in used:  # `a/b.jpg` and `a__b.png` share an id: `a__b`, `a__b-2`
            n += 1
            photo = f"{scene_id(path.relative_to(root))}-{n}"
        used.add(photo.casefold())
        write_rgb(out / "images" / f"{photo}.png", rgb)
        rows.append({"photo": photo, "input": EXTRA / name / "images" / f"{photo}.png", "source": str(path)})
    if not rows:
        raise ExtraSetError(f"{key}.folder: no readable photo (JPEG/PNG/TIFF) in {str(root)!r}")
    write_csv(out / "manifest.csv", rows, UNPAIRED_FIELDS)
    log.info("render-extra %s: %d unpaired photos from %s (%d skipped)", name, len(rows), root, len(skipped))
    return {"kind": "unpaired", "folder": str(root), "max_side": max_side, "limit": limit,
            "photos": [row["photo"] for row in rows], "skipped": skipped}


def run(params: dict) -> None:
    """Render every set of ``evaluate.extra_sets`` and prepare every set of ``evaluate.unpaired_sets`` into
    data/extra/ (replaced as a whole)."""
    cfg = params["evaluate"]
    set_kinds(cfg)
    with atomic_dir(EXTRA) as tmp:
        summary = {name: {"kind": "bracketed", **render_set(name, entry, tmp / name)}
                   for name, entry in (cfg["extra_sets"] or {}).items()}
        summary |= {name: prepare_unpaired(name, entry, tmp / name)
                    for name, entry in (cfg["unpaired_sets"] or {}).items()}
        (tmp / "sets.json").write_text(json.dumps(summary, indent=2) + "\n")

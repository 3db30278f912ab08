"""The `folder` and `raw` sources (and the photos of a `url` archive): every readable photo under a folder,
recursively, hidden files excluded; `raw` takes the camera raw files only."""

from __future__ import annotations

import shutil
from pathlib import Path

from tqdm import tqdm

from expocorr.imaging.images import SRGB_SUFFIXES, ImageError
from expocorr.sources.files import (RAW_SUFFIXES, DownloadError, check_raw, check_srgb, hidden, scene_id, skip,
                                    unique_scene)


def candidates(folder: Path, raw_only: bool) -> list[tuple[Path, str]]:
    """Files under `folder` (recursive, sorted, hidden ones excluded) with their kind."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink()):
        if hidden(path.relative_to(folder)):
            continue
        suffix = path.suffix.lower()
        if raw_only:
            if suffix not in SRGB_SUFFIXES and suffix not in {".txt", ".csv", ".md", ".xmp", ".json"}:
                found.append((path, "raw"))
        elif suffix in SRGB_SUFFIXES:
            found.append((path, "srgb"))
        elif suffix in RAW_SUFFIXES:
            found.append((path, "raw"))
    return found


def collect(folder: Path, dest: Path, raw_only: bool) -> tuple[list[dict], list[dict]]:
    if not folder.is_dir():
        raise DownloadError(f"data.folder: {folder} is not a folder")
    rows, skipped = [], []
    used: set[str] = set()
    found = candidates(folder, raw_only)
    for path, kind in tqdm(found, desc=f"checking {folder}", unit="file", disable=None):
        try:
            (check_raw if kind == "raw" else check_srgb)(path)
        except ImageError as exc:
            skip(skipped, path, str(exc).removeprefix(f"{path}: "))
            continue
        scene = unique_scene(scene_id(path.relative_to(folder)), used)
        out = dest / f"{scene}{path.suffix.lower()}"
        shutil.copyfile(path, out)
        rows.append({"scene": scene, "kind": kind, "path": out})
    if not rows:
        what = "camera raw files LibRaw can read" if raw_only else "readable JPEG/PNG/TIFF or raw photos"
        raise DownloadError(f"{folder}: no {what} found (skipped: {len(skipped)})")
    return rows, skipped

"""The file-walking helpers every data source shares: scene ids, hidden files, the skipped-file list and
the decode checks of sRGB and camera raw files, and the error a source raises."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import rawpy

from expocorr.errors import UserError
from expocorr.imaging.images import ImageError, read_rgb

log = logging.getLogger(__name__)

RAW_SUFFIXES = {
    ".3fr", ".arw", ".cr2", ".cr3", ".crw", ".dcr", ".dng", ".erf", ".iiq", ".kdc", ".mef", ".mos",
    ".mrw", ".nef", ".nrw", ".orf", ".pef", ".raf", ".raw", ".rw2", ".rwl", ".sr2", ".srf", ".srw", ".x3f",
}


class DownloadError(UserError, RuntimeError):
    """The source cannot provide any usable photo; the message names the folder, URL or file."""


def scene_id(relative: Path) -> str:
    """A file-system-safe scene id from a path relative to the source folder.

    Never starts with a dot (no hidden output files). Different paths can map to the same id
    (`a/b.jpg` and `a__b.png`); `collect` makes the ids of one source distinct.
    """
    stem = relative.with_suffix("").as_posix()
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem.replace("/", "__")).strip("_.") or "scene"


def unique_scene(scene: str, used: set[str]) -> str:
    """`scene`, or `scene-2`, `scene-3`, ... if already used (case-insensitively: the ids name files)."""
    candidate, n = scene, 1
    while candidate.casefold() in used:
        n += 1
        candidate = f"{scene}-{n}"
    used.add(candidate.casefold())
    return candidate


def hidden(rel: Path) -> bool:
    """Hidden files and folders, and the resource forks macOS puts in archives (__MACOSX/)."""
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def skip(skipped: list[dict], path: Path, reason: str) -> None:
    log.warning("skipped %s: %s", path, reason)
    skipped.append({"path": path, "reason": reason})


def check_srgb(path: Path) -> None:
    read_rgb(path)


def check_raw(path: Path) -> None:
    try:
        with rawpy.imread(str(path)) as raw:
            raw.raw_image_visible.shape  # noqa: B018 - forces LibRaw to unpack the sensor data
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        detail = exc.args[0] if len(exc.args) == 1 else exc
        if isinstance(detail, bytes):  # LibRaw's messages come as bytes
            detail = detail.decode(errors="replace")
        raise ImageError(f"{path}: LibRaw cannot decode it: {detail}") from None

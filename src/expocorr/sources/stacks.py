"""Exposure stacks (`data.source: stacks`): scenes of bracketed exposures and their exposure times.

A stack source is a folder (or a zip/tar archive fetched by URL) in which every folder that directly
holds images is one **scene**: its bracketed exposures (JPEG/PNG/TIFF or camera raw) and, optionally,
a reference image named ``reference.<jpg|png|tif…>``. With ``data.stacks.preset: fairchild`` the
layout is that of the HDR Photographic Survey: the camera raw files (NEF) are the exposures and the
one JPEG/PNG/TIFF in the folder is the reference (the survey's tone-mapped render).

Exposure times (seconds), per exposure, from the first of:

1. a sidecar in the scene folder, ``exposures.txt``: one exposure per line, ``FILE SECONDS``
   (whitespace or a comma between them), or only ``SECONDS`` on every line, then one line per
   exposure in file-name order; or ``exposures.csv`` with a header row naming the columns ``file``
   and ``exposure_time``. SECONDS is a decimal (``0.125``, ``8``) or a fraction (``1/8``), optionally
   followed by ``s``; blank lines and ``#`` comments are ignored;
2. the file's EXIF ``ExposureTime`` (tag 0x829A, read with Pillow) for JPEG/PNG/TIFF;
3. for camera raw files, LibRaw's shutter time (rawpy ``other.shutter_speed``), else EXIF through Pillow.

The download stage copies each scene into ``data/downloads/files/<scene>/`` with a listing,
``stack.json``: ``{"scene", "reference": file name or null, "exposures": [{"file", "kind",
"exposure_time", "time_from"}]}`` (file names relative to the listing). The render stage writes the
same kind of listing for the registered exposures; `read_stack` loads one for the baselines.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import shutil
from fractions import Fraction
from pathlib import Path

import rawpy
from PIL import Image

from expocorr.atomic import write_text
from expocorr.imaging.images import SRGB_SUFFIXES, ImageError, read_rgb
from expocorr.sources.archives import ArchiveError, extract, is_html
from expocorr.sources.files import RAW_SUFFIXES, DownloadError, check_raw, hidden, scene_id, skip, unique_scene
from expocorr.sources.url import fetch

log = logging.getLogger(__name__)

LISTING = "stack.json"
SIDECARS = ("exposures.txt", "exposures.csv")
REFERENCE_STEM = "reference"
EXIF_IFD, EXPOSURE_TIME = 0x8769, 0x829A
TIME_FORMS = (
    "give them as EXIF ExposureTime (JPEG/PNG/TIFF), in the camera raw metadata, or in a sidecar in the "
    "scene folder: exposures.txt ('FILE SECONDS' per line, e.g. 'IMG_1.jpg 1/8') or exposures.csv "
    "(columns file,exposure_time)"
)


class StackError(DownloadError):
    """A stack source or scene that cannot be used; the message names the folder or file."""


def parse_seconds(text: str) -> float:
    """An exposure time in seconds from '0.125', '8', '1/8' or '1/8s'; ValueError unless positive and finite."""
    value = text.strip().removesuffix("s").strip()
    seconds = float(Fraction(value)) if "/" in value else float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{text!r} is not a positive exposure time")
    return seconds


def read_sidecar(folder: Path, names: list[str]) -> dict[str, float]:
    """Exposure times from the scene's sidecar (see the module docstring), by file name; {} without one.

    `names` are the exposures' file names in the folder (sorted), for lines that give times only.
    """
    for sidecar in SIDECARS:
        path = folder / sidecar
        if path.is_file():
            break
    else:
        return {}
    try:
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            if not rows or not {"file", "exposure_time"} <= set(rows[0]):
                raise StackError(f"{path}: needs a header row with the columns file and exposure_time")
            pairs = [(row["file"].strip(), row["exposure_time"]) for row in rows if (row["file"] or "").strip()]
        else:
            lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
            fields = [line.replace(",", " ").split() for line in lines if line]
            if fields and all(len(f) == 1 for f in fields):
                if len(fields) != len(names):
                    raise StackError(f"{path}: {len(fields)} times for {len(names)} exposures; give one per "
                                     "exposure (in file-name order) or 'FILE SECONDS' lines")
                pairs = [(name, f[0]) for name, f in zip(names, fields, strict=True)]
            else:
                bad = [" ".join(f) for f in fields if len(f) != 2]
                if bad:
                    raise StackError(f"{path}: line {bad[0]!r} is not 'FILE SECONDS'")
                pairs = [(f[0], f[1]) for f in fields]
        times = {}
        for name, value in pairs:
            try:
                times[name] = parse_seconds(value)
            except (ValueError, ZeroDivisionError):
                raise StackError(f"{path}: {name}: {value!r} is not an exposure time in seconds "
                                 "(e.g. 0.125, 1/8, 8)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise StackError(f"{path}: cannot read the sidecar: {exc}") from None
    unknown = sorted(set(times) - set(names))
    if unknown:
        raise StackError(f"{path}: names files that are not exposures of the scene: {', '.join(unknown)}")
    return times


def _exif_time(path: Path) -> float | None:
    try:
        with Image.open(path) as image:
            exif = image.getexif()
            value = exif.get_ifd(EXIF_IFD).get(EXPOSURE_TIME) or exif.get(EXPOSURE_TIME)
    except Exception:  # Pillow raises many kinds on files it cannot parse: no time from EXIF then
        return None
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds > 0 else None


def metadata_time(path: Path, kind: str) -> tuple[float | None, str]:
    """The exposure time a file records and where it was found ('EXIF', 'raw metadata'), or (None, '')."""
    if kind == "raw":
        try:
            with rawpy.imread(str(path)) as raw:
                seconds = float(getattr(getattr(raw, "other", None), "shutter_speed", 0.0) or 0.0)
        except (rawpy.LibRawError, OSError, ValueError):
            seconds = 0.0
        if math.isfinite(seconds) and seconds > 0:
            return seconds, "raw metadata"
    seconds = _exif_time(path)
    return (seconds, "EXIF") if seconds else (None, "")


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "srgb" if suffix in SRGB_SUFFIXES else "raw" if suffix in RAW_SUFFIXES else None


def scene_folders(root: Path) -> list[Path]:
    """Folders under `root` (itself included; hidden ones excluded) that directly hold an image file."""
    folders = {p.parent for p in root.rglob("*")
               if p.is_file() and _kind(p) and not hidden(p.relative_to(root))}
    return sorted(folders)


def scene_files(folder: Path, preset: str | None) -> tuple[list[tuple[Path, str]], Path | None]:
    """The exposures (path, kind) of a scene folder, sorted by name, and its reference image (or None)."""
    images = [(p, _kind(p)) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    images = [(p, kind) for p, kind in images if kind]
    if preset == "fairchild":
        renders = [p for p, kind in images if kind == "srgb"]
        named = [p for p in renders if p.stem.casefold() == folder.name.casefold()]
        reference = (named or renders or [None])[0]
        if len(renders) > 1 and not named:
            log.warning("%s: several renders, none named after the folder; %s is the reference", folder,
                        reference.name)
        return [(p, kind) for p, kind in images if kind == "raw"], reference
    references = [p for p, kind in images if kind == "srgb" and p.stem.casefold() == REFERENCE_STEM]
    reference = references[0] if references else None
    return [(p, kind) for p, kind in images if p != reference], reference


def _check(path: Path, kind: str) -> None:
    (check_raw if kind == "raw" else read_rgb)(path)


def _scene(folder: Path, preset: str | None, skipped: list[dict]) -> tuple[list[dict], Path | None]:
    """The usable exposures of one scene folder (file, kind, exposure_time, time_from) and its reference.

    Unreadable files are appended to `skipped`; a scene that cannot be used raises StackError."""
    exposures, reference = scene_files(folder, preset)
    if reference is not None:
        try:
            read_rgb(reference)
        except ImageError as exc:
            skip(skipped, reference, f"reference not readable: {str(exc).removeprefix(f'{reference}: ')}")
            reference = None
    good = []
    for path, kind in exposures:
        try:
            _check(path, kind)
        except ImageError as exc:
            skip(skipped, path, str(exc).removeprefix(f"{path}: "))
            continue
        good.append((path, kind))
    if len(good) < 2:
        what = "camera raw exposures" if preset == "fairchild" else "readable exposures"
        raise StackError(f"{folder}: a stack needs at least two {what}, found {len(good)}")
    sidecar = read_sidecar(folder, [p.name for p, _ in exposures])  # all of them: lines match files in order
    entries, missing = [], []
    for path, kind in good:
        if path.name in sidecar:
            seconds, source = sidecar[path.name], "sidecar"
        else:
            seconds, source = metadata_time(path, kind)
        if seconds is None:
            missing.append(path.name)
        entries.append({"file": path.name, "kind": kind, "exposure_time": seconds, "time_from": source})
    if missing:
        raise StackError(f"{folder}: no exposure time for {', '.join(missing)}; {TIME_FORMS}")
    if len({e["exposure_time"] for e in entries}) < 2:
        raise StackError(f"{folder}: every exposure has the same exposure time ({entries[0]['exposure_time']:g} s); "
                         "a stack needs at least two different ones")
    return entries, reference


def collect(root: Path, dest: Path, preset: str | None) -> tuple[list[dict], list[dict]]:
    """Copy every usable scene under `root` into `dest/<scene>/` with its listing; return the index rows
    (kind ``stack``, path = the listing) and the skipped files and scenes (path, reason)."""
    if not root.is_dir():
        raise StackError(f"data.folder: {root} is not a folder")
    rows: list[dict] = []
    skipped: list[dict] = []
    used: set[str] = set()
    folders = scene_folders(root)
    for folder in folders:
        try:
            entries, reference = _scene(folder, preset, skipped)
        except StackError as exc:
            skip(skipped, folder, str(exc).removeprefix(f"{folder}: "))
            continue
        relative = folder.relative_to(root)
        scene = unique_scene(scene_id(relative if relative.parts else Path(root.name)), used)
        target = dest / scene
        target.mkdir(parents=True)
        for entry in entries:
            shutil.copyfile(folder / entry["file"], target / entry["file"])
        if reference is not None:
            shutil.copyfile(reference, target / reference.name)
        listing = {"scene": scene, "reference": reference.name if reference else None, "exposures": entries}
        write_text(target / LISTING, json.dumps(listing, indent=2) + "\n")
        rows.append({"scene": scene, "kind": "stack", "path": target / LISTING,
                     "reference": target / reference.name if reference else ""})
        log.info("stacks: %s: %d exposures (%s), reference: %s", scene, len(entries),
                 ", ".join(f"{e['exposure_time']:g} s" for e in entries), reference.name if reference else "none")
    if not rows:
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[-3:])
        raise StackError(f"{root}: no usable exposure stack among {len(folders)} scene folder(s)"
                         + (f" ({reasons})" if reasons else "; a scene is a folder of bracketed exposures"))
    return rows, skipped


def source_folder(data: dict) -> Path:
    """The folder of scenes: `data.folder`, or the archive at `data.url` (or the preset's URL), fetched
    with pooch (sha256 checked) and safely extracted into `data.cache_dir`."""
    if data["folder"]:
        return Path(data["folder"]).expanduser()
    preset = data["stacks"]["preset"]
    if data["url"]:
        url, sha256 = data["url"], data["sha256"]
    elif preset == "fairchild":
        url, sha256 = data["stacks"]["fairchild"]["url"], data["stacks"]["fairchild"]["sha256"]
    else:
        raise StackError("data.source 'stacks' needs data.folder, data.url or data.stacks.preset")
    archive = fetch(url, sha256, data["cache_dir"])
    try:
        return extract(archive, Path(data["cache_dir"]) / f"{archive.name}.d", data["max_archive_bytes"],
                       data["max_compression_ratio"])
    except ArchiveError:
        if is_html(archive):
            hint = (" The HDR Photographic Survey's raw stacks are one zip, http://markfairchild.org/files/HDRPS_Raws.zip "
                    "(plain http); or put the scenes' raw (NEF) files and renders into one folder per scene and set "
                    "data.folder." if preset == "fairchild" else "")
            raise StackError(f"{url}: got an HTML page, not a zip or tar archive.{hint}") from None
        raise


def read_listing(path: str | Path) -> dict:
    """A stack listing (``stack.json``) with its file names resolved against the listing's folder."""
    path = Path(path)
    try:
        listing = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StackError(f"{path}: not a readable stack listing: {exc}") from None
    folder = path.parent
    listing["exposures"] = [dict(e, path=folder / e["file"]) for e in listing["exposures"]]
    listing["reference_path"] = folder / listing["reference"] if listing.get("reference") else None
    return listing


def read_stack(path: str | Path) -> list[tuple]:
    """The exposures of a rendered stack listing as ``[(float32 RGB in [0, 1], exposure time in s), ...]``
    (the ``ctx["stack"]`` of the stack baselines), sorted by exposure time. Cached (the rows of one
    scene share it; the arrays must not be modified) by resolved path, size and modification time."""
    path = Path(path).resolve()
    stat = path.stat()
    return _read_stack(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _read_stack(path: Path, size: int, mtime_ns: int) -> list[tuple]:
    listing = read_listing(path)
    return [(read_rgb(e["path"]), float(e["exposure_time"])) for e in listing["exposures"]]

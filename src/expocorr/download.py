"""Stage `download`: gather source photos into data/downloads/ (files/, index.csv, skipped.csv)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pooch
import rawpy
from tqdm import tqdm

from expocorr.errors import UserError
from expocorr.archives import extract
from expocorr.atomic import atomic_dir
from expocorr.images import SRGB_SUFFIXES, ImageError, read_rgb
from expocorr.tables import write_csv

log = logging.getLogger(__name__)

OUT = Path("data/downloads")
FILES = OUT / "files"
WEIGHTS = OUT / "weights"
INDEX = OUT / "index.csv"
SKIPPED = OUT / "skipped.csv"

INDEX_FIELDS = ["scene", "kind", "path", "split", "ev", "reference"]
DATASET_FIELDS = ["exposure", "protocol"]  # benchmark datasets (expocorr.datasets): exposure group, protocol
MSEC_EXPERTS = ["a", "b", "c", "d", "e"]
MSEC_EV = {"N1.5": -1.5, "N1": -1.0, "0": 0.0, "P1": 1.0, "P1.5": 1.5}
MSEC_INPUT = re.compile(r"^(?P<base>.+)_(?P<ev>N1\.5|N1|0|P1|P1\.5)$")
RAW_SUFFIXES = {
    ".3fr", ".arw", ".cr2", ".cr3", ".crw", ".dcr", ".dng", ".erf", ".iiq", ".kdc", ".mef", ".mos",
    ".mrw", ".nef", ".nrw", ".orf", ".pef", ".raf", ".raw", ".rw2", ".rwl", ".sr2", ".srf", ".srw", ".x3f",
}
# Real colour photographs shipped inside installed packages: (scene, package, resource path).
BUNDLED = [
    ("astronaut", "skimage", "data/astronaut.png"),
    ("chelsea", "skimage", "data/chelsea.png"),
    ("coffee", "skimage", "data/coffee.png"),
    ("rocket", "skimage", "data/rocket.jpg"),
    ("motorcycle", "skimage", "data/motorcycle_left.png"),
    ("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("china", "sklearn", "datasets/images/china.jpg"),
    ("flower", "sklearn", "datasets/images/flower.jpg"),
]
DOWNLOAD_RETRIES = 2
HUB_HASH = re.compile(r"-([a-f0-9]{8,})\.")  # torch.hub.HASH_REGEX: NAME-<sha256 prefix>.EXT


class DownloadError(UserError, RuntimeError):
    """The source cannot provide any usable photo; the message names the folder, URL or file."""


def scene_id(relative: Path) -> str:
    """A file-system-safe scene id from a path relative to the source folder.

    Never starts with a dot (no hidden output files). Different paths can map to the same id
    (`a/b.jpg` and `a__b.png`); `_collect_folder` makes the ids of one source distinct.
    """
    stem = relative.with_suffix("").as_posix()
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem.replace("/", "__")).strip("_.") or "scene"


def _unique(scene: str, used: set[str]) -> str:
    """`scene`, or `scene-2`, `scene-3`, ... if already used (case-insensitively: the ids name files)."""
    candidate, n = scene, 1
    while candidate.casefold() in used:
        n += 1
        candidate = f"{scene}-{n}"
    used.add(candidate.casefold())
    return candidate


def _hidden(rel: Path) -> bool:
    """Hidden files and folders, and the resource forks macOS puts in archives (__MACOSX/)."""
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def _skip(skipped: list[dict], path: Path, reason: str) -> None:
    log.warning("skipped %s: %s", path, reason)
    skipped.append({"path": path, "reason": reason})


def _check_srgb(path: Path) -> None:
    read_rgb(path)


def _check_raw(path: Path) -> None:
    try:
        with rawpy.imread(str(path)) as raw:
            raw.raw_image_visible.shape  # noqa: B018 - forces LibRaw to unpack the sensor data
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        detail = exc.args[0] if len(exc.args) == 1 else exc
        if isinstance(detail, bytes):  # LibRaw's messages come as bytes
            detail = detail.decode(errors="replace")
        raise ImageError(f"{path}: LibRaw cannot decode it: {detail}") from None


def _candidates(folder: Path, raw_only: bool) -> list[tuple[Path, str]]:
    """Files under `folder` (recursive, sorted, hidden ones excluded) with their kind."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink()):
        if _hidden(path.relative_to(folder)):
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


def _collect_folder(folder: Path, dest: Path, raw_only: bool) -> tuple[list[dict], list[dict]]:
    if not folder.is_dir():
        raise DownloadError(f"data.folder: {folder} is not a folder")
    rows, skipped = [], []
    used: set[str] = set()
    candidates = _candidates(folder, raw_only)
    for path, kind in tqdm(candidates, desc=f"checking {folder}", unit="file", disable=None):
        try:
            (_check_raw if kind == "raw" else _check_srgb)(path)
        except ImageError as exc:
            _skip(skipped, path, str(exc).removeprefix(f"{path}: "))
            continue
        scene = _unique(scene_id(path.relative_to(folder)), used)
        out = dest / f"{scene}{path.suffix.lower()}"
        shutil.copyfile(path, out)
        rows.append({"scene": scene, "kind": kind, "path": out})
    if not rows:
        what = "camera raw files LibRaw can read" if raw_only else "readable JPEG/PNG/TIFF or raw photos"
        raise DownloadError(f"{folder}: no {what} found (skipped: {len(skipped)})")
    return rows, skipped


def _collect_bundled(dest: Path) -> list[dict]:
    rows = []
    for scene, package, resource in BUNDLED:
        source = resources.files(package).joinpath(resource)
        if not source.is_file():
            log.info("bundled photo %s:%s not installed; skipped", package, resource)
            continue
        out = dest / f"{scene}{Path(resource).suffix}"
        out.write_bytes(source.read_bytes())
        rows.append({"scene": scene, "kind": "srgb", "path": out})
    return rows


def fetch(url: str, sha256: str | None, cache_dir: str | Path) -> Path:
    """Download `url` into `cache_dir` with pooch (checksum, retries, progress bar).

    With a sha256 a mismatch raises and leaves no file behind; without one the computed
    hash is logged so it can be pinned in params.yaml.
    """
    name = Path(urlparse(url).path).name or "download"
    fname = f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"
    known = f"sha256:{sha256.lower()}" if sha256 else None
    downloader = _downloader(url)
    fetcher = pooch.create(
        path=cache_dir, base_url="", registry={fname: known}, urls={fname: url}, retry_if_failed=DOWNLOAD_RETRIES
    )
    try:
        path = Path(fetcher.fetch(fname, downloader=downloader))
    except ValueError as exc:
        raise DownloadError(f"{url}: {exc}") from None
    except Exception as exc:  # requests' network errors: name the URL, keep the cause
        raise DownloadError(f"{url}: download failed: {exc}") from exc
    if not sha256:
        log.warning("%s has no sha256 in params; its sha256 is %s (pin it)", url, pooch.file_hash(str(path)))
    return path


def _copy_file_url(url: str, output_file: str, pooch_obj: pooch.Pooch | None = None) -> None:
    """pooch downloader for file:// URLs (the params schema allows them; pooch has none)."""
    shutil.copyfile(url2pathname(urlparse(url).path), output_file)


def _downloader(url: str):
    """The pooch downloader for the URL's scheme (http, https, ftp, file)."""
    parts = urlparse(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return pooch.HTTPDownloader(progressbar=True, timeout=60)
    if scheme == "ftp":
        return pooch.FTPDownloader(progressbar=True, timeout=60)
    if scheme == "file" and parts.netloc in ("", "localhost"):
        return _copy_file_url
    if scheme == "file":
        raise DownloadError(f"{url}: file URLs on another host ({parts.netloc}) are not supported")
    raise DownloadError(f"{url}: unsupported URL scheme {scheme!r} (use http, https, ftp or file)")


def check_hub_prefix(url: str, path: Path) -> None:
    """torch.hub's check for a file named NAME-<sha256 prefix>.EXT (torchvision's weights): its sha256 must
    start with that prefix; otherwise the file is removed and the error names the URL."""
    match = HUB_HASH.search(Path(urlparse(url).path).name)
    if match is None:
        return
    digest = pooch.file_hash(str(path))
    if not digest.startswith(match[1]):
        path.unlink()
        raise DownloadError(f"{url}: sha256 {digest} does not start with {match[1]}, the hash prefix of its file name "
                            "(torch.hub's check); the file is removed")


def fetch_weights(weights: dict[str, dict], cache_dir: str) -> None:
    """Fetch each `data.weights` entry (e.g. torchvision VGG checkpoints) to data/downloads/weights/NAME.pth,
    listed with its URL and sha256 in data/downloads/weights/weights.json (written even when empty). Without
    a sha256, a file name carrying a hash prefix (torchvision's vgg16-397923af.pth) is checked against it."""
    listing = {}
    with atomic_dir(WEIGHTS) as tmp:
        for name, spec in weights.items():
            path = fetch(spec["url"], spec["sha256"], cache_dir)
            if not spec["sha256"]:
                check_hub_prefix(spec["url"], path)
            shutil.copyfile(path, tmp / f"{name}.pth")
            listing[name] = {"path": (WEIGHTS / f"{name}.pth").as_posix(), "url": spec["url"],
                             "sha256": pooch.file_hash(str(path))}
            log.info("download: weights %s -> %s", name, listing[name]["path"])
        (tmp / "weights.json").write_text(json.dumps(listing, indent=2) + "\n")


def run(params: dict) -> None:
    """Gather the photos of `data.source` into data/downloads/."""
    data = params["data"]
    source = data["source"]
    skipped: list[dict] = []
    with atomic_dir(FILES) as tmp:
        if source == "bundled":
            rows = _collect_bundled(tmp)
        elif source in ("folder", "raw"):
            rows, skipped = _collect_folder(Path(data["folder"]).expanduser(), tmp, raw_only=source == "raw")
        elif source == "stacks":
            from expocorr import stacks  # imported here: it builds on this module

            rows, skipped = stacks.collect(stacks.source_folder(data), tmp, data["stacks"]["preset"])
        elif source == "url":
            archive = fetch(data["url"], data["sha256"], data["cache_dir"])
            extracted = extract(archive, Path(data["cache_dir"]) / f"{archive.name}.d", data["max_archive_bytes"],
                                data["max_compression_ratio"])
            rows, skipped = _collect_folder(extracted, tmp, raw_only=False)
        else:  # a benchmark dataset: msec, lol, sice, lcdp
            from expocorr import datasets  # imported here: it builds on this module

            rows, skipped = datasets.collect(source, tmp, data)
        if not rows:
            raise DownloadError(f"data.source {source!r}: no photos found")
        for row in rows + skipped:  # paths as they will be once the folder is in place
            for key, value in row.items():
                if isinstance(value, Path) and value.is_relative_to(tmp):
                    row[key] = FILES / value.relative_to(tmp)
    fetch_weights(data["weights"], data["cache_dir"])
    write_csv(INDEX, rows, INDEX_FIELDS + [f"reference_expert_{e}" for e in MSEC_EXPERTS] + DATASET_FIELDS)
    write_csv(SKIPPED, skipped, ["path", "reason"])
    log.info("download: %d photos from %s, %d skipped", len(rows), source, len(skipped))

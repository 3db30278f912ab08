"""The `url` source (a zip/tar archive of photos, fetched and safely extracted) and `fetch`, the checked
download every source, the weights and the pretrained stage use (pooch: checksum, retries, cache)."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pooch

from expocorr.sources import folder
from expocorr.sources.archives import extract
from expocorr.sources.files import DownloadError

log = logging.getLogger(__name__)

DOWNLOAD_RETRIES = 2


HUB_HASH = re.compile(r"-([a-f0-9]{8,})\.")  # torch.hub.HASH_REGEX: NAME-<sha256 prefix>.EXT


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


def collect(data: dict, dest: Path) -> tuple[list[dict], list[dict]]:
    """The photos of the archive at `data.url` (checked against `data.sha256`), extracted into the cache."""
    archive = fetch(data["url"], data["sha256"], data["cache_dir"])
    extracted = extract(archive, Path(data["cache_dir"]) / f"{archive.name}.d", data["max_archive_bytes"],
                        data["max_compression_ratio"])
    return folder.collect(extracted, dest, raw_only=False)

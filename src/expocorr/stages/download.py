"""Stage `download`: gather the photos of `data.source` into data/downloads/ (files/, index.csv, skipped.csv)
and the `data.weights` files into data/downloads/weights/. The sources themselves: `expocorr.sources`."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pooch

from expocorr.atomic import atomic_dir
from expocorr.sources import bundled, datasets, folder, stacks, url
from expocorr.sources.datasets import MSEC_EXPERTS
from expocorr.sources.files import DownloadError
from expocorr.sources.url import check_hub_prefix, fetch
from expocorr.tables import write_csv

log = logging.getLogger(__name__)

OUT = Path("data/downloads")
FILES = OUT / "files"
WEIGHTS = OUT / "weights"
INDEX = OUT / "index.csv"
SKIPPED = OUT / "skipped.csv"

INDEX_FIELDS = ["scene", "kind", "path", "split", "ev", "reference"]
DATASET_FIELDS = ["exposure", "protocol"]  # benchmark datasets (expocorr.sources.datasets): exposure group, protocol


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
            rows = bundled.collect(tmp)
        elif source in ("folder", "raw"):
            rows, skipped = folder.collect(Path(data["folder"]).expanduser(), tmp, raw_only=source == "raw")
        elif source == "stacks":
            rows, skipped = stacks.collect(stacks.source_folder(data), tmp, data["stacks"]["preset"])
        elif source == "url":
            rows, skipped = url.collect(data, tmp)
        else:  # a benchmark dataset: msec, lol, sice, lcdp
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

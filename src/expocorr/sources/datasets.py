"""Benchmark datasets as `data.source`: MSEC, LOL, SICE and LCDP.

Each archive (a URL, a local zip/tar, or a folder it was extracted to) is fetched or checked against its
sha256, extracted with `expocorr.sources.archives.extract`, and checked against the dataset's published layout:
a missing folder, an input without its reference (or the reverse) or an unexpected entry stops the stage
with one line naming it; counts that differ from the published ones are one warning line (a subset still
runs). Every row keeps the dataset's own split and carries the protocol its papers use (`PROTOCOLS`: the
manifest's `protocol` column, shown by the report) and its exposure group (`exposure`: under / over /
mixed; empty for SICE, where the render stage compares the input with its reference).

Datasets without EVs (LOL, SICE, LCDP) have one input per scene and EV 0 in the manifest: their groups
are in `exposure`, not in the EV.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pooch

from expocorr.imaging.images import SRGB_SUFFIXES
from expocorr.sources.archives import extract, is_html
from expocorr.sources.files import DownloadError, hidden, skip
from expocorr.sources.url import fetch

log = logging.getLogger(__name__)

URL = re.compile(r"^(https?|ftp|file)://", re.IGNORECASE)

# MSEC: Afifi et al., "Learning Multi-Scale Photo Exposure Correction", CVPR 2021. Layout from the
# dataset's README (github.com/mahmoudnafifi/Exposure_Correction: `training/`, `validation/` each with
# INPUT_IMAGES/ and GT_IMAGES/); the testing archive's expert_{a..e}_testing_set/ folders and the names
# `<base>_{N1.5,N1,0,P1,P1.5}.JPG` as the archives hold them (the existing msec source). The test counts
# (2,362 under = EV -1.5/-1, 3,543 over = EV 0/+1/+1.5, 5,905 in all: 1,181 scenes x 5) are the paper's
# Table 1 grouping as issue 21 states it; not re-read from the paper here. Train/val counts: not checked.
MSEC_EXPERTS = ["a", "b", "c", "d", "e"]
MSEC_EV = {"N1.5": -1.5, "N1": -1.0, "0": 0.0, "P1": 1.0, "P1.5": 1.5}
MSEC_INPUT = re.compile(r"^(?P<base>.+)_(?P<ev>N1\.5|N1|0|P1|P1\.5)$")
MSEC_TEST = {"under": 2362, "over": 3543, "overall": 5905}
MSEC_EVS = 5
# LOL v1: Wei et al., "Deep Retinex Decomposition for Low-Light Enhancement", BMVC 2018.
# LOLdataset/our485/{low,high}/N.png and LOLdataset/eval15/{low,high}/N.png, the same file name in low/
# and high/ (paths in loaders of many repositories, e.g. zhangyhuaee/KinD_plus issue #6 `./LOLdataset/
# our485/high`); 485 training and 15 test pairs of 600x400 (TrystAI/restorers docs/dataloader/
# lol_dataloader.md). No validation set is published. The image size is not checked.
LOL_PARTS = {"our485": ("train", 485), "eval15": ("test", 15)}
# SICE: Cai, Gu and Zhang, "Learning a Deep Single Image Contrast Enhancer from Multi-Exposure Images",
# TIP 2018 (github.com/csjcai/SICE README): Part 1, 360 sequences; Part 2, 229 sequences; 4,413 images.
# Inside each part: one folder per sequence named by its number, holding the exposures, and Label/<number>.<ext>,
# the reference (Dataset_Part1/<n>/, Dataset_Part1/Label/<n>.JPG; Part 2 labels .JPG or .PNG: third-party
# loaders, not the authors' documentation). Part 1 for training and Part 2 for testing is the convention of
# later papers (Zero-DCE trains on Part 1); the SICE paper's own split could not be verified here.
SICE_PARTS = {"part1": ("train", 360), "part2": ("test", 229)}
SICE_IMAGES = 4413
# LCDP: Wang, Xu and Lau, "Local Color Distributions Prior for Image Enhancement", ECCV 2022
# (github.com/onpix/LCDPNet README: lcdp_dataset.7z with input/*.png, gt/*.png for training and
# test-input/*.png, test-gt/*.png for testing; src/config/ds/valid.yaml names valid-input/, valid-gt/).
# The official loader (src/data/img_dataset.py) pairs inputs and references by sorted position and requires
# equal counts; so does this. Counts per split: not verified, not checked.
LCDP_FOLDERS = {"train": ("input", "gt"), "val": ("valid-input", "valid-gt"), "test": ("test-input", "test-gt")}

PROTOCOLS = {
    "msec": ("MSEC (Afifi et al., CVPR 2021): the dataset's training / validation / testing split; reference "
             "Expert C (experts A-E all scored); under = EV -1.5, -1 and over = EV 0, +1, +1.5 (2,362 / 3,543 of "
             "the 5,905 test images); evaluated at full resolution"),
    "lol": ("LOL v1 (Wei et al., BMVC 2018): our485 for training, eval15 (15 pairs) for testing, no published "
            "validation set (split.fractions.val of the training pairs); reference the normal-light image; "
            "every input under-exposed; evaluated at full resolution (600x400)"),
    "sice": ("SICE (Cai et al., TIP 2018): Part 1 for training, Part 2 for testing; reference each sequence's "
             "label; every exposure of a sequence is an input, under / over by its mean grey against the "
             "label's (expocorr's rule); evaluated at full resolution"),
    "lcdp": ("LCDP (Wang et al., ECCV 2022): the dataset's train / valid / test folders; reference the gt "
             "image; inputs mix over- and under-exposure in one image (group mixed: overall only); evaluated "
             "at full resolution"),
}


class LayoutError(DownloadError):
    """An extracted dataset that does not have its published layout; the message names what is wrong."""


def archive_folder(spec: dict, key: str, dest: Path, data: dict) -> Path:
    """The folder holding `data.KEY`'s archive, extracted into `dest` (a folder is copied there as it is).

    A URL is fetched with `expocorr.sources.url.fetch`; a local file is checked against `data.KEY.sha256` (logged to pin
    when null). A folder takes no sha256."""
    archive, sha256 = spec["archive"], spec["sha256"]
    if URL.match(archive):
        path = fetch(archive, sha256, data["cache_dir"])
        if is_html(path):
            raise DownloadError(f"data.{key}: {archive} served a web page (HTML), not the archive: the host "
                                         "needs a browser; download the file there and give its local path")
    else:
        path = Path(archive).expanduser()
        if path.is_dir():
            if sha256:
                raise DownloadError(f"data.{key}.sha256: {path} is a folder (an extracted archive): set it "
                                             "to null, or give the archive file")
            shutil.copytree(path, dest, ignore=shutil.ignore_patterns(".*", "__MACOSX"))
            return dest
        if not path.is_file():
            raise DownloadError(f"data.{key}.archive: {path}: no such file or folder")
        digest = pooch.file_hash(str(path))
        if sha256 and digest != sha256.lower():
            raise DownloadError(f"data.{key}.archive: {path}: sha256 {digest} does not match "
                                         f"data.{key}.sha256 {sha256.lower()}")
        if not sha256:
            log.warning("data.%s.archive: %s has no sha256 in params; its sha256 is %s (pin it)", key, path, digest)
    return extract(path, dest, data["max_archive_bytes"], data["max_compression_ratio"])


def find_root(top: Path, wanted: tuple[str, ...], what: str, depth: int = 3) -> Path:
    """The first folder at most `depth` levels under `top` (breadth first) holding every folder of `wanted`."""
    level = [top]
    for _ in range(depth + 1):
        for folder in level:
            if all((folder / name).is_dir() for name in wanted):
                return folder
        level = sorted(p for f in level for p in f.iterdir() if p.is_dir() and not hidden(Path(p.name)))
    raise LayoutError(f"{top}: not the {what} layout: no folder holding {', '.join(n + '/' for n in wanted)}")


def images(folder: Path, skipped: list[dict]) -> list[Path]:
    """The JPEG/PNG/TIFF files directly in `folder` (sorted); other visible files go to `skipped`."""
    found = []
    for path in sorted(folder.iterdir()):
        if hidden(Path(path.name)) or path.is_dir():
            continue
        if path.suffix.lower() in SRGB_SUFFIXES:
            found.append(path)
        else:
            skip(skipped, path, "not a JPEG/PNG/TIFF image")
    return found


def _names(paths) -> str:
    paths = sorted(str(p) for p in paths)
    return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _check_count(what: str, got: int, published: int) -> None:
    if got != published:
        log.warning("%s: %d, the published dataset has %d (a subset or another release?)", what, got, published)


def _row(scene: str, path: Path, split: str, reference: Path, exposure: str, name: str) -> dict:
    return {"scene": scene, "kind": "pair", "path": path, "split": split, "ev": 0.0, "reference": reference,
            "exposure": exposure, "protocol": PROTOCOLS[name]}


def index_msec(root: Path, split: str, skipped: list[dict]) -> list[dict]:
    """Rows for one extracted MSEC split: every input with its EV, exposure group and references.

    Inputs whose names carry no MSEC EV suffix go to `skipped`; an input without a reference in one of the
    split's reference folders, or a scene missing one of the five EVs, stops with the first one named."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not hidden(p.relative_to(root)))
    inputs = [p for p in files if p.parent.name == "INPUT_IMAGES"]
    if not inputs:
        raise DownloadError(f"{root}: no INPUT_IMAGES/ folder in the MSEC {split} archive")
    wanted = ([f"expert_{e}_testing_set" for e in MSEC_EXPERTS] if split == "testing" else ["GT_IMAGES"])
    folders = {"GT_IMAGES": "reference"} | {f"expert_{e}_testing_set": f"reference_expert_{e}"
                                            for e in MSEC_EXPERTS}
    refs: dict[str, dict[str, Path]] = {}  # column -> {stem: first file in sorted order}
    for path in files:
        column = folders.get(path.parent.name)
        if column:
            refs.setdefault(column, {}).setdefault(path.stem, path)
    missing = [name for name in wanted if folders[name] not in refs]
    if missing:
        raise LayoutError(f"{root}: not the MSEC {split} layout: no {', '.join(m + '/' for m in missing)} beside "
                          "INPUT_IMAGES/")
    if "reference" not in refs:
        refs["reference"] = refs["reference_expert_c"]
    rows, evs = [], {}
    for path in inputs:
        match = MSEC_INPUT.match(path.stem)
        if not match:
            skip(skipped, path, "name does not end in an MSEC EV suffix (_N1.5, _N1, _0, _P1, _P1.5)")
            continue
        ev = MSEC_EV[match["ev"]]
        row = {"scene": match["base"], "kind": "msec", "path": path, "split": split, "ev": ev,
               "exposure": "under" if ev < 0 else "over", "protocol": PROTOCOLS["msec"]}
        for column, stems in refs.items():
            if match["base"] not in stems:
                folder = next(f for f, c in folders.items() if c == column)
                raise LayoutError(f"{path}: MSEC {split}: no reference {match['base']}.* in {folder}/")
            row[column] = stems[match["base"]]
        evs.setdefault(match["base"], set()).add(ev)
        rows.append(row)
    short = {base: got for base, got in evs.items() if len(got) < MSEC_EVS}
    if short:
        raise LayoutError(f"{root}: MSEC {split}: scene(s) without all five EVs (_N1.5, _N1, _0, _P1, _P1.5): "
                          f"{_names(short)}")
    if split == "testing":
        for group, published in MSEC_TEST.items():
            got = sum(1 for r in rows if group == "overall" or r["exposure"] == group)
            _check_count(f"MSEC testing: {group} inputs", got, published)
    return rows


def index_lol(top: Path, skipped: list[dict]) -> list[dict]:
    """Rows for an extracted LOL v1: our485 (train) and eval15 (test), low/ paired with high/ by file name."""
    root = find_root(top, tuple(LOL_PARTS), "LOL v1 (LOLdataset/our485, LOLdataset/eval15)")
    rows = []
    for part, (split, published) in LOL_PARTS.items():
        for side in ("low", "high"):
            if not (root / part / side).is_dir():
                raise LayoutError(f"{root / part}: not the LOL layout: no {side}/ folder")
        low = {p.name: p for p in images(root / part / "low", skipped)}
        high = {p.name: p for p in images(root / part / "high", skipped)}
        for names, here, there in ((set(low) - set(high), "low", "high"), (set(high) - set(low), "high", "low")):
            if names:
                raise LayoutError(f"{root / part}: LOL: {here}/ image(s) without a {there}/ image of the same name: "
                                  f"{_names(names)}")
        _check_count(f"LOL {part}: pairs", len(low), published)
        rows += [_row(f"{part}__{Path(name).stem}", low[name], split, high[name], "under", "lol")
                 for name in sorted(low)]
    return rows


def index_sice(top: Path, part: str, skipped: list[dict]) -> list[dict]:
    """Rows for one extracted SICE part: every exposure of sequence folder N against Label/N.<ext>."""
    root = find_root(top, ("Label",), f"SICE {part} (numbered sequence folders and Label/)")
    split, published = SICE_PARTS[part]
    sequences = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not hidden(Path(p.name))):
        if folder.name == "Label":
            continue
        if not folder.name.isdigit():
            raise LayoutError(f"{folder}: SICE {part}: unexpected folder (sequences are numbered folders, with Label/)")
        sequences[folder.name] = folder
    labels = {}
    for path in images(root / "Label", skipped):
        if path.stem in labels:
            raise LayoutError(f"{path}: SICE {part}: a second label for sequence {path.stem} "
                              f"({labels[path.stem].name})")
        labels[path.stem] = path
    for names, what in ((set(sequences) - set(labels), "sequence folder(s) without a Label/ image"),
                        (set(labels) - set(sequences), "Label/ image(s) without a sequence folder")):
        if names:
            raise LayoutError(f"{root}: SICE {part}: {what}: {_names(names)}")
    _check_count(f"SICE {part}: sequences", len(sequences), published)
    rows = []
    for number in sorted(sequences, key=int):
        exposures = images(sequences[number], skipped)
        if not exposures:
            raise LayoutError(f"{sequences[number]}: SICE {part}: sequence without images")
        rows += [_row(f"{part}__{number}__{p.stem}", p, split, labels[number], "", "sice") for p in exposures]
    return rows


def index_lcdp(top: Path, skipped: list[dict]) -> list[dict]:
    """Rows for an extracted LCDP: input/ with gt/ (train), valid-input/ with valid-gt/ (val, when present),
    test-input/ with test-gt/ (test), paired by sorted position as the official loader does."""
    root = find_root(top, ("input", "gt", "test-input", "test-gt"), "LCDP (input/, gt/, test-input/, test-gt/)")
    rows = []
    for split, (inputs, references) in LCDP_FOLDERS.items():
        if split == "val" and not (root / inputs).is_dir() and not (root / references).is_dir():
            continue  # not in the README's table: optional
        for name in (inputs, references):
            if not (root / name).is_dir():
                raise LayoutError(f"{root}: not the LCDP layout: {name}/ is missing")
        ins, refs = images(root / inputs, skipped), images(root / references, skipped)
        if len(ins) != len(refs) or not ins:
            raise LayoutError(f"{root}: LCDP {split}: {len(ins)} image(s) in {inputs}/ but {len(refs)} in "
                              f"{references}/ (paired by sorted position: the counts must be equal and not 0)")
        rows += [_row(f"{split}__{i.stem}", i, split, g, "mixed", "lcdp") for i, g in zip(ins, refs)]
    return rows


def collect(name: str, dest: Path, data: dict) -> tuple[list[dict], list[dict]]:
    """(index rows, skipped files) of dataset `name` (msec, lol, sice, lcdp), extracted under `dest`/NAME."""
    skipped: list[dict] = []
    rows: list[dict] = []
    if name == "msec":
        for split, spec in data["msec"].items():
            root = archive_folder({"archive": spec["url"], "sha256": spec["sha256"]}, f"msec.{split}",
                                  dest / "msec" / split, data)
            rows += index_msec(root, split, skipped)
    elif name == "lol":
        rows = index_lol(archive_folder(data["lol"], "lol", dest / "lol", data), skipped)
    elif name == "sice":
        for part in SICE_PARTS:
            rows += index_sice(archive_folder(data["sice"][part], f"sice.{part}", dest / "sice" / part, data),
                               part, skipped)
        _check_count("SICE: images (both parts)", len(rows), SICE_IMAGES)
    else:
        rows = index_lcdp(archive_folder(data["lcdp"], "lcdp", dest / "lcdp", data), skipped)
    return rows, skipped

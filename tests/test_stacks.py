"""Exposure stacks (`data.source: stacks`): exposure times, ECC registration, references, augmentation,
the stack baselines, on stacks built from real photos in linear light (tests/bracketed.py) and on the
real brackets in ../shared/data/stacks/ (skipped when absent)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

import bracketed
from test_archives import wrap_offsets
from expocorr import params
from expocorr.imaging import register
from expocorr.sources import stacks
from expocorr.stages import download, render, render_stacks, split
from expocorr.baselines import BASELINES, BaselineError, fusion
from expocorr.imaging.images import read_rgb, to_uint8
from expocorr.metrics import psnr
from expocorr.tables import read_csv

REPO = Path(__file__).resolve().parents[1]
SHARED_STACKS = REPO.parent / "shared/data/stacks"
EXPOCORR = Path(sys.executable).parent / "expocorr"
MOTIONS = ["translation", "euclidean", "affine", "homography"]


# --- helpers -------------------------------------------------------------------------------------



def stack_params(base: dict, folder: Path | None = None, **stack_cfg) -> dict:
    """params.yaml with `data.source: stacks` on `folder`, full-size renders, `render.stacks` updated."""
    p = copy.deepcopy(base)
    p["data"].update(source="stacks", folder=str(folder) if folder else None, cache_dir=str(Path("cache").resolve()))
    p["render"]["max_side"] = None
    register_cfg = stack_cfg.pop("register", {})
    augment_cfg = stack_cfg.pop("augment", {})
    p["render"]["stacks"].update(stack_cfg)
    p["render"]["stacks"]["register"].update(register_cfg)
    p["render"]["stacks"]["augment"].update(augment_cfg)
    return params.validate(p) if folder else p


def run_stages(p: dict, *stages) -> None:
    for stage in stages:
        {"download": download, "render": render, "split": split}[stage].run(p)


def manifest() -> list[dict]:
    return read_csv(render.MANIFEST)


def corner_error(found: np.ndarray, known: np.ndarray, shape: tuple) -> float:
    """Largest distance (px) between where two warps send the image corners."""
    c = register.corners(shape)
    return float(np.abs(register.warp_points(found, c) - register.warp_points(known, c)).max())


def transforms(scene: str) -> dict:
    return json.loads((render.IMAGES / scene / "transforms.json").read_text())


# --- exposure times ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [("0.125", 0.125), ("1/8", 0.125), ("1/8s", 0.125), (" 8 ", 8.0),
                                           ("30s", 30.0), ("1/4000", 0.00025)])
def test_parse_seconds(text, seconds):
    assert stacks.parse_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["0", "-1/8", "abc", "inf", "nan", ""])
def test_parse_seconds_rejects(text):
    with pytest.raises(ValueError):
        stacks.parse_seconds(text)


def test_sidecar_forms(tmp_path):
    names = ["a.jpg", "b.jpg", "c.jpg"]
    (tmp_path / "exposures.txt").write_text("# bracket\na.jpg 1/8\nb.jpg, 0.5\n\nc.jpg 2s  # long\n")
    assert stacks.read_sidecar(tmp_path, names) == {"a.jpg": 0.125, "b.jpg": 0.5, "c.jpg": 2.0}
    (tmp_path / "exposures.txt").write_text("1/8\n1/2\n2\n")  # times only: file-name order
    assert stacks.read_sidecar(tmp_path, names) == {"a.jpg": 0.125, "b.jpg": 0.5, "c.jpg": 2.0}
    (tmp_path / "exposures.txt").unlink()
    (tmp_path / "exposures.csv").write_text("file,exposure_time\na.jpg,1/8\nc.jpg,2\n")  # a subset is fine
    assert stacks.read_sidecar(tmp_path, names) == {"a.jpg": 0.125, "c.jpg": 2.0}


@pytest.mark.parametrize("name, text, message", [
    ("exposures.txt", "a.jpg 1/8 extra\n", "is not 'FILE SECONDS'"),
    ("exposures.txt", "1/8\n1/2\n", "2 times for 3 exposures"),
    ("exposures.txt", "a.jpg fast\n", "'fast' is not an exposure time"),
    ("exposures.txt", "z.jpg 1/8\n", "not exposures of the scene: z.jpg"),
    ("exposures.csv", "name,seconds\na.jpg,1\n", "columns file and exposure_time"),
])
def test_sidecar_errors_name_the_file(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(stacks.StackError, match=message) as info:
        stacks.read_sidecar(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    assert str(tmp_path / name) in str(info.value)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
def test_exif_exposure_time(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    bracketed.save(path, np.full((8, 8, 3), 128, np.uint8), 1 / 30)
    seconds, where = stacks.metadata_time(path, "srgb")
    assert seconds == pytest.approx(1 / 30) and where == "EXIF"
    bracketed.save(path, np.full((8, 8, 3), 128, np.uint8))
    assert stacks.metadata_time(path, "srgb") == (None, "")


def test_raw_exposure_time(tmp_path, make_dng):
    path = tmp_path / "x.dng"
    make_dng(path, np.full((64, 64, 3), 0.2), exposure_time=1 / 4)
    seconds, where = stacks.metadata_time(path, "raw")
    assert seconds == pytest.approx(0.25) and where == "raw metadata"


# --- registration --------------------------------------------------------------------------------


@pytest.mark.parametrize("photo", ["astronaut", "coffee"])
@pytest.mark.parametrize("motion", MOTIONS)
@pytest.mark.parametrize("ev", [-2.0, 2.0])
def test_registration_recovers_a_known_warp_within_a_pixel(photo, motion, ev):
    """A real photo in linear light, exposed at EV 0 (the template) and at `ev`, the latter rotated by
    1.5° and shifted by (4.3, -3.6) px (shifted only for `translation`): ECC on exposure-normalised
    greys finds the warp; the image corners land within one pixel of where the known warp puts them."""
    linear = bracketed.radiance(photo, 256)
    key = float(np.exp(np.mean(np.log(1e-4 + linear @ [0.2126, 0.7152, 0.0722]))))
    template = bracketed.expose(linear, 1.0, 0.18 / key)
    known = bracketed.known_warp(template.shape, 0.0 if motion == "translation" else 1.5, (4.3, -3.6))
    moved = bracketed.misalign(bracketed.expose(linear, 2.0**ev, 0.18 / key), known)
    to_float = lambda x: x.astype(np.float32) / 255.0  # noqa: E731
    before = register.align(to_float(template), to_float(moved), "none")
    fit = register.align(to_float(template), to_float(moved), motion, max_shift=0.05 * 256)
    assert corner_error(fit.warp, known, template.shape) < 1.0, (fit.warp, fit.note)
    assert fit.ecc > max(0.9, before.ecc + 0.1), (fit.ecc, before.ecc)


def test_registration_of_an_aligned_pair_is_the_identity():
    linear = bracketed.radiance("chelsea", 200)
    image = bracketed.expose(linear, 1.0, 2.0).astype(np.float32) / 255.0
    fit = register.align(image, image, "affine")
    assert corner_error(fit.warp, np.eye(3), image.shape) < 0.01 and fit.ecc == pytest.approx(1.0)
    np.testing.assert_array_equal(register.warp_image(image, np.eye(3), image.shape), image)


def test_crop_margin_covers_every_warp():
    shape = (120, 160)
    warps = [bracketed.known_warp(shape, 2.0, (3.0, -1.0)), bracketed.known_warp(shape, -1.0, (-2.0, 2.5))]
    margin = register.crop_margin(warps, shape) + 1  # (+1: the slack may reach 0.1 px outside)
    ys, xs = np.mgrid[margin : shape[0] - margin, margin : shape[1] - margin]
    inner = np.c_[xs.ravel(), ys.ravel()].astype(float)
    for warp in warps:
        mapped = register.warp_points(warp, inner)
        assert mapped.min() >= 0 and (mapped[:, 0] <= shape[1] - 1).all() and (mapped[:, 1] <= shape[0] - 1).all()
    assert register.crop_margin([np.eye(3), bracketed.known_warp(shape, 0.0, (0.05, 0.0))], shape) == 0


# --- download + render + split -------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_evs_from_exposure_times_and_registration_in_the_pipeline(workdir, base):
    """Three scenes with times in EXIF (PNG), exposures.txt (JPEG) and exposures.csv (TIFF); scene a has two
    exposures misaligned by known warps. EVs are log2 of the exposure-time ratio to the exposure nearest
    mid-grey; the warps are recovered within a pixel; the registered inputs match the unmoved exposures."""
    shape = (256, 256)
    warps = {0: bracketed.known_warp(shape, 1.5, (4.2, -3.1)), 4: bracketed.known_warp(shape, -1.0, (-2.5, 2.0))}
    scenes = {"a": bracketed.write_stack(workdir / "src/a", "astronaut", warps=warps),
              "b": bracketed.write_stack(workdir / "src/b", "coffee", times_in="txt", suffix=".jpg"),
              "c": bracketed.write_stack(workdir / "src/c", "rocket", times_in="csv", suffix=".tif")}
    run_stages(stack_params(base, workdir / "src"), "download", "render", "split")

    index = read_csv(download.INDEX)
    assert [(r["scene"], r["kind"]) for r in index] == [("a", "stack"), ("b", "stack"), ("c", "stack")]
    sources = {s: {e["time_from"] for e in stacks.read_listing(download.FILES / s / "stack.json")["exposures"]}
               for s in scenes}
    assert sources == {"a": {"EXIF"}, "b": {"sidecar"}, "c": {"sidecar"}}

    rows = manifest()
    assert {r["source"] for r in rows} == {"stack"} and len(rows) == 15
    for scene, built in scenes.items():
        mine = [r for r in rows if r["scene"] == scene]
        anchor = transforms(scene)["reference_exposure"]
        t0 = built["times"][int(anchor.removeprefix("exp").split(".")[0])]
        assert sorted(float(r["ev"]) for r in mine) == sorted(math.log2(t / t0) for t in built["times"])
        assert {float(r["exposure_time"]) for r in mine} == set(built["times"])
        assert {r["stack"] for r in mine} == {f"data/rendered/images/{scene}/stack.json"}
        reference = read_rgb(mine[0]["reference"])
        assert all(read_rgb(r["input"]).shape == reference.shape for r in mine)
        assert [t for _, t in stacks.read_stack(mine[0]["stack"])] == sorted(built["times"])
        # The reference exposure is the one whose log-average luminance is nearest mid-grey.
        downloaded = sorted(stacks.read_listing(download.FILES / scene / "stack.json")["exposures"],
                            key=lambda e: e["exposure_time"])
        nearest = render_stacks.reference_exposure([read_rgb(e["path"]) for e in downloaded])
        assert anchor == downloaded[nearest]["file"]

    info = transforms("a")
    assert info["reference_exposure"] not in ("exp0.png", "exp4.png")  # the warped ones are not the template
    margin = info["crop_margin"]
    assert 1 <= margin <= 12
    linear, gain = scenes["a"]["radiance"], scenes["a"]["gain"]
    for i, known in warps.items():
        pair = next(p for p in info["pairs"] if p["file"] == f"exp{i}.png")
        assert pair["kept"] and corner_error(np.array(pair["warp"]), known, shape) < 1.0, pair
        registered = read_rgb(f"data/rendered/images/a/{render.ev_name(pair['ev'])}.png")
        unmoved = bracketed.expose(linear, scenes["a"]["times"][i], gain)[margin:-margin, margin:-margin]
        assert registered.shape == unmoved.shape
        assert psnr(to_uint8(registered), unmoved) > 30
    table = read_csv(render.REGISTRATION)
    assert len(table) == 15 and all(r["kept"] == "True" for r in table)
    assert {r["motion"] for r in table} == {"euclidean"}

    for name in ("train", "val", "test"):  # splits keep whole scenes and the stack columns
        part = read_csv(split.OUT / f"{name}.csv")
        assert len({r["scene"] for r in part}) == 1 and len(part) == 5
        assert {"stack", "exposure_time", "augment"} <= set(part[0])


def test_low_correlation_pair_is_dropped_and_listed(workdir, base):
    """One 'exposure' of the stack is another photo: its ECC correlation stays low; it is dropped from
    the manifest and the stack listing, and listed with its reason in registration.csv."""
    built = bracketed.write_stack(workdir / "src/a", "astronaut")
    other = cv2.resize(bracketed.radiance("coffee", 256), (256, 256), interpolation=cv2.INTER_AREA)
    bracketed.save(workdir / "src/a/exp1.png", bracketed.expose(other, built["times"][1], built["gain"]),
                   built["times"][1])
    run_stages(stack_params(base, workdir / "src"), "download", "render")
    table = {r["file"]: r for r in read_csv(render.REGISTRATION)}
    assert table["exp1.png"]["kept"] == "False"
    assert float(table["exp1.png"]["ecc"]) < 0.8
    assert "below render.stacks.register.threshold 0.8" in table["exp1.png"]["reason"]
    assert all(r["kept"] == "True" for f, r in table.items() if f != "exp1.png")
    rows = manifest()
    assert len(rows) == 4 and 0.25 not in {float(r["exposure_time"]) for r in rows}
    listed = [e["source"] for e in stacks.read_listing(rows[0]["stack"])["exposures"]]
    assert "exp1.png" not in listed and len(listed) == 4


def test_registration_threshold_and_motion_none(workdir, base):
    """`motion: none` keeps every warp the identity (a misaligned exposure then correlates poorly and is
    dropped); `threshold: -1` keeps every pair."""
    shape = (256, 256)
    bracketed.write_stack(workdir / "src/a", "astronaut", warps={0: bracketed.known_warp(shape, 2.0, (6.0, 4.0))})
    run_stages(stack_params(base, workdir / "src", register={"motion": "none"}), "download", "render")
    table = {r["file"]: r for r in read_csv(render.REGISTRATION)}
    assert all(json.loads(r["warp"]) == np.eye(3).tolist() for r in table.values())
    assert table["exp0.png"]["kept"] == "False"
    run_stages(stack_params(base, workdir / "src", register={"motion": "none", "threshold": -1}), "render")
    assert len(manifest()) == 5


@pytest.mark.parametrize("mode", ["nearest_mid_grey", "mertens", "debevec_reinhard", "provided"])
def test_reference_choices(workdir, base, mode):
    bracketed.write_stack(workdir / "src/a", "chelsea", side=200, reference=mode == "provided")
    run_stages(stack_params(base, workdir / "src", reference=mode), "download", "render")
    rows = manifest()
    reference = to_uint8(read_rgb(rows[0]["reference"]))
    stack = stacks.read_stack(rows[0]["stack"])
    if mode == "nearest_mid_grey":  # the reference exposure itself: its input row is an identical pair
        anchor = next(r for r in rows if float(r["ev"]) == 0.0)
        np.testing.assert_array_equal(to_uint8(read_rgb(anchor["input"])), reference)
    elif mode == "mertens":  # (OpenCV's fusion may differ by one code level between runs)
        fused = to_uint8(fusion.fuse_stack([x for x, _ in stack])).astype(int)
        assert np.abs(fused - reference).max() <= 1
    elif mode == "debevec_reinhard":
        ctx = {"ev": None, "render": base["render"], "stack": stack}
        np.testing.assert_array_equal(to_uint8(BASELINES["debevec_reinhard"].fn(stack[0][0], ctx)), reference)
    else:  # provided, aligned exposures: no crop, the render as given
        np.testing.assert_array_equal(reference, to_uint8(read_rgb(workdir / "src/a/reference.png")))
        assert {r["template"] for r in read_csv(render.REGISTRATION)} == {"reference"}
    assert transforms("a")["reference"] == mode


def test_provided_reference_falls_back_or_skips(workdir, base):
    bracketed.write_stack(workdir / "src/with", "astronaut", side=128, reference=True)
    bracketed.write_stack(workdir / "src/without", "coffee", side=128)
    run_stages(stack_params(base, workdir / "src", reference="provided", fallback="nearest_mid_grey"),
               "download", "render")
    assert {(r["scene"]) for r in manifest()} == {"with", "without"}
    assert transforms("without")["reference"] == "nearest_mid_grey"
    assert transforms("with")["reference"] == "provided"
    run_stages(stack_params(base, workdir / "src", reference="provided", fallback=None), "render")
    assert {r["scene"] for r in manifest()} == {"with"}  # the scene without a reference is skipped


def test_augmented_copies_after_registration(workdir, base):
    bracketed.write_stack(workdir / "src/a", "astronaut", side=160)
    cfg = {"copies": 2, "crop": 0.75, "flip": True, "rotate": True, "seed": 3}
    p = stack_params(base, workdir / "src", augment=cfg)
    run_stages(p, "download", "render")
    rows = manifest()
    assert sorted({int(r["augment"]) for r in rows}) == [0, 1, 2] and len(rows) == 15
    originals = {float(r["ev"]): r for r in rows if r["augment"] == "0"}
    for copy_ in (1, 2):
        mine = [r for r in rows if r["augment"] == str(copy_)]
        assert {r["stack"] for r in mine} == {f"data/rendered/images/a/aug{copy_}/stack.json"}
        base = read_rgb(originals[0.0]["input"])
        apply = render_stacks.augment_transform("a", copy_, base.shape, cfg)
        for r in mine:  # every image of the copy gets the same crop, flip and rotation
            np.testing.assert_array_equal(read_rgb(r["input"]), apply(read_rgb(originals[float(r["ev"])]["input"])))
        np.testing.assert_array_equal(read_rgb(mine[0]["reference"]), apply(read_rgb(originals[0.0]["reference"])))
        assert sorted(read_rgb(mine[0]["input"]).shape[:2]) == [round(0.75 * base.shape[0])] * 2


def test_scene_without_exposure_times_is_skipped_and_named(workdir, base):
    bracketed.write_stack(workdir / "src/timed", "astronaut", side=128)
    bracketed.write_stack(workdir / "src/untimed", "coffee", side=128, times_in="none")
    run_stages(stack_params(base, workdir / "src"), "download")
    assert [r["scene"] for r in read_csv(download.INDEX)] == ["timed"]
    skipped = read_csv(download.SKIPPED)
    assert skipped[0]["path"].endswith("untimed") and "no exposure time for exp0.png" in skipped[0]["reason"]
    assert "exposures.txt" in skipped[0]["reason"] and "EXIF ExposureTime" in skipped[0]["reason"]
    shutil.rmtree(workdir / "src/timed")
    with pytest.raises(stacks.StackError, match="no usable exposure stack") as info:
        run_stages(stack_params(base, workdir / "src"), "download")
    assert "untimed: no exposure time" in str(info.value) and "exposures.csv" in str(info.value)


def test_fairchild_layout_with_raw_exposures(workdir, base, make_dng):
    """The preset's layout: NEF-like camera raw exposures (here DNGs recording their ExposureTime) and one
    JPEG render named after the scene folder, which becomes the reference."""
    linear = bracketed.radiance("astronaut", 128)
    folder = workdir / "src/Scene1"
    times = [1 / 16, 1 / 8, 1 / 4]
    for i, t in enumerate(times):
        make_dng(folder / f"Scene1_{i}.dng", np.clip(linear * t * 4, 0, 1), exposure_time=t)
    bracketed.save(folder / "Scene1.jpg", bracketed.expose(linear, 1 / 8, 4))
    p = stack_params(base, workdir / "src", register={"threshold": 0.5})
    p["data"]["stacks"]["preset"] = "fairchild"
    run_stages(p, "download", "render")
    listing = stacks.read_listing(download.FILES / "Scene1/stack.json")
    assert listing["reference"] == "Scene1.jpg"
    assert [(e["kind"], e["time_from"]) for e in listing["exposures"]] == [("raw", "raw metadata")] * 3
    rows = manifest()
    assert len(rows) == 3 and {float(r["exposure_time"]) for r in rows} == set(times)
    assert transforms("Scene1")["reference"] == "provided"
    assert read_rgb(rows[0]["reference"]).shape == read_rgb(rows[0]["input"]).shape


def test_stacks_from_an_archive_by_url(workdir, base, http_server):
    bracketed.write_stack(workdir / "src/Scene A", "astronaut", side=96)
    archive = http_server.root / "stacks.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((workdir / "src").rglob("*")):
            zf.write(path, Path("bundle") / path.relative_to(workdir / "src"))
    p = stack_params(base)
    p["data"].update(url=http_server.url("stacks.zip"), sha256=hashlib.sha256(archive.read_bytes()).hexdigest())
    run_stages(params.validate(p), "download", "render")
    assert [r["scene"] for r in read_csv(download.INDEX)] == ["bundle__Scene_A"]
    assert len(manifest()) == 5


def test_fairchild_preset_reads_the_survey_raw_zip(workdir, base, http_server, monkeypatch, make_dng):
    """The survey's HDRPS_Raws.zip layout (HDRPS_Raws/<Scene>/*.NEF, no renders), fetched by the preset over
    HTTP. The real zip is over 4 GiB without ZIP64 records; the offset limit is lowered to 32 KiB so a
    small archive wraps the same way. Scenes without a render get the fallback reference (Mertens)."""
    monkeypatch.setattr("expocorr.sources.archives.ZIP_WRAP", 1 << 15)
    linear = bracketed.radiance("astronaut", 96)
    times = [1 / 16, 1 / 8, 1 / 4]
    tree = workdir / "zipped"
    for scene in ("Peppermill", "WaffleHouse"):
        for i, t in enumerate(times):
            make_dng(tree / "HDRPS_Raws" / scene / f"DSC_{i:04d}.dng", np.clip(linear * t * 4, 0, 1), exposure_time=t)
    with zipfile.ZipFile(tree / "plain.zip", "w", zipfile.ZIP_STORED) as zf:
        for path in sorted((tree / "HDRPS_Raws").rglob("*.dng")):
            zf.write(path, path.relative_to(tree))
    data = wrap_offsets((tree / "plain.zip").read_bytes(), 1 << 15)
    assert len(data) > 3 * (1 << 15)
    (http_server.root / "HDRPS_Raws.zip").write_bytes(data)
    p = stack_params(base, register={"threshold": 0.5})
    p["data"]["stacks"].update(preset="fairchild", fairchild={"url": http_server.url("HDRPS_Raws.zip"),
                                                              "sha256": hashlib.sha256(data).hexdigest()})
    run_stages(params.validate(p), "download", "render")
    scenes = [r["scene"] for r in read_csv(download.INDEX)]
    assert scenes == ["HDRPS_Raws__Peppermill", "HDRPS_Raws__WaffleHouse"]
    for scene in scenes:
        assert [e["exposure_time"] for e in stacks.read_listing(download.FILES / scene / "stack.json")["exposures"]] == times
        assert transforms(scene)["reference"] == "mertens"
    assert len(manifest()) == 6


def test_fairchild_page_instead_of_an_archive_is_a_clear_error(workdir, base, http_server):
    (http_server.root / "HDR.html").write_text("<!DOCTYPE html><html><body>HDR Photographic Survey</body></html>")
    p = stack_params(base)
    p["data"]["stacks"].update(preset="fairchild", fairchild={"url": http_server.url("HDR.html"), "sha256": None})
    with pytest.raises(stacks.StackError, match="got an HTML page, not a zip or tar archive") as info:
        run_stages(params.validate(p), "download")
    assert "HDRPS_Raws.zip" in str(info.value) and "data.folder" in str(info.value)


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["data"].update(source="stacks"), "data.folder: required when data.source is 'stacks'"),
    (lambda p: p["data"].update(source="stacks", url="https://example.org/s.zip"), "data.sha256: required"),
    (lambda p: p["render"]["stacks"]["register"].update(motion="rigid"), "render.stacks.register.motion: 'rigid'"),
    (lambda p: p["render"]["stacks"]["register"].update(threshold=1.5), "render.stacks.register.threshold: 1.5"),
    (lambda p: p["render"]["stacks"].update(reference="hdr"), "render.stacks.reference: 'hdr' is not allowed"),
    (lambda p: p["render"]["stacks"]["augment"].update(crop=0), "render.stacks.augment.crop: 0 is out of range"),
    (lambda p: p["data"]["stacks"].update(preset="msec"), "data.stacks.preset: 'msec' is not allowed"),
])
def test_stack_params_are_validated(base, edit, message):
    p = copy.deepcopy(base)
    edit(p)
    with pytest.raises(params.ParamsError) as info:
        params.validate(p)
    assert message in str(info.value)


# --- the real brackets in ../shared/data/stacks --------------------------------------------------


def shared(name: str) -> Path:
    folder = SHARED_STACKS / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")
    return folder


@pytest.mark.shared_data
def test_frobisher_exif_times_and_registration(workdir, base):
    """A real tripod bracket with EXIF exposure times 1/8, 1 and 8 s: EVs 3 stops apart, every pair kept
    with a warp below a pixel, Mertens reference (the scene has none)."""
    run_stages(stack_params(base, shared("frobisher")), "download", "render")
    listing = stacks.read_listing(download.FILES / "frobisher/stack.json")
    assert [(e["exposure_time"], e["time_from"]) for e in listing["exposures"]] == [
        (0.125, "EXIF"), (1.0, "EXIF"), (8.0, "EXIF")]
    evs = sorted(float(r["ev"]) for r in manifest())
    assert np.diff(evs).tolist() == [3.0, 3.0] and 0.0 in evs
    for row in read_csv(render.REGISTRATION):
        assert row["kept"] == "True" and float(row["ecc"]) > 0.95 and float(row["corner_shift_px"]) < 1.0, row
    assert transforms("frobisher")["reference"] == "mertens"


@pytest.mark.shared_data
def test_mertens_house_without_times_is_a_clear_error_then_works_with_a_sidecar(workdir, base):
    """No exposure times anywhere: the download stops naming the scene and the accepted forms. With a
    sidecar of times only (one stop apart: an assumption, the real times are not published) the scene
    renders; its darkest frame registers through its neighbour."""
    house = shared("mertens_house")
    with pytest.raises(stacks.StackError) as info:
        run_stages(stack_params(base, house), "download")
    message = str(info.value)
    assert "mertens_house" in message and "no exposure time for A.jpg, B.jpg, C.jpg, D.jpg" in message
    assert "exposures.txt" in message and "exposures.csv" in message and "EXIF ExposureTime" in message

    copy_ = workdir / "mertens_house"
    shutil.copytree(house, copy_)
    (copy_ / "exposures.txt").write_text("1/8\n1/4\n1/2\n1\n")
    run_stages(stack_params(base, copy_, reference="mertens"), "download", "render")
    table = read_csv(render.REGISTRATION)
    assert [r["file"] for r in table] == ["A.jpg", "B.jpg", "C.jpg", "D.jpg"]
    assert all(r["kept"] == "True" for r in table), table
    assert next(r for r in table if r["file"] == "A.jpg")["template"] == "B.jpg"
    evs = sorted(float(r["ev"]) for r in manifest())
    assert np.diff(evs).tolist() == [1.0, 1.0, 1.0] and 0.0 in evs


# --- the stack baselines in the evaluate stage ---------------------------------------------------


@pytest.mark.slow
def test_stack_baselines_are_scored_against_the_reference(workdir, base):
    """evaluate passes each scene's registered stack (real exposure times) to the baselines: with
    Debevec + Reinhard references, the debevec_reinhard baseline reproduces the reference exactly
    (PSNR at the cap) on every input; mertens fuses the same stack (one output per scene)."""
    for name in ("astronaut", "coffee", "chelsea"):
        bracketed.write_stack(workdir / "src" / name, name, side=128)
    p = stack_params(base, workdir / "src", reference="debevec_reinhard")
    p["evaluate"]["noref"]["brisque"] = False
    (workdir / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    for cmd in (["download"], ["render"], ["split"], ["evaluate", "--method", "debevec_reinhard"],
                ["evaluate", "--method", "mertens"], ["evaluate", "--method", "identity"]):
        proc = subprocess.run([str(EXPOCORR), *cmd], cwd=workdir, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    test_rows = read_csv(split.OUT / "test.csv")
    summaries = {m: json.loads((workdir / "metrics" / "details" / f"{m}.json").read_text())
                 for m in ("debevec_reinhard", "mertens", "identity")}  # counts and examples: the details
    for summary in summaries.values():
        assert summary["n_images"] == len(test_rows) == 5 and summary["headline_reference"] == "reference"
    per_image = read_csv(workdir / "metrics/debevec_reinhard_per_image.csv")
    assert all(float(r["psnr"]) > 60 for r in per_image)  # the cap, unless OpenCV rounds differently
    mertens = read_csv(workdir / "metrics/mertens_per_image.csv")
    assert len({r["psnr"] for r in mertens}) == 1  # one output per scene, scored against its one reference
    assert float(mertens[0]["psnr"]) < p["evaluate"]["psnr_cap"]
    example = summaries["mertens"]["examples"][0]
    stack = stacks.read_stack(test_rows[0]["stack"])
    fused = to_uint8(fusion.fuse_stack([x for x, _ in stack])).astype(int)
    assert np.abs(to_uint8(read_rgb(workdir / example["output"])).astype(int) - fused).max() <= 1


def test_mertens_uses_a_real_stack_when_given():
    linear = bracketed.radiance("coffee", 96)
    stack = [(bracketed.expose(linear, t, 4.0).astype(np.float32) / 255.0, t) for t in (1 / 8, 1 / 2, 2)]
    ctx = {"ev": 0.0, "render": {"curve": "srgb", "gamma": 2.2}}
    fused = BASELINES["mertens"].fn(stack[1][0], dict(ctx, stack=stack))
    # (OpenCV's fusion is not bit-reproducible across calls: compare to within one 8-bit level)
    np.testing.assert_allclose(fused, fusion.fuse_stack([x for x, _ in stack]), atol=1 / 255)
    single = BASELINES["mertens"].fn(stack[1][0], ctx)  # the single-image path otherwise
    assert np.abs(fused - single).mean() > 0.01
    with pytest.raises(BaselineError, match="mertens: stack images have shapes"):
        BASELINES["mertens"].fn(stack[1][0][:50], dict(ctx, stack=stack))

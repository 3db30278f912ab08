"""Stage `download`: every data.source, pooch fetching over a loopback server, skipped files."""

from __future__ import annotations

import copy
import json
import hashlib
import io
import logging
import os
import re
import socket
import tarfile
import zipfile
from importlib import resources
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
import rawpy

from expocorr import params
from expocorr.sources import bundled, datasets
from expocorr.sources import files as source_files
from expocorr.sources import url as url_source
from expocorr.stages import download
from expocorr.sources.archives import ArchiveError
from expocorr.tables import read_csv

INDEX_HEADER = "scene,kind,path,split,ev,reference," + ",".join(f"reference_expert_{e}" for e in "abcde") + \
    ",exposure,protocol"
EMPTY = {"split": "", "ev": "", "reference": ""} | {f"reference_expert_{e}": "" for e in "abcde"} | \
    {"exposure": "", "protocol": ""}
SKIMAGE_PHOTOS = {"astronaut": "data/astronaut.png", "chelsea": "data/chelsea.png", "coffee": "data/coffee.png"}


# ----------------------------------------------------------------------------- helpers


def photo(name: str = "astronaut", size: int = 48, top: int = 0, left: int = 0) -> np.ndarray:
    """A square crop (uint8 RGB) of a real colour photo bundled with scikit-image."""
    data = np.frombuffer(resources.files("skimage").joinpath(SKIMAGE_PHOTOS[name]).read_bytes(), np.uint8)
    rgb = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb[top : top + size, left : left + size])


def encode(rgb: np.ndarray, suffix: str) -> bytes:
    ok, buf = cv2.imencode(suffix.lower(), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok, suffix
    return buf.tobytes()


def write_image(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(rgb, path.suffix))
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_tar(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` (hidden ones included) -> file bytes, None for folders."""
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))
    }


def index_rows() -> list[dict]:
    assert download.INDEX.read_text().splitlines()[0] == INDEX_HEADER
    return read_csv(download.INDEX)


def skipped_rows() -> list[dict]:
    assert download.SKIPPED.read_text().splitlines()[0] == "path,reason"
    return read_csv(download.SKIPPED)


def files_listing() -> list[str]:
    return sorted(p.relative_to(download.FILES).as_posix() for p in download.FILES.rglob("*") if p.is_file())


def srgb_row(scene: str, suffix: str, kind: str = "srgb") -> dict:
    return {"scene": scene, "kind": kind, "path": f"data/downloads/files/{scene}{suffix}"} | EMPTY



@pytest.fixture(scope="module")
def data_validator():
    """The schema of the `data` section (other sections are not this stage's business)."""
    schema = params.schema()
    return jsonschema.Draft202012Validator({"$defs": schema.get("$defs", {})} | schema["properties"]["data"])


@pytest.fixture
def make_params(base, data_validator):
    """The repository's params.yaml with `data` keys changed in memory; `data` checked against the schema."""

    def make(**data) -> dict:
        p = copy.deepcopy(base)
        p["data"].update(data)
        data_validator.validate(p["data"])
        return p

    return make


@pytest.fixture
def no_retries(monkeypatch):
    monkeypatch.setattr(url_source, "DOWNLOAD_RETRIES", 0)


@pytest.fixture
def warnings_log(caplog):
    caplog.set_level(logging.WARNING, logger="expocorr")  # the stage and its sources (expocorr.sources.*)
    return caplog


def warned(caplog, text: str) -> bool:
    return any(
        r.levelno == logging.WARNING and r.name.startswith("expocorr.") and text in r.getMessage()
        for r in caplog.records
    )


# ----------------------------------------------------------------------------- scene ids


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("IMG_0001.JPG", "IMG_0001"),
        ("trip/day 1/IMG 0001.jpg", "trip__day_1__IMG_0001"),
        ("été/photo.jpeg", "t___photo"),
        ("_.hidden-looking.jpg", "hidden-looking"),
        ("???.png", "scene"),
    ],
)
def test_scene_id_is_file_system_safe(relative, expected):
    assert source_files.scene_id(Path(relative)) == expected


# ----------------------------------------------------------------------------- fetch (pooch)


def test_fetch_downloads_verifies_and_caches(http_server, tmp_path, no_retries):
    data = make_zip({"a.txt": b"hello " * 1000})
    (http_server.root / "photos.zip").write_bytes(data)
    url = http_server.url("photos.zip")
    cache = tmp_path / "cache"

    path = url_source.fetch(url, sha256(data).upper(), cache)  # upper-case hex is accepted too

    assert path.parent == cache
    assert path.name.endswith("-photos.zip")
    assert path.read_bytes() == data
    assert sorted(os.listdir(cache)) == [path.name]
    assert http_server.requests == ["/photos.zip"]

    again = url_source.fetch(url, sha256(data), cache)
    assert again == path
    assert http_server.requests == ["/photos.zip"]  # served from the cache, not downloaded again


def test_fetch_urls_with_the_same_file_name_do_not_share_a_cache_file(http_server, tmp_path, no_retries):
    one, two = make_zip({"one.txt": b"1"}), make_zip({"two.txt": b"2"})
    for folder, data in (("x", one), ("y", two)):
        (http_server.root / folder).mkdir()
        (http_server.root / folder / "photos.zip").write_bytes(data)
    cache = tmp_path / "cache"
    a = url_source.fetch(http_server.url("x/photos.zip"), sha256(one), cache)
    b = url_source.fetch(http_server.url("y/photos.zip"), sha256(two), cache)
    assert a != b
    assert (a.read_bytes(), b.read_bytes()) == (one, two)


def test_fetch_wrong_sha256_raises_and_leaves_no_file(http_server, tmp_path, no_retries):
    (http_server.root / "photos.zip").write_bytes(make_zip({"a.txt": b"a"}))
    url = http_server.url("photos.zip")
    cache = tmp_path / "cache"
    with pytest.raises(download.DownloadError) as err:
        url_source.fetch(url, "0" * 64, cache)
    assert str(err.value).startswith(f"{url}: ")
    assert "0" * 64 in str(err.value)  # the expected hash is quoted
    assert os.listdir(cache) == []  # neither the file nor pooch's temporary file
    assert http_server.requests == ["/photos.zip"]


def test_fetch_without_sha256_logs_the_hash_to_pin(http_server, tmp_path, no_retries, warnings_log):
    data = make_zip({"a.txt": b"a"})
    (http_server.root / "photos.zip").write_bytes(data)
    url = http_server.url("photos.zip")
    path = url_source.fetch(url, None, tmp_path / "cache")
    assert path.read_bytes() == data
    assert warned(warnings_log, url) and warned(warnings_log, sha256(data))


def test_fetch_404_raises_naming_the_url(http_server, tmp_path, no_retries):
    url = http_server.url("missing.zip")
    cache = tmp_path / "cache"
    with pytest.raises(download.DownloadError) as err:
        url_source.fetch(url, "0" * 64, cache)
    assert str(err.value).startswith(f"{url}: download failed: ")
    assert "404" in str(err.value)
    assert os.listdir(cache) == []


def test_fetch_retries_a_failed_download(http_server, tmp_path, monkeypatch):
    monkeypatch.setattr(url_source, "DOWNLOAD_RETRIES", 1)  # pooch waits 1 s before the retry
    with pytest.raises(download.DownloadError, match="missing.zip"):
        url_source.fetch(http_server.url("missing.zip"), "0" * 64, tmp_path / "cache")
    assert http_server.requests == ["/missing.zip", "/missing.zip"]


def test_fetch_connection_refused_names_the_url(tmp_path, no_retries, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/photos.zip"
    with pytest.raises(download.DownloadError) as err:
        url_source.fetch(url, "0" * 64, tmp_path / "cache")
    assert str(err.value).startswith(f"{url}: download failed: ")
    assert os.listdir(tmp_path / "cache") == []


def test_fetch_file_url(tmp_path, no_retries):
    """params.schema.yaml allows file:// URLs; pooch has no downloader for them."""
    data = make_zip({"a.txt": b"a"})
    source = tmp_path / "my photos.zip"
    source.write_bytes(data)
    cache = tmp_path / "cache"
    path = url_source.fetch(source.as_uri(), sha256(data), cache)
    assert path.read_bytes() == data
    with pytest.raises(download.DownloadError, match="0{64}"):
        url_source.fetch(source.as_uri(), "0" * 64, tmp_path / "other")
    assert os.listdir(tmp_path / "other") == []
    missing = (tmp_path / "missing.zip").as_uri()
    with pytest.raises(download.DownloadError, match=f"^{missing}: download failed"):
        url_source.fetch(missing, None, cache)


def test_fetch_unsupported_scheme(tmp_path):
    with pytest.raises(download.DownloadError, match=r"^gopher://host/a\.zip: unsupported URL scheme 'gopher'"):
        url_source.fetch("gopher://host/a.zip", None, tmp_path / "cache")
    with pytest.raises(download.DownloadError, match=r"^file://server/a\.zip: file URLs on another host"):
        url_source.fetch("file://server/a.zip", None, tmp_path / "cache")


# ----------------------------------------------------------------------------- source: bundled


def test_bundled_gives_the_eight_package_photos_byte_identical(repo, make_params):
    download.run(make_params(source="bundled"))

    expected = []
    for scene, package, resource in bundled.BUNDLED:
        source = resources.files(package).joinpath(resource)
        assert source.is_file(), f"{package}:{resource} is not installed"
        expected.append(srgb_row(scene, Path(resource).suffix))
        assert (download.FILES / f"{scene}{Path(resource).suffix}").read_bytes() == source.read_bytes()
    assert len(expected) == 8
    assert index_rows() == expected
    assert skipped_rows() == []
    assert files_listing() == sorted(Path(r["path"]).name for r in expected)
    assert sorted(p.name for p in download.OUT.iterdir()) == ["files", "index.csv", "skipped.csv", "weights"]  # no temporaries


def test_bundled_skips_a_photo_whose_package_file_is_missing(repo, make_params, monkeypatch):
    monkeypatch.setattr(
        bundled, "BUNDLED", [("astronaut", "skimage", "data/astronaut.png"), ("gone", "skimage", "data/no-such.png")]
    )
    download.run(make_params(source="bundled"))
    assert index_rows() == [srgb_row("astronaut", ".png")]
    assert files_listing() == ["astronaut.png"]


def test_a_new_run_replaces_the_previous_download(repo, make_params, tmp_path):
    download.run(make_params(source="bundled"))
    src = tmp_path / "photos"
    write_image(src / "one.jpg", photo("coffee"))
    download.run(make_params(source="folder", folder=str(src)))
    assert index_rows() == [srgb_row("one", ".jpg")]
    assert files_listing() == ["one.jpg"]  # nothing left of the bundled run
    assert sorted(p.name for p in download.OUT.iterdir()) == ["files", "index.csv", "skipped.csv", "weights"]


# ----------------------------------------------------------------------------- source: folder


def test_folder_nested_photos_with_the_same_name_get_distinct_scenes(repo, make_params, tmp_path):
    src = tmp_path / "photos"
    trip = write_image(src / "trip" / "IMG_0001.jpg", photo("astronaut"))
    home = write_image(src / "home" / "IMG_0001.jpg", photo("chelsea"))
    top = write_image(src / "top.png", photo("coffee"))

    download.run(make_params(source="folder", folder=str(src)))

    assert index_rows() == [
        srgb_row("home__IMG_0001", ".jpg"),
        srgb_row("top", ".png"),
        srgb_row("trip__IMG_0001", ".jpg"),
    ]
    assert download.FILES.joinpath("home__IMG_0001.jpg").read_bytes() == home.read_bytes()
    assert download.FILES.joinpath("trip__IMG_0001.jpg").read_bytes() == trip.read_bytes()
    assert download.FILES.joinpath("top.png").read_bytes() == top.read_bytes()
    assert skipped_rows() == []


def test_folder_paths_that_sanitise_to_the_same_scene_stay_distinct(repo, make_params, tmp_path):
    """`a/b.jpg` and `a__b.jpg`, `x.PNG` and `x.jpg`: each photo keeps its own scene and file."""
    src = tmp_path / "photos"
    sources = {
        "a/b.jpg": write_image(src / "a" / "b.jpg", photo("astronaut")),
        "a__b.jpg": write_image(src / "a__b.jpg", photo("chelsea")),
        "x.PNG": write_image(src / "x.PNG", photo("coffee")),
        "x.jpg": write_image(src / "x.jpg", photo("astronaut", top=100)),
        "y z.jpg": write_image(src / "y z.jpg", photo("chelsea", top=100)),
        "y_z.jpg": write_image(src / "y_z.jpg", photo("coffee", top=100)),
    }

    download.run(make_params(source="folder", folder=str(src)))

    rows = index_rows()
    assert rows == [
        srgb_row("a__b", ".jpg"),
        srgb_row("a__b-2", ".jpg"),
        srgb_row("x", ".png"),
        srgb_row("x-2", ".jpg"),
        srgb_row("y_z", ".jpg"),
        srgb_row("y_z-2", ".jpg"),
    ]
    order = ["a/b.jpg", "a__b.jpg", "x.PNG", "x.jpg", "y z.jpg", "y_z.jpg"]  # sorted source order
    for row, name in zip(rows, order):
        assert Path(row["path"]).read_bytes() == sources[name].read_bytes(), name
    assert len(files_listing()) == 6


def test_folder_skips_broken_files_and_keeps_16_bit_photos(repo, make_params, tmp_path, warnings_log):
    src = tmp_path / "photos"
    good = write_image(src / "good.jpg", photo("astronaut"))
    jpeg = encode(photo("chelsea", size=200), ".jpg")
    (src / "broken").mkdir()
    truncated = src / "broken" / "truncated.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    empty = src / "broken" / "empty.jpg"
    empty.write_bytes(b"")
    text = src / "broken" / "notes.jpg"
    text.write_text("these are my holiday notes, not a photo\n")
    deep = (photo("coffee").astype(np.uint16) * 257) ^ np.uint16(0x00A5)  # uses the low byte too
    png16 = write_image(src / "deep" / "png16.png", deep)
    tif16 = write_image(src / "deep" / "tif16.tif", deep)
    for path in (png16, tif16):  # the fixtures really are 16-bit
        assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16

    download.run(make_params(source="folder", folder=str(src)))

    assert index_rows() == [
        srgb_row("deep__png16", ".png"),
        srgb_row("deep__tif16", ".tif"),
        srgb_row("good", ".jpg"),
    ]
    assert download.FILES.joinpath("good.jpg").read_bytes() == good.read_bytes()
    assert download.FILES.joinpath("deep__png16.png").read_bytes() == png16.read_bytes()
    assert download.FILES.joinpath("deep__tif16.tif").read_bytes() == tif16.read_bytes()
    undecodable = "not a decodable image (corrupt or unsupported format)"
    assert skipped_rows() == [
        {"path": str(empty), "reason": "empty file"},
        {"path": str(text), "reason": undecodable},
        {"path": str(truncated), "reason": undecodable},
    ]
    for path in (empty, text, truncated):
        assert warned(warnings_log, str(path)), path


def test_folder_ignores_hidden_files_and_other_formats(repo, make_params, tmp_path):
    src = tmp_path / "photos"
    write_image(src / "kept.jpg", photo("astronaut"))
    write_image(src / ".hidden.jpg", photo("chelsea"))
    write_image(src / ".thumbnails" / "kept.jpg", photo("chelsea"))
    (src / "__MACOSX").mkdir()
    (src / "__MACOSX" / "._kept.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (src / "readme.txt").write_text("not a photo")
    write_image(src / "drawing.bmp", photo("coffee"))

    download.run(make_params(source="folder", folder=str(src)))

    assert index_rows() == [srgb_row("kept", ".jpg")]
    assert skipped_rows() == []
    assert files_listing() == ["kept.jpg"]


def test_folder_without_readable_photos_fails_naming_it(repo, make_params, tmp_path):
    download.run(make_params(source="bundled"))
    before = snapshot(download.OUT)
    src = tmp_path / "photos"
    src.mkdir()
    (src / "empty.jpg").write_bytes(b"")
    (src / "notes.png").write_text("not a photo")

    with pytest.raises(download.DownloadError) as err:
        download.run(make_params(source="folder", folder=str(src)))

    assert str(err.value) == f"{src}: no readable JPEG/PNG/TIFF or raw photos found (skipped: 2)"
    assert snapshot(download.OUT) == before  # the previous download is untouched, no temporary left


def test_missing_folder_fails_naming_data_folder(repo, make_params, tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(download.DownloadError) as err:
        download.run(make_params(source="folder", folder=str(missing)))
    assert str(err.value) == f"data.folder: {missing} is not a folder"
    assert not download.INDEX.exists() and not download.FILES.exists()


def test_folder_source_takes_raw_files_too(repo, make_params, tmp_path, make_dng):
    src = tmp_path / "photos"
    write_image(src / "a.jpg", photo("astronaut"))
    make_dng(src / "b.DNG", (photo("chelsea", size=32) / 255.0) ** 2.2)
    download.run(make_params(source="folder", folder=str(src)))
    assert index_rows() == [srgb_row("a", ".jpg"), srgb_row("b", ".dng", kind="raw")]
    assert download.FILES.joinpath("b.dng").read_bytes() == (src / "b.DNG").read_bytes()


# ----------------------------------------------------------------------------- source: raw


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_make_dng_writes_a_dng_libraw_reads(tmp_path, make_dng, pattern):
    linear = (photo("chelsea", size=64) / 255.0) ** 2.2
    path = tmp_path / "shot.dng"
    raw = make_dng(path, linear, pattern=pattern)
    assert raw.dtype == np.uint16 and raw.shape == (64, 64)
    with rawpy.imread(str(path)) as dng:
        assert np.array_equal(dng.raw_image_visible, raw)
        assert dng.black_level_per_channel == [512, 512, 512, 512]
        assert dng.white_level == 16383
        colours = "".join("RGBG"[c] for c in dng.raw_pattern.ravel())
        assert colours == pattern
        developed = dng.postprocess(
            use_camera_wb=True, gamma=(1, 1), no_auto_bright=True, output_bps=16, user_flip=0
        ) / 65535.0
    assert developed.shape == (64, 64, 3)
    assert np.abs(developed - linear)[2:-2, 2:-2].mean() < 0.01  # LibRaw develops it back


def test_raw_source_keeps_the_dng_and_skips_the_fake(repo, make_params, tmp_path, make_dng, warnings_log):
    src = tmp_path / "raws"
    src.mkdir()
    make_dng(src / "real.dng", (photo("astronaut", size=64) / 255.0) ** 2.2)
    fake = src / "fake.dng"
    fake.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    dng = (src / "real.dng").read_bytes()
    truncated = src / "truncated.dng"
    truncated.write_bytes(dng[: len(dng) // 2])
    (src / "real.xmp").write_text("<x:xmpmeta/>")  # sidecars are not raw files
    write_image(src / "preview.jpg", photo("astronaut"))  # JPEGs are not taken in raw mode

    download.run(make_params(source="raw", folder=str(src)))

    assert index_rows() == [srgb_row("real", ".dng", kind="raw")]
    assert download.FILES.joinpath("real.dng").read_bytes() == dng
    assert files_listing() == ["real.dng"]
    assert skipped_rows() == [
        {"path": str(fake), "reason": "LibRaw cannot decode it: Unsupported file format or not RAW file"},
        {"path": str(truncated), "reason": "LibRaw cannot decode it: Input/output error"},
    ]
    assert warned(warnings_log, str(fake)) and warned(warnings_log, str(truncated))


def test_raw_source_without_raw_files_fails_naming_the_folder(repo, make_params, tmp_path):
    src = tmp_path / "raws"
    src.mkdir()
    (src / "fake.nef").write_bytes(b"\x00" * 1000)
    write_image(src / "photo.jpg", photo("astronaut"))
    with pytest.raises(download.DownloadError) as err:
        download.run(make_params(source="raw", folder=str(src)))
    assert str(err.value) == f"{src}: no camera raw files LibRaw can read found (skipped: 1)"


# ----------------------------------------------------------------------------- source: url


def photo_tree() -> dict[str, bytes]:
    return {
        "photos/holiday/beach.jpg": encode(photo("astronaut"), ".jpg"),
        "photos/holiday/cat.png": encode(photo("chelsea"), ".png"),
        "photos/coffee.jpg": encode(photo("coffee"), ".jpg"),
    }


@pytest.mark.parametrize(("name", "pack"), [("photos.tar.gz", make_tar), ("photos.zip", make_zip)])
def test_url_source_downloads_and_extracts_an_archive(repo, make_params, http_server, no_retries, name, pack):
    members = photo_tree()
    data = pack(members)
    (http_server.root / name).write_bytes(data)
    p = make_params(source="url", url=http_server.url(name), sha256=sha256(data))

    download.run(p)

    assert index_rows() == [
        srgb_row("photos__coffee", ".jpg"),
        srgb_row("photos__holiday__beach", ".jpg"),
        srgb_row("photos__holiday__cat", ".png"),
    ]
    assert download.FILES.joinpath("photos__coffee.jpg").read_bytes() == members["photos/coffee.jpg"]
    assert download.FILES.joinpath("photos__holiday__beach.jpg").read_bytes() == members["photos/holiday/beach.jpg"]
    assert download.FILES.joinpath("photos__holiday__cat.png").read_bytes() == members["photos/holiday/cat.png"]
    assert skipped_rows() == []
    assert download.SKIPPED.read_text() == "path,reason\n"
    assert http_server.requests == [f"/{name}"]

    download.run(p)  # the cached archive is reused
    assert http_server.requests == [f"/{name}"]
    assert len(index_rows()) == 3


def test_url_source_lists_broken_members_in_skipped(repo, make_params, http_server, no_retries):
    members = photo_tree() | {"photos/broken.jpg": b"\xff\xd8\xff\xe0 not really a JPEG"}
    data = make_zip(members)
    (http_server.root / "photos.zip").write_bytes(data)
    download.run(make_params(source="url", url=http_server.url("photos.zip"), sha256=sha256(data)))
    assert [r["scene"] for r in index_rows()] == ["photos__coffee", "photos__holiday__beach", "photos__holiday__cat"]
    [skipped] = skipped_rows()
    assert skipped["path"].startswith("data/cache/") and skipped["path"].endswith("/photos/broken.jpg")
    assert skipped["reason"] == "not a decodable image (corrupt or unsupported format)"


def test_url_source_wrong_checksum_leaves_the_previous_download(repo, make_params, http_server, no_retries):
    download.run(make_params(source="bundled"))
    before = snapshot(download.OUT)
    (http_server.root / "photos.zip").write_bytes(make_zip(photo_tree()))
    url = http_server.url("photos.zip")
    with pytest.raises(download.DownloadError, match=f"^{url}: "):
        download.run(make_params(source="url", url=url, sha256="1" * 64))
    assert snapshot(download.OUT) == before
    assert os.listdir("data/cache") == []


def test_url_source_that_is_not_an_archive(repo, make_params, http_server, no_retries):
    data = encode(photo("astronaut"), ".jpg")
    (http_server.root / "photo.jpg").write_bytes(data)
    with pytest.raises(ArchiveError, match="not a zip or tar archive"):
        download.run(make_params(source="url", url=http_server.url("photo.jpg"), sha256=sha256(data)))


# ----------------------------------------------------------------------------- source: msec

MSEC_SCENES = {
    "training": ["a0001-jmac_DSC1459", "a0002-dgw_005"],
    "validation": ["a0003-NKIM_MG_8178"],
    "testing": ["a0004-kme_372", "a0005-IMG_1234"],
}
MSEC_SUFFIXES = {"N1.5": "-1.5", "N1": "-1.0", "0": "0.0", "P1": "1.0", "P1.5": "1.5"}


def msec_archive(split: str, junk: bool = False) -> dict[str, bytes]:
    """Members of one MSEC split archive with the real layout, small real-photo crops as JPEGs."""
    members = {}
    for i, base in enumerate(MSEC_SCENES[split]):
        crop = photo(["astronaut", "chelsea", "coffee"][i % 3], size=32, top=40 * i, left=40 * i)
        for j, suffix in enumerate(MSEC_SUFFIXES):
            scale = 2.0 ** (j - 2)
            exposed = np.clip(crop * scale, 0, 255).astype(np.uint8)
            members[f"{split}/INPUT_IMAGES/{base}_{suffix}.JPG"] = encode(exposed, ".jpg")
        if split == "testing":
            for k, e in enumerate("abcde"):
                expert = np.clip(crop.astype(int) + 5 * k, 0, 255).astype(np.uint8)
                members[f"{split}/expert_{e}_testing_set/{base}.jpg"] = encode(expert, ".jpg")
        else:
            members[f"{split}/GT_IMAGES/{base}.jpg"] = encode(crop, ".jpg")
    if junk:  # what macOS and Windows leave in archives
        base = MSEC_SCENES[split][0]
        members[f"__MACOSX/{split}/INPUT_IMAGES/._{base}_N1.5.JPG"] = b"\x00\x05\x16\x07 fork"
        members[f"__MACOSX/{split}/GT_IMAGES/._{base}.jpg"] = b"\x00\x05\x16\x07 fork"
        members[f"{split}/INPUT_IMAGES/Thumbs.db"] = b"\xd0\xcf\x11\xe0 thumbnails"
    return members


def serve_msec(http_server, make_params, junk: bool = False) -> tuple[dict, dict]:
    """Archives for the three splits on the loopback server; returns (params, members by split)."""
    packers = {"training": (make_zip, "zip"), "validation": (make_tar, "tar.gz"), "testing": (make_zip, "zip")}
    msec, members = {}, {}
    for split, (pack, ext) in packers.items():
        members[split] = msec_archive(split, junk=junk)
        data = pack(members[split])
        name = f"{split}.{ext}"
        (http_server.root / name).write_bytes(data)
        msec[split] = {"url": http_server.url(name), "sha256": sha256(data)}
    return make_params(source="msec", msec=msec), members


def msec_expected() -> list[dict]:
    rows = []
    for split, scenes in MSEC_SCENES.items():
        root = f"data/downloads/files/msec/{split}/{split}"
        for base in scenes:
            for suffix, ev in MSEC_SUFFIXES.items():
                row = {"scene": base, "kind": "msec", "path": f"{root}/INPUT_IMAGES/{base}_{suffix}.JPG"}
                row |= {"split": split, "ev": ev}
                if split == "testing":
                    experts = {f"reference_expert_{e}": f"{root}/expert_{e}_testing_set/{base}.jpg" for e in "abcde"}
                    row |= {"reference": experts["reference_expert_c"]} | experts
                else:
                    row |= {"reference": f"{root}/GT_IMAGES/{base}.jpg"}
                    row |= {f"reference_expert_{e}": "" for e in "abcde"}
                row |= {"exposure": "under" if float(ev) < 0 else "over", "protocol": datasets.PROTOCOLS["msec"]}
                rows.append(row)
    return sorted(rows, key=lambda r: (list(MSEC_SCENES).index(r["split"]), r["path"]))


def test_msec_source_indexes_inputs_evs_and_references(repo, make_params, http_server, no_retries):
    p, members = serve_msec(http_server, make_params)

    download.run(p)

    assert index_rows() == msec_expected()
    for split, files in members.items():  # every member extracted byte for byte
        for name, data in files.items():
            assert download.FILES.joinpath("msec", split, name).read_bytes() == data, name
    assert skipped_rows() == []
    assert sorted(http_server.requests) == ["/testing.zip", "/training.zip", "/validation.tar.gz"]


def test_msec_ignores_macos_forks_and_lists_odd_inputs_in_skipped(
    repo, make_params, http_server, no_retries, warnings_log
):
    p, _ = serve_msec(http_server, make_params, junk=True)

    download.run(p)

    assert index_rows() == msec_expected()  # no row from __MACOSX/, references from the real folders
    thumbs = [f"data/downloads/files/msec/{s}/{s}/INPUT_IMAGES/Thumbs.db" for s in MSEC_SCENES]
    skipped = skipped_rows()
    assert [r["path"] for r in skipped] == thumbs
    assert all(r["reason"].startswith("name does not end in an MSEC EV suffix") for r in skipped)
    assert warned(warnings_log, "Thumbs.db")


def test_msec_archive_without_input_images_fails_naming_the_split(repo, make_params, http_server, no_retries):
    p, _ = serve_msec(http_server, make_params)
    data = make_zip({"validation/photos/a.jpg": encode(photo(), ".jpg")})
    (http_server.root / "validation.tar.gz").unlink()
    (http_server.root / "odd.zip").write_bytes(data)
    p["data"]["msec"]["validation"] = {"url": http_server.url("odd.zip"), "sha256": sha256(data)}
    with pytest.raises(download.DownloadError, match="no INPUT_IMAGES/ folder in the MSEC validation archive"):
        download.run(p)
    assert not download.INDEX.exists()
    assert not download.FILES.exists()


def test_weights_are_fetched_and_load_into_the_model(repo, http_server, make_params, no_retries):
    """data.weights: a torchvision-format VGG16 checkpoint served on loopback lands in
    data/downloads/weights/ and hdr_autoencoder's encoder loads it (pretrained)."""
    import io

    import torch

    from expocorr.models.hdr_autoencoder import HDRAutoencoder
    from expocorr.models.vgg import vgg_features

    torch.manual_seed(3)
    features = vgg_features("vgg16")
    buf = io.BytesIO()
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, buf)
    (http_server.root / "vgg16-test.pth").write_bytes(buf.getvalue())
    weights = {"vgg16": {"url": http_server.url("vgg16-test.pth"), "sha256": sha256(buf.getvalue())}}

    download.run(make_params(weights=weights))

    path = repo / "data/downloads/weights/vgg16.pth"
    assert path.read_bytes() == buf.getvalue()
    listing = json.loads((repo / "data/downloads/weights/weights.json").read_text())
    assert listing == {"vgg16": {"path": "data/downloads/weights/vgg16.pth", "url": weights["vgg16"]["url"],
                                 "sha256": weights["vgg16"]["sha256"]}}
    model = HDRAutoencoder(vgg_weights=str(path))
    assert model.pretrained
    assert torch.equal(model.encoder[0].weight, features[0].weight)


def test_no_weights_gives_an_empty_listing(repo, make_params):
    download.run(make_params(source="bundled"))
    assert [p.name for p in (repo / "data/downloads/weights").iterdir()] == ["weights.json"]
    assert json.loads((repo / "data/downloads/weights/weights.json").read_text()) == {}


def test_weights_named_with_a_hash_prefix_are_checked_against_it(repo, http_server, make_params, no_retries):
    """Without a sha256, torchvision's file names (vgg16-397923af.pth) carry a sha256 prefix that the download
    checks as torch.hub does: a match lands; a mismatch is one error naming the URL, and leaves no file."""
    data = b"weights " * 100
    prefix = sha256(data)[:8]
    wrong = f"{(int(prefix, 16) + 1) % 16**8:08x}"
    for name in (f"vgg16-{prefix}.pth", f"vgg19-{wrong}.pth"):
        (http_server.root / name).write_bytes(data)
    download.run(make_params(weights={"vgg16": {"url": http_server.url(f"vgg16-{prefix}.pth"), "sha256": None}}))
    assert (repo / "data/downloads/weights/vgg16.pth").read_bytes() == data
    url = http_server.url(f"vgg19-{wrong}.pth")
    with pytest.raises(download.DownloadError, match=f"^{re.escape(url)}: sha256 {sha256(data)} does not start with "
                                                     f"{wrong}, the hash prefix of its file name"):
        download.run(make_params(weights={"vgg19": {"url": url, "sha256": None}}))
    assert not any("vgg19" in p.name for p in (repo / "data/cache").iterdir())
    assert sorted(p.name for p in (repo / "data/downloads/weights").iterdir()) == ["vgg16.pth", "weights.json"]

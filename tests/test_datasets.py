"""Benchmark datasets as sources (expocorr.sources.datasets): fixture archives with each dataset's published layout
(names and folders as released, counts scaled down), over loopback or as local paths, through download,
render and split; the layout errors; MSEC's under / over groups; GT-mean scoring and its labels."""

from __future__ import annotations

import copy
import json
import logging
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pytest

from expocorr import params
from expocorr.sources import datasets
from expocorr.stages import download, evaluate, render, report, split
from expocorr.stages.report import data as report_data
from expocorr.imaging.images import read_rgb, to_uint8
from expocorr.tables import read_csv
from test_download import make_tar, make_zip, sha256

SIZE = (24, 16)  # px (width, height): LOL's 600x400 scaled down 25 times


def photo(name: str, top: int = 0) -> np.ndarray:
    """A SIZE crop (uint8 RGB) of a real photo bundled with scikit-image."""
    data = np.frombuffer(resources.files("skimage").joinpath(f"data/{name}.png").read_bytes(), np.uint8)
    rgb = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb[top:top + SIZE[1], 100:100 + SIZE[0]])


def encode(rgb: np.ndarray, suffix: str) -> bytes:
    ok, buf = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def scaled(rgb: np.ndarray, gain: float) -> np.ndarray:
    return np.clip(rgb * gain, 0, 255).astype(np.uint8)


def unpack(members: dict[str, bytes], folder: Path) -> Path:
    for name, data in members.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def lol_members(train=("2", "5", "9"), test=("1", "22")) -> dict[str, bytes]:
    """LOLdataset/our485/{low,high}/N.png and LOLdataset/eval15/{low,high}/N.png."""
    members = {}
    for part, names in (("our485", train), ("eval15", test)):
        for i, name in enumerate(names):
            rgb = photo(["astronaut", "coffee", "chelsea"][i % 3], top=20 * i)
            members[f"LOLdataset/{part}/high/{name}.png"] = encode(rgb, ".png")
            members[f"LOLdataset/{part}/low/{name}.png"] = encode(scaled(rgb, 0.2), ".png")
    return members


def sice_members(prefix: str, sequences: dict[int, str]) -> dict[str, bytes]:
    """PREFIX/<n>/1.JPG (darker than the label), PREFIX/<n>/2.JPG (brighter) and PREFIX/Label/<n>.<ext>."""
    members = {}
    for n, ext in sequences.items():
        rgb = photo("coffee", top=n % 200)
        members[f"{prefix}/{n}/1.JPG"] = encode(scaled(rgb, 0.3), ".jpg")
        members[f"{prefix}/{n}/2.JPG"] = encode(scaled(rgb, 2.5), ".jpg")
        members[f"{prefix}/Label/{n}.{ext}"] = encode(rgb, "." + ext.lower())
    return members


def lcdp_members(counts=(("input", "gt", 2), ("valid-input", "valid-gt", 1), ("test-input", "test-gt", 2))):
    members = {}
    for inputs, references, n in counts:
        for i in range(n):
            rgb = photo("chelsea", top=10 * i)
            members[f"{inputs}/a{i:04d}.png"] = encode(scaled(rgb, 1.8) // 2 + 20, ".png")
            members[f"{references}/a{i:04d}.png"] = encode(rgb, ".png")
    return members


@pytest.fixture
def dataset_params(p):
    """The repository's params with the fixture-sized render (full resolution: the images are tiny)."""
    def make(source: str, **data) -> dict:
        q = copy.deepcopy(p)
        q["data"].update(source=source, **data)
        q["render"]["max_side"] = None
        return params.validate(q)
    return make


def manifest_by_split() -> dict[str, list[dict]]:
    return {name: read_csv(split.OUT / f"{name}.csv") for name in split.SPLITS}


def test_lol_over_loopback_keeps_its_split_and_protocol(repo, dataset_params, http_server, caplog):
    data = make_zip(lol_members())
    (http_server.root / "LOLdataset.zip").write_bytes(data)
    p = dataset_params("lol", lol={"archive": http_server.url("LOLdataset.zip"), "sha256": sha256(data)})

    with caplog.at_level(logging.WARNING, logger="expocorr.sources.datasets"):
        download.run(p)
    assert "LOL our485: pairs: 3, the published dataset has 485" in caplog.text
    render.run(p)
    split.run(p)

    manifest = read_csv(render.MANIFEST)
    assert {r["exposure"] for r in manifest} == {"under"} and {r["ev"] for r in manifest} == {"0.0"}
    assert {r["protocol"] for r in manifest} == {datasets.PROTOCOLS["lol"]}
    got = manifest_by_split()
    assert sorted(r["scene"] for r in got["test"]) == ["eval15__1", "eval15__22"]  # the published test set
    assert len(got["val"]) == 1 and len(got["train"]) == 2  # no published val: one of the three training pairs
    assert {r["scene"] for r in got["train"] + got["val"]} == {"our485__2", "our485__5", "our485__9"}
    row = next(r for r in manifest if r["scene"] == "eval15__22")
    assert np.array_equal(to_uint8(read_rgb(row["reference"])), photo("coffee", top=20))
    assert http_server.requests == ["/LOLdataset.zip"]


def test_sice_parts_from_a_local_zip_and_a_folder(repo, tmp_path, dataset_params):
    """Part 1 as a downloaded zip (sha256 checked), Part 2 as the folder it was extracted to; labels .JPG and
    .PNG; each exposure's group is its mean grey against the label's."""
    part1 = tmp_path / "Dataset_Part1.zip"
    part1.write_bytes(make_zip(sice_members("Dataset_Part1", {1: "JPG", 2: "JPG"})))
    part2 = unpack(sice_members("Dataset_Part2", {1: "JPG", 126: "PNG"}), tmp_path / "extracted")
    p = dataset_params("sice", sice={"part1": {"archive": str(part1), "sha256": sha256(part1.read_bytes())},
                                     "part2": {"archive": str(part2 / "Dataset_Part2"), "sha256": None}})
    download.run(p)
    render.run(p)
    split.run(p)

    manifest = read_csv(render.MANIFEST)
    assert {(r["scene"], r["exposure"]) for r in manifest} == {
        (f"{part}__{n}__{i}", "under" if i == 1 else "over")
        for part, numbers in (("part1", (1, 2)), ("part2", (1, 126))) for n in numbers for i in (1, 2)}
    got = manifest_by_split()
    assert {r["scene"].split("__")[0] for r in got["test"]} == {"part2"} and len(got["test"]) == 4
    assert {r["protocol"] for r in manifest} == {datasets.PROTOCOLS["sice"]}


def test_lcdp_from_a_local_tar_pairs_by_sorted_position(repo, tmp_path, dataset_params):
    archive = tmp_path / "lcdp.tar.gz"
    archive.write_bytes(make_tar({f"lcdp_dataset/{k}": v for k, v in lcdp_members().items()}))
    download.run(dataset_params("lcdp", lcdp={"archive": str(archive), "sha256": None}))
    rows = read_csv(download.INDEX)
    assert [(r["scene"], r["split"], Path(r["reference"]).parent.name) for r in rows] == [
        ("train__a0000", "train", "gt"), ("train__a0001", "train", "gt"), ("val__a0000", "val", "valid-gt"),
        ("test__a0000", "test", "test-gt"), ("test__a0001", "test", "test-gt")]
    assert {r["exposure"] for r in rows} == {"mixed"}


@pytest.mark.parametrize(("source", "members", "message"), [
    ("lol", {k: v for k, v in lol_members().items() if k != "LOLdataset/eval15/high/22.png"},
     r"eval15: LOL: low/ image\(s\) without a high/ image of the same name: 22.png$"),
    ("lol", {k.replace("eval15", "eval"): v for k, v in lol_members().items()},
     r"not the LOL v1 .* layout: no folder holding our485/, eval15/$"),
    ("sice", {k: v for k, v in sice_members("Dataset_Part1", {1: "JPG", 2: "JPG"}).items() if "Label/2" not in k},
     r"SICE part1: sequence folder\(s\) without a Label/ image: 2$"),
    ("lcdp", {k: v for k, v in lcdp_members().items() if k != "test-gt/a0001.png"},
     r"LCDP test: 2 image\(s\) in test-input/ but 1 in test-gt/"),
])
def test_a_wrong_layout_is_one_line_naming_what_is_missing(repo, tmp_path, dataset_params, source, members, message):
    archive = tmp_path / "dataset.zip"
    archive.write_bytes(make_zip(members))
    spec = {"archive": str(archive), "sha256": None}
    p = dataset_params(source, **({"sice": {"part1": spec, "part2": spec}} if source == "sice" else {source: spec}))
    with pytest.raises(datasets.LayoutError, match=message) as caught:
        download.run(p)
    assert "\n" not in str(caught.value)
    assert not download.INDEX.exists() and not download.FILES.exists()


def test_local_archive_checks_its_sha256_and_a_folder_takes_none(repo, tmp_path, dataset_params):
    archive = tmp_path / "LOLdataset.zip"
    archive.write_bytes(make_zip(lol_members()))
    with pytest.raises(download.DownloadError, match=rf"^data.lol.archive: {archive}: sha256 [0-9a-f]{{64}} does "
                                                     rf"not match data.lol.sha256 {'1' * 64}$"):
        download.run(dataset_params("lol", lol={"archive": str(archive), "sha256": "1" * 64}))
    with pytest.raises(download.DownloadError, match=r"^data.lol.sha256: .* is a folder"):
        download.run(dataset_params("lol", lol={"archive": str(tmp_path), "sha256": "1" * 64}))
    with pytest.raises(download.DownloadError, match=r"^data.lol.archive: .*missing.zip: no such file or folder$"):
        download.run(dataset_params("lol", lol={"archive": str(tmp_path / "missing.zip"), "sha256": None}))


def test_a_dataset_source_needs_its_archive(p):
    q = copy.deepcopy(p)
    q["data"]["source"] = "sice"
    q["data"]["sice"]["part1"]["archive"] = "/data/Dataset_Part1.zip"
    with pytest.raises(params.ParamsError, match=r"data.sice.part2.archive: required when data.source is 'sice'"):
        params.validate(q)


def test_msec_groups_follow_the_published_test_counts(repo, tmp_path, caplog):
    """MSEC counts EV 0 as over: one scene's five EVs give 2 under / 3 over / 5 overall, the published test set's
    ratio (2,362 / 3,543 / 5,905); an expert folder missing is a layout error."""
    root = tmp_path / "testing"
    for e in "abcde":
        (root / f"expert_{e}_testing_set").mkdir(parents=True)
        cv2.imwrite(str(root / f"expert_{e}_testing_set/a0001-x.jpg"), photo("coffee"))
    (root / "INPUT_IMAGES").mkdir()
    for suffix in datasets.MSEC_EV:
        cv2.imwrite(str(root / f"INPUT_IMAGES/a0001-x_{suffix}.JPG"), photo("coffee"))
    with caplog.at_level(logging.WARNING, logger="expocorr.sources.datasets"):
        rows = datasets.index_msec(root, "testing", [])
    assert "MSEC testing: under inputs: 2, the published dataset has 2362" in caplog.text
    records = [{"ev": r["ev"], "exposure": r["exposure"], "identical_pair": False, "psnr:reference": 20.0 + r["ev"]}
               for r in rows]
    _, counts = evaluate.aggregate(records, "reference")
    assert (counts["under"], counts["over"], counts["overall"]) == (2, 3, 5)
    bare = [{k: v for k, v in r.items() if k != "exposure"} for r in records]  # no dataset group: by the EV's sign
    assert (evaluate.aggregate(bare, "reference")[1]["over"]) == 2
    for path in (root / "expert_b_testing_set").iterdir():
        path.unlink()
    (root / "expert_b_testing_set").rmdir()
    with pytest.raises(datasets.LayoutError, match=r"not the MSEC testing layout: no expert_b_testing_set/"):
        datasets.index_msec(root, "testing", [])


def test_gt_mean_scales_the_output_to_the_reference_mean():
    reference = photo("astronaut")
    output = scaled(reference, 0.5)
    fixed = evaluate.gt_mean(output, reference)
    grey = np.array([0.299, 0.587, 0.114])
    assert abs((fixed @ grey).mean() - (reference @ grey).mean()) < 1.0
    assert np.array_equal(evaluate.gt_mean(np.zeros_like(reference), reference), np.zeros_like(reference))
    record, cfg = {}, {"gt_mean": True, "psnr_cap": 100.0, "y_channel": False}
    evaluate._score(record, {"input": "x"}, output, {"reference": reference}, cfg)
    plain = {}
    evaluate._score(plain, {"input": "x"}, output, {"reference": reference}, {**cfg, "gt_mean": False})
    assert record["psnr:reference"] > plain["psnr:reference"] + 3


def test_gt_mean_is_off_by_default_and_labelled_when_on(repo, dataset_params, tmp_path, monkeypatch):
    """Every params file leaves GT-mean off; an evaluation with it on records it, and the leaderboard's kind
    cell, dataset record and protocol lines say so, beside the dataset's protocol."""
    for name in ("params.yaml", "params-paper.yaml", "params-paper-hdr.yaml", "params-real.yaml"):
        text = (Path(__file__).resolve().parents[1] / name).read_text()
        assert "\n  gt_mean: false" in text, name
    archive = tmp_path / "LOLdataset.zip"
    archive.write_bytes(make_zip(lol_members()))
    p = dataset_params("lol", lol={"archive": str(archive), "sha256": None})
    p["evaluate"].update(gt_mean=True, baselines=["identity"])
    p["evaluate"]["noref"].update(brisque=False, niqe_params=None)
    for stage in (download, render, split):
        stage.run(p)
    evaluate.run(p, "identity")
    methods = report.load_methods()
    m = next(m for m in methods if m.name == "identity")
    assert report_data.kind_label(m) == "baseline (GT-mean)"
    record = report_data.dataset(m)
    assert record["gt_mean"] is True and record["protocol"] == datasets.PROTOCOLS["lol"]
    heading, lines = report._dataset_heading(record)
    assert f"Protocol: {datasets.PROTOCOLS['lol']}." in lines and any(line.startswith("GT-mean:") for line in lines)


@pytest.mark.slow
def test_snakemake_runs_a_lol_archive_to_the_report(tmp_path):
    """README "Benchmark datasets": `data.source: lol` with `archive:` a local zip, `render.max_side: null`, and
    `snakemake --cores 2` in a copy of the repository: download -> render -> split -> evaluate -> report, the
    test rows the published eval15 pairs, the report naming LOL's protocol and GT-mean."""
    import workspace

    archive = tmp_path / "LOLdataset.zip"
    archive.write_bytes(make_zip(lol_members()))

    def edit(q):
        q["data"].update(source="lol", lol={"archive": str(archive), "sha256": None})
        q["render"]["max_side"] = None
        q["train"]["models"] = []
        q["evaluate"].update(baselines=["identity", "clahe"], gt_mean=True, n_examples=1)

    root = workspace.make(tmp_path, edit)
    (root / "models").mkdir()  # the report stage's dependency, which no train stage makes here
    workspace.run(["snakemake", "--cores", "2"], root)
    assert sorted(r["scene"] for r in read_csv(root / "data/splits/test.csv")) == ["eval15__1", "eval15__22"]
    board = {r["method"]: r for r in json.loads((root / "reports/leaderboard.json").read_text())}
    assert set(board) == {"identity", "clahe"}
    assert board["identity"]["dataset"]["protocol"] == datasets.PROTOCOLS["lol"]
    text = (root / "reports/report.md").read_text()
    assert datasets.PROTOCOLS["lol"] in text and "baseline (GT-mean)" in text


def test_a_share_page_served_instead_of_the_archive_is_named(repo, dataset_params, http_server):
    """A cloud drive's share link serves a web page to a script: one error naming the key and the URL, and
    how to go on (the local path)."""
    (http_server.root / "share").write_text("<!DOCTYPE html>\n<html><body>Sign in to download</body></html>")
    url = http_server.url("share")
    p = dataset_params("lol", lol={"archive": url, "sha256": None})
    with pytest.raises(download.DownloadError, match=f"data.lol: {url} served a web page \\(HTML\\), not the archive"):
        download.run(p)
    assert not download.INDEX.exists()

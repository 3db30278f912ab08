"""Stage `report`: the leaderboard, figures and a self-contained HTML page from a realistic metrics tree.

The fixture tree is what the evaluate and train stages leave behind, built from five real photographs
(scikit-image's) under synthetic exposure errors, with every metric actually computed on the images:
four methods (two models, a baseline and an oracle baseline). The last tests run the real pipeline by DVC
(`dvc metrics show` / `diff` and the report of that run, in Chromium too).
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from skimage import data as skdata
from skimage.color import deltaE_ciede2000, rgb2lab

import workspace
from expocorr import cli, params, tracking
from expocorr.stages import report
from expocorr.stages.report import data as report_data
from expocorr.stages.report import figures as report_figures
from expocorr.errors import UserError
from expocorr.imaging.images import resize_max_side, to_uint8, write_rgb
from expocorr.metrics import psnr, ssim
from expocorr.imaging.synthesis import ev_name
from expocorr.tables import write_csv

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
EVS = (-1.5, -1.0, 0.0, 1.0, 1.5)
SCENES = {"astronaut": skdata.astronaut, "coffee": skdata.coffee, "chelsea": skdata.chelsea, "rocket": skdata.rocket,
          "immunohistochemistry": skdata.immunohistochemistry}
# in the evaluate stage's order (evaluate.example_rows): scene after scene, under- and over-exposure in turn
EXAMPLES = [("astronaut", -1.5), ("chelsea", 1.5), ("coffee", -1.0), ("immunohistochemistry", 1.0), ("rocket", 0.0)]
PSNR_CAP = 100.0
CHARTS = {"per_ev", "under_over", "per_image_psnr", "training", "luma_histograms"}
PHOTOS = {"qualitative", "worst_cases"}  # always JPEG
FIGURES = CHARTS | PHOTOS
PROVENANCE = {"data_source": "folder (photos)", "rendered_scenes": 5, "rendered_images": 25, "test_scenes": 5,
              "test_images": 25, "git_commit": "0123456789abcdef0123456789abcdef01234567",
              "params_hash": "feedfacecafe0042",
              "evaluated_at": "2025-01-02T03:04:05+00:00", "machine": "host (Linux x86_64, 2 CPUs)", "device": "cpu",
              "software": "Python 3.11.7, torch 2.13.0+cpu"}


def expose(rgb: np.ndarray, ev: float) -> np.ndarray:
    """Scale linear light by 2**ev through a 2.2 gamma, with clipping: a synthetic exposure error."""
    return np.clip(np.clip(rgb, 0, 1) ** 2.2 * 2.0 ** ev, 0, 1) ** (1 / 2.2)


# name -> kind, oracle, n_parameters, correction(input, reference, ev) -> float RGB
METHODS = {
    "msec": ("model", False, 433037, lambda x, r, ev: (0.8 * r + 0.2 * x) ** 1.05),
    "exponet": ("model", False, 120456, lambda x, r, ev: (0.5 * r + 0.5 * expose(x, -ev / 2)) ** 0.93),
    "identity": ("baseline", False, None, lambda x, r, ev: x),
    "ev_oracle": ("baseline", True, None, lambda x, r, ev: expose(x, -ev)),
}


def _scores(output: np.ndarray, reference: np.ndarray) -> dict:
    return {"psnr": min(psnr(output, reference), PSNR_CAP), "ssim": ssim(output, reference),
            "delta_e2000": float(deltaE_ciede2000(rgb2lab(reference), rgb2lab(output)).mean())}


def _mean(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim", "delta_e2000")}


def _aggregate(rows: list[dict]) -> tuple[dict, dict]:
    """metrics/NAME.json's groups (EV 0 inputs equal their reference: left out of `overall`) and their counts."""
    groups = {"overall": [r for r in rows if r["ev"] != 0], "under": [r for r in rows if r["ev"] < 0],
              "over": [r for r in rows if r["ev"] > 0]}
    scores = {name: _mean(subset) for name, subset in groups.items()}
    scores["per_ev"] = {str(ev): {k: _mean([r for r in rows if r["ev"] == ev])[k] for k in ("psnr", "ssim")}
                        for ev in EVS}
    counts = {name: len(subset) for name, subset in groups.items()}
    counts["per_ev"] = {str(ev): sum(r["ev"] == ev for r in rows) for ev in EVS}
    return scores, counts


def _luma_intersection(a: np.ndarray, b: np.ndarray) -> float:
    ha = np.histogram(a @ [0.299, 0.587, 0.114], 64, (0, 256))[0] / (a.shape[0] * a.shape[1])
    hb = np.histogram(b @ [0.299, 0.587, 0.114], 64, (0, 256))[0] / (b.shape[0] * b.shape[1])
    return float(np.minimum(ha, hb).sum())


def _example(row: dict) -> dict:
    return {k: row[k] for k in ("scene", "ev", "input", "output", "reference", "psnr")}


def build_tree(root: Path, train_logs: bool = True) -> dict[str, dict]:
    """metrics/ (NAME.json, details/NAME.json, NAME_per_image.csv), results/, data/rendered/images/ and
    models/*/train_log.csv as the stages write them; returns each method's two JSONs merged."""
    references = {}
    for scene, load in SCENES.items():
        reference = to_uint8(resize_max_side(load().astype(np.float32) / 255, 128))
        references[scene] = reference
        write_rgb(root / f"data/rendered/images/{scene}/reference.png", reference)
        for ev in EVS:
            write_rgb(root / f"data/rendered/images/{scene}/{ev_name(ev)}.png", to_uint8(expose(reference / 255, ev)))
    metrics = {}
    for name, (kind, oracle, n_parameters, correct) in METHODS.items():
        rows, hists = [], []
        for scene, reference in references.items():
            expert = to_uint8((reference / 255) ** 1.15)  # a second, darker "expert" retouch
            for ev in EVS:
                image = to_uint8(expose(reference / 255, ev))
                output = to_uint8(correct(image / 255, reference / 255, ev))
                row = {"scene": scene, "ev": ev, "input": f"data/rendered/images/{scene}/{ev_name(ev)}.png",
                       "reference": f"data/rendered/images/{scene}/reference.png", "identical_pair": int(ev == 0),
                       "output": f"results/{name}/{scene}_{ev_name(ev)}.png", **_scores(output, reference)}
                row["expert"] = _scores(output, expert)
                rows.append(row)
                hists.append(_luma_intersection(output.astype(float), reference.astype(float)))
                write_rgb(root / row["output"], output)  # the stage keeps only examples + worst; extra files are harmless
        scores, counts = _aggregate(rows)
        if name != "exponet":  # exponet: histogram similarities not computed (no entry)
            scores["overall"].update(hist_luminance=float(np.mean(hists)), hist_contrast=0.71, hist_saturation=0.69)
        if name == "msec":
            scores["overall"]["brisque"] = 31.5
        details = {"method": name, "kind": kind, "oracle": oracle, "headline_reference": "reference",
                   "psnr_cap": PSNR_CAP, "n_images": len(rows), "n_identical_pairs": len(SCENES), "n": counts,
                   "n_parameters": n_parameters,
                   "seconds_per_megapixel": {"msec": 0.42, "exponet": 0.2, "identity": 0.001, "ev_oracle": 0.01}[name],
                   "references": {"reference": {k: v for k, v in scores.items() if k in ("overall", "per_ev")}}}
        if name == "msec":
            expert = _aggregate([{**r["expert"], "ev": r["ev"]} for r in rows])[0]
            details["references"]["reference_expert_a"] = {k: v for k, v in expert.items()
                                                            if k in ("overall", "per_ev")}
        by_key = {(r["scene"], r["ev"]): r for r in rows}
        details.update({
            "noref": {k: "not computed: a reason" for k in ("niqe", "lpips", "pi", "inception_score")},
            "examples": [_example(by_key[key]) for key in EXAMPLES],
            "worst": _example(min(rows, key=lambda r: r["psnr"])),
            "provenance": {**PROVENANCE, "evaluated_at": "2025-01-02T03:14:00+00:00"} if name == "msec" else PROVENANCE,
            "params": {"evaluate": {"psnr_cap": PSNR_CAP}},
        })
        (root / "metrics/details").mkdir(parents=True, exist_ok=True)
        (root / f"metrics/{name}.json").write_text(json.dumps(scores, indent=2))
        (root / f"metrics/details/{name}.json").write_text(json.dumps(details, indent=2))
        columns = ["scene", "ev", "input", "reference", "identical_pair", "psnr", "ssim", "delta_e2000"]
        write_csv(root / f"metrics/{name}_per_image.csv", rows, columns)
        metrics[name] = {**details, **scores}
    if train_logs:
        for i, name in enumerate(("msec", "exponet")):
            epochs = np.arange(1, 6)
            log_rows = [{"epoch": e, "train_loss": 0.3 / e + 0.02 * i, "loss_l1": 0.3 / e,
                         "val_psnr": 14 + 3 * np.log(e) - i, "val_ssim": 0.6 + 0.04 * e, "val_psnr_identity": 12.5,
                         "val_ssim_identity": 0.55, "seconds": 3.0} for e in epochs]
            write_csv(root / f"models/{name}/train_log.csv", log_rows, list(log_rows[0]))
    return metrics




@pytest.fixture(scope="module")
def tree_template(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("tree")
    return root, build_tree(root)


@pytest.fixture
def tree(tree_template, tmp_path, monkeypatch) -> dict:
    """A fresh copy of the fixture tree as the working directory; returns the metrics JSONs."""
    root, metrics = tree_template
    shutil.copytree(root, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return metrics


@pytest.fixture(scope="module")
def built(tree_template, tmp_path_factory, base) -> tuple[Path, dict]:
    """The report of the fixture tree, built once for the tests that only read it: (its folder, metrics)."""
    root, metrics = tree_template
    folder = tmp_path_factory.mktemp("built")
    shutil.copytree(root, folder, dirs_exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        report.run(copy.deepcopy(base))
    return folder / "reports", metrics


def expected_order(metrics: dict) -> list[str]:
    return sorted(metrics, key=lambda m: (-metrics[m]["overall"]["psnr"], m))


def leaderboard_methods(markdown: str) -> list[str]:
    """Method column of the leaderboard table in report.md."""
    section = markdown.split("## Leaderboard", 1)[1].split("\n\n", 2)[1]
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:]
    return [line.split("|")[2].strip() for line in lines]


def is_png(path: Path) -> bool:
    with Image.open(path) as image:
        image.verify()
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def is_jpeg(path: Path) -> bool:
    with Image.open(path) as image:
        image.verify()
        return image.format == "JPEG"


# --- the report ----------------------------------------------------------------------------------


def test_every_method_ranked_by_headline_psnr(built):
    out, tree = built
    order = expected_order(tree)
    assert order != sorted(order) and order[0] == "ev_oracle"  # the fixture is not trivially ordered by name
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# expocorr report\n")
    assert leaderboard_methods(markdown) == order
    rows = json.loads((out / "leaderboard.json").read_text())
    assert [r["method"] for r in rows] == order
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    by_name = {r["method"]: r for r in rows}
    assert by_name["msec"]["psnr"] == pytest.approx(tree["msec"]["overall"]["psnr"])
    assert by_name["msec"]["n_parameters"] == 433037 and by_name["identity"]["n_parameters"] is None
    assert by_name["ev_oracle"]["oracle"] is True and by_name["ev_oracle"]["kind"] == "baseline"
    assert by_name["msec"]["seconds_per_megapixel"] == 0.42
    assert by_name["msec"]["seconds_per_megapixel_source"] == "metrics/details/msec.json"
    assert "| baseline (oracle) |" in markdown and "| 433,037 |" in markdown
    assert "| identity | baseline |" in markdown and markdown.count("| — |") >= 2  # baselines have no params


def test_protocol_and_sections(built):
    out, tree = built
    markdown = (out / "report.md").read_text()
    for text in ("σ = 1.5", "data range 255", "no sample-covariance correction", "CIELAB (D65) via scikit-image",
                 "histogram intersection of per-image luminance, contrast and saturation distributions",
                 "capped at 100 dB", "metrics/histogram.py"):
        assert text in markdown, text
    headings = ("## Provenance", "## Protocol", "## Leaderboard", "## Per reference", "## Exposure", "## Training",
                "## Qualitative examples", "## Worst cases", "## Luminance histograms")
    assert [markdown.index(h) for h in headings] == sorted(markdown.index(h) for h in headings)  # in this order
    per_reference = markdown.split("## Per reference", 1)[1].split("## ", 1)[0]
    assert "reference_expert_a" in per_reference and "reference (headline)" in per_reference
    assert "| msec |" in per_reference and "| identity |" not in per_reference  # only methods with several references
    for model in ("msec", "exponet"):  # each model's worst case, named with the file shown
        worst = tree[model]["worst"]
        assert (f"worst of {model}: {worst['scene']} at EV {report.ev_label(worst['ev'])}, PSNR {worst['psnr']:.2f} dB "
                f"(`{worst['output']}`)") in markdown
    assert "worst of identity" not in markdown  # a baseline outside the grid gets no worst-case row
    # EV 0 renders equal their reference: left out of the means, said so; no output scores the cap elsewhere
    assert "5 test pair(s) have an input identical to the reference" in markdown
    assert "score the PSNR cap on pairs that count" not in markdown and "Too few test scenes" not in markdown
    assert "| 100.00 (cap) / 1.0000 |" in markdown  # the identity's EV 0 column


def test_not_computed_shown_never_invented(built):
    out, tree = built
    markdown = (out / "report.md").read_text()
    rows = {r["method"]: r for r in json.loads((out / "leaderboard.json").read_text())}
    assert rows["exponet"]["hist_luminance"] == "not computed"
    assert rows["msec"]["hist_luminance"] == pytest.approx(tree["msec"]["overall"]["hist_luminance"])
    exponet_row = next(line for line in markdown.splitlines() if line.startswith("| ") and "| exponet |" in line)
    assert exponet_row.count("not computed") == 3  # the three histogram similarities
    other = markdown.split("## Other metrics", 1)[1].split("## ", 1)[0]
    msec_row = next(line for line in other.splitlines() if line.startswith("| msec |"))
    assert "31.500" in msec_row and msec_row.count("not computed") == 6  # psnr_y, ssim_y, niqe, lpips, pi, IS
    assert '<td class="nc">not computed</td>' in (out / "report.html").read_text()


def test_figures_are_valid_pngs_and_jpegs(built):
    out, _ = built
    files = {f.stem: f for f in (out / "figures").iterdir()}
    assert set(files) == FIGURES
    for name, path in files.items():
        assert (path.suffix, is_jpeg(path) if name in PHOTOS else is_png(path)) == (
            ".jpg" if name in PHOTOS else ".png", True), path
    cell = report_figures.PHOTO_CELL * 110  # px at report.dpi
    with Image.open(files["qualitative"]) as grid:  # 4 example rows; input, msec, exponet (the grid's 3 best but
        assert grid.width > 4 * cell and grid.height > 4 * 0.75 * cell  # the oracle and the identity), reference
    with Image.open(files["worst_cases"]) as worst:  # one row per model: input, output, reference
        assert 3 * cell < worst.width < 4 * cell and worst.height > 2 * 0.75 * cell
    markdown = (out / "report.md").read_text()
    for path in files.values():
        assert f"](figures/{path.name})" in markdown


def test_html_is_self_contained_and_embeds_every_figure(built):
    out, tree = built
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"https?://|file:|@import|url\(", page, re.IGNORECASE)
    refs = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page, re.IGNORECASE)
    assert refs and all(ref.startswith("data:") for ref in refs), [r[:40] for r in refs]
    assert not re.search(r"<(?:script|link|iframe|object|embed)\b", page, re.IGNORECASE)
    for path in (out / "figures").iterdir():
        assert base64.b64encode(path.read_bytes()).decode() in page, path.name
    assert len(refs) == len(FIGURES)
    assert '<table id="leaderboard">' in page
    for name in tree:
        assert f"<td>{name}</td>" in page


def test_rerun_is_identical(tree, p):
    report.run(p)
    first = {path: path.read_bytes() for path in Path("reports").rglob("*") if path.is_file()}
    report.run(p)
    second = {path: path.read_bytes() for path in Path("reports").rglob("*") if path.is_file()}
    assert first.keys() == second.keys()
    assert first[Path("reports/report.md")] == second[Path("reports/report.md")]
    assert first == second  # figures and HTML too: no timestamps anywhere
    assert not [p for p in Path("reports").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_stale_figures_are_replaced(tree, p):
    Path("reports/figures").mkdir(parents=True)
    Path("reports/figures/old.png").write_bytes(b"stale")
    report.run(p)
    assert {f.stem for f in Path("reports/figures").iterdir()} == FIGURES


def test_without_optional_inputs(tree, p):
    shutil.rmtree("models")
    assert not Path(report.LATENCY).exists()
    report.run(p)
    markdown = Path("reports/report.md").read_text()
    assert "No training logs" in markdown
    assert {f.stem for f in Path("reports/figures").iterdir()} == FIGURES - {"training"}
    assert leaderboard_methods(markdown) == expected_order(tree)
    assert "no inference benchmark" in markdown


def test_without_per_image_tables_and_examples(tree, p):
    for path in Path("metrics").glob("*_per_image.csv"):
        path.unlink()
    for path in Path("metrics/details").glob("*.json"):
        data = json.loads(path.read_text())
        data.pop("examples"), data.pop("worst")
        path.write_text(json.dumps(data))
    report.run(p)
    assert {f.stem for f in Path("reports/figures").iterdir()} == {"per_ev", "under_over", "training"}
    assert "No example outputs" in Path("reports/report.md").read_text()


def test_missing_example_image_is_shown_not_fatal(tree, p):
    Path(tree["msec"]["examples"][0]["output"]).unlink()
    report.run(p)
    markdown = Path("reports/report.md").read_text()
    assert f"`{tree['msec']['examples'][0]['output']}`" in markdown.split("not found or unreadable", 1)[1]


def test_infer_latency_preferred_cpu_largest(tree, p):
    bench = {"results": [
        {"method": "msec", "device": "cpu", "megapixels": 0.25, "seconds": 0.2, "peak_rss_mb": 300.0},
        {"method": "msec", "device": "cpu", "megapixels": 1.0, "seconds": 0.6, "peak_rss_mb": 350.0},
        {"method": "msec", "device": "cuda", "megapixels": 4.0, "seconds": 0.04, "peak_rss_mb": 900.0},
        {"method": "exponet", "device": "cuda", "megapixels": 2.0, "seconds": 0.02, "peak_rss_mb": 900.0},
    ]}
    Path("reports/bench").mkdir(parents=True)
    Path(report.LATENCY).write_text(json.dumps(bench))
    report.run(p)
    rows = {r["method"]: r for r in json.loads(Path("reports/leaderboard.json").read_text())}
    assert rows["msec"]["seconds_per_megapixel"] == pytest.approx(0.6)
    assert rows["msec"]["seconds_per_megapixel_source"] == f"{report.LATENCY} (cpu, 1 MP)"
    assert rows["exponet"]["seconds_per_megapixel"] == pytest.approx(0.01)  # no cpu entry: its only run
    assert rows["identity"]["seconds_per_megapixel"] == 0.001  # not benchmarked: the evaluate stage's timing
    markdown = Path("reports/report.md").read_text()
    assert "| 0.6 (cpu) |" in markdown and "| 0.01 (cuda) |" in markdown and "| 0.001 |" in markdown


def test_bad_latency_file_names_it(tree, p):
    Path("reports/bench").mkdir(parents=True)
    Path(report.LATENCY).write_text(json.dumps({"runs": []}))
    with pytest.raises(UserError, match=re.escape(str(report.LATENCY))):
        report.run(p)


def test_svg_figures(tree, p):
    p["report"]["figure_format"] = "svg"
    report.run(p)
    files = sorted(Path("reports/figures").iterdir())
    assert {f.name for f in files} == {f"{n}.svg" for n in CHARTS} | {f"{n}.jpg" for n in PHOTOS}
    page = Path("reports/report.html").read_text()
    assert page.count('src="data:image/svg+xml;base64,') == len(CHARTS)
    assert page.count('src="data:image/jpeg;base64,') == len(PHOTOS)
    charts = [f for f in files if f.suffix == ".svg"]
    assert all(f.read_text().lstrip().startswith("<?xml") and "<svg" in f.read_text() for f in charts)


@pytest.mark.parametrize("setup", ["empty", "absent"])
def test_no_metrics_is_a_clear_error(tmp_path, monkeypatch, p, setup):
    monkeypatch.chdir(tmp_path)
    if setup == "empty":
        Path("metrics").mkdir()
    with pytest.raises(UserError, match=r"metrics/: no metrics files"):
        report.run(p)
    assert not Path("reports/report.md").exists()


def test_not_a_metrics_file_names_it(tree, p):
    Path("metrics/notes.json").write_text("[1, 2]")
    with pytest.raises(report.ReportError, match=r"metrics/notes\.json: not a metrics file"):
        report.run(p)


def test_provenance_on_top(built):
    """Data source and its size, commit, params hash, date and machine, before the results."""
    out, _ = built
    markdown = (out / "report.md").read_text()
    provenance = markdown.split("## Provenance", 1)[1].split("## ", 1)[0]
    assert markdown.index("## Provenance") < markdown.index("## Leaderboard")
    for line in ("- Data: `folder (photos)`: 5 scenes, 25 images rendered; test split: 5 scenes, 25 images.",
                 "- Code: git commit `0123456789abcdef0123456789abcdef01234567`.",
                 "- Params hash (of params.yaml as parsed when evaluated): `feedfacecafe0042`.",
                 "- Evaluated: 2025-01-02 03:04 UTC to 2025-01-02 03:14 UTC.",  # msec was evaluated later
                 "- Machine: host (Linux x86_64, 2 CPUs), device `cpu`; Python 3.11.7, torch 2.13.0+cpu."):
        assert line in provenance.splitlines(), line


def test_methods_evaluated_apart_are_named(tree, p):
    details = Path("metrics/details/exponet.json")
    data = json.loads(details.read_text())
    data["provenance"].update(params_hash="0000000000000000", git_commit=None)
    details.write_text(json.dumps(data))
    report.run(p)
    provenance = Path("reports/report.md").read_text().split("## Provenance", 1)[1].split("## ", 1)[0]
    assert ("- Params hash (of params.yaml as parsed when evaluated): `feedfacecafe0042` (ev_oracle, msec, identity); "
            "`0000000000000000` (exponet).") in provenance.splitlines()
    assert "not recorded (exponet)" in provenance


def test_small_test_split_is_listed_not_ranked(tree, p):
    """Fewer than 5 test scenes: one clear line, no rank numbers (the table is still ordered by PSNR)."""
    for path in Path("metrics/details").glob("*.json"):
        data = json.loads(path.read_text())
        data["provenance"]["test_scenes"] = 2
        path.write_text(json.dumps(data))
    report.run(p)
    markdown = Path("reports/report.md").read_text()
    assert "> **Too few test scenes to rank the methods:** the test split has 2 scene(s), fewer than 5." in markdown
    assert "Ranked by headline PSNR" not in markdown and "not ranked" in markdown
    assert leaderboard_methods(markdown) == expected_order(tree)
    board = markdown.split("## Leaderboard", 1)[1].split("\n\n", 2)[1]
    assert all(line.startswith("| — |") for line in board.splitlines()[2:])
    assert [r["rank"] for r in json.loads(Path("reports/leaderboard.json").read_text())] == [None] * 4
    page = Path("reports/report.html").read_text()
    assert '<p class="notice"><strong>Too few test scenes to rank the methods:</strong>' in page


def test_grid_methods_by_name(tree, p):
    """report.grid_methods lists the grid's columns; a baseline in the grid gets its worst case shown too."""
    p["report"]["grid_methods"] = ["identity", "ev_oracle"]
    report.run(p)
    markdown = Path("reports/report.md").read_text()
    assert "columns: the input, the methods of `report.grid_methods` (as listed: identity, ev_oracle)" in markdown
    worst = [line for line in markdown.splitlines() if line.startswith("- worst of ")]
    order = sorted(expected_order(tree), key=lambda m: tree[m]["kind"] != "model")  # the models first
    assert [line.split(":")[0] for line in worst] == [f"- worst of {m}" for m in order]
    p["report"]["grid_methods"] = ["msec", "nope"]
    with pytest.raises(report.ReportError, match=r"report\.grid_methods: nope not evaluated .*evaluated: ev_oracle"):
        report.run(p)


def test_missing_details_file_names_it(tree, p):
    Path("metrics/details/msec.json").unlink()
    with pytest.raises(report.ReportError, match=r"metrics/details/msec\.json: missing; the evaluate stage writes it"):
        report.run(p)


def test_cli_report(tree, tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    assert cli.main(["report", "--params", "params.yaml"]) == 0
    assert Path("reports/report.html").exists()
    shutil.rmtree("metrics")
    assert cli.main(["report", "--params", "params.yaml"]) == 1


@pytest.mark.parametrize("key, value", [("dpi", 0), ("dpi", 1.5), ("max_examples", 0), ("figure_format", "jpg"),
                                        ("grid_methods", 0), ("grid_methods", []), ("grid_methods", "best"),
                                        ("colour", 1)])
def test_report_params_validated(p, key, value):
    p["report"][key] = value
    with pytest.raises(params.ParamsError, match=rf"report\.{key}"):
        params.validate(p)


# --- in a real browser ---------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt install chromium)")
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars"]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run([str(CHROMIUM), *BROWSER_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.slow
@needs_chromium
def test_html_renders_in_chromium(built, tmp_path):
    out, tree = built
    page = (out / "report.html").resolve()
    shot = tmp_path / "shot.png"
    done = _chromium(tmp_path, "--window-size=1400,2000", f"--screenshot={shot}", page.as_uri())
    assert shot.exists(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1400, 2000)
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 10, "the screenshot is blank"
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    table = re.search(r'<table id="leaderboard">.*?</table>', dom.stdout, re.DOTALL)
    assert table, "no leaderboard table in the rendered DOM"
    cells = re.findall(r"<td>([^<]+)</td>", table.group(0))
    assert [c for c in cells if c in tree] == expected_order(tree)
    assert dom.stdout.count("<img ") == len(FIGURES)


# --- a real run by DVC -----------------------------------------------------------------------------

MAX_HTML_BYTES = 5_000_000
# `dvc metrics show` with the default methods: Path (the longest default metrics file, plus DVC's 4-space gap)
# and the 24 columns of metrics/NAME.json (8 overall, 3 under, 3 over, 5 EVs x 2), each as wide as its name
# (at most 23 characters, "overall.hist_saturation") or its value at 5 significant digits, plus 4: ~485
# characters. 500 is that plus slack: one column group more (or a string column) does not fit.
MAX_SHOW_LINE = 500
LONGEST_DEFAULT_METRICS = "metrics/inverse_synthesis.json"


def _cheap_dag(params):
    """The bundled photos at the default render size; two baselines, no model."""
    params["train"]["models"] = []
    params["evaluate"]["baselines"] = ["identity", "he"]


@pytest.fixture(scope="module")
def dvc_run(tmp_path_factory):
    """`dvc repro` of the whole DAG in a temporary git + DVC copy, committed; then `evaluate.psnr_cap` lowered
    from 100 to 50, the identity re-evaluated and committed again. Returns the copy and what `dvc metrics show`
    (after the first run) and `dvc metrics diff HEAD~1 HEAD` printed.

    `models/` is made empty by hand: with `train.models: []` no stage writes it, and the report stage depends
    on it."""
    repo = workspace.make(tmp_path_factory.mktemp("dvc"), _cheap_dag)
    (repo / "models").mkdir()
    workspace.run(["dvc", "repro"], repo)
    shown = {"table": workspace.run(["dvc", "metrics", "show"], repo).stdout,
             "json": json.loads(workspace.run(["dvc", "metrics", "show", "--json"], repo).stdout)}
    workspace.run(["git", "add", "-A"], repo)
    workspace.run(["git", "commit", "-qm", "run"], repo)
    workspace.edit_params(repo, lambda p: p["evaluate"].update(psnr_cap=50.0))
    workspace.run(["dvc", "repro", "evaluate_baseline@identity"], repo)
    workspace.run(["git", "add", "-A"], repo)
    workspace.run(["git", "commit", "-qm", "psnr_cap 50"], repo)
    diff = json.loads(workspace.run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json"], repo).stdout)
    return repo, shown, diff


@pytest.mark.slow
def test_dvc_metrics_show_is_numeric_and_short(dvc_run):
    """metrics/NAME.json: the scores only, the same columns for every method, one short line each."""
    repo, shown, _ = dvc_run
    data = {path: entry["data"] for path, entry in shown["json"][""]["data"].items()}
    assert set(data) == {"metrics/identity.json", "metrics/he.json"}

    def leaves(tree, prefix=""):
        out = {}
        for key, value in tree.items():
            out.update(leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
        return out

    columns = {f"overall.{k}" for k in ("psnr", "ssim", "delta_e2000", "hist_luminance", "hist_contrast",
                                        "hist_saturation", "brisque", "niqe")}
    columns |= {f"{g}.{k}" for g in ("under", "over") for k in ("psnr", "ssim", "delta_e2000")}
    columns |= {f"per_ev.{ev}.{k}" for ev in ("-1.5", "-1.0", "0.0", "1.0", "1.5") for k in ("psnr", "ssim")}
    for path, tree in data.items():
        flat = leaves(tree)
        assert set(flat) == columns, path
        assert all(isinstance(v, float) and math.isfinite(v) for v in flat.values()), path
    lines = shown["table"].splitlines()
    assert lines[0].split() == ["Path", *sorted(columns)]
    widest = max(len(path) for path in data)
    assert all(len(line) + len(LONGEST_DEFAULT_METRICS) - widest < MAX_SHOW_LINE for line in lines), \
        max(map(len, lines))
    details = json.loads((repo / "metrics/details/he.json").read_text())  # the rest: beside, not in dvc metrics
    assert {"kind", "n", "noref", "examples", "worst", "provenance", "params", "seconds_per_megapixel"} <= set(details)


@pytest.mark.slow
def test_dvc_metrics_diff_between_commits(dvc_run):
    """Lowering the PSNR cap changes exactly the identity's capped EV 0 mean (its inputs equal their
    references); the other means and the other method's file, which did not rerun, do not show."""
    _, _, diff = dvc_run
    assert diff == {"metrics/identity.json": {"per_ev.0.0.psnr": {"old": 100.0, "new": 50.0, "diff": -50.0}}}


@pytest.mark.slow
def test_real_report_provenance_small_split_and_worst_cases(dvc_run):
    repo, _, _ = dvc_run
    out = repo / "reports"
    page = (out / "report.html").read_bytes()
    assert len(page) < MAX_HTML_BYTES, len(page)
    markdown = (out / "report.md").read_text()
    provenance = markdown.split("## Provenance", 1)[1].split("## ", 1)[0]
    commit = workspace.run(["git", "rev-parse", "HEAD~2"], repo).stdout.strip()  # the commit the run was on
    assert "- Data: `bundled`: 8 scenes, 40 images rendered; test split: 2 scenes, 10 images." in provenance
    assert f"- Code: git commit `{commit}" in provenance  # (-dirty or not: DVC may touch .gitignore)
    evaluated_with = yaml.safe_load(workspace.run(["git", "show", "HEAD~2:params.yaml"], repo).stdout)
    assert (f"- Params hash (of params.yaml as parsed when evaluated): `{tracking.params_hash(evaluated_with)}`."
            in provenance)
    assert re.search(r"^- Evaluated: 20\d\d-\d\d-\d\d \d\d:\d\d UTC", provenance, re.MULTILINE)
    assert re.search(r"^- Machine: .+ CPUs\), device `cpu`; Python 3\.\d+\.\d+, torch ", provenance, re.MULTILINE)
    assert "**Too few test scenes to rank the methods:** the test split has 2 scene(s), fewer than 5." in markdown
    # the worst case of the grid's method (he: the identity is the input column) as a real photo
    worst = json.loads((repo / "metrics/details/he.json").read_text())["worst"]
    assert f"worst of he: {worst['scene']} at EV {report.ev_label(worst['ev'])}" in markdown
    assert (repo / worst["output"]).is_file() and "not found or unreadable" not in markdown
    figure = out / "figures/worst_cases.jpg"
    assert is_jpeg(figure) and base64.b64encode(figure.read_bytes()) in page
    with Image.open(figure) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    blank = (np.abs(pixels - 235) <= 3).all(axis=2).mean()  # the grey of a "missing" / "not recorded" cell
    assert blank < 0.02 and pixels.std() > 30


@pytest.mark.slow
@needs_chromium
def test_real_report_in_chromium(dvc_run, tmp_path):
    """The whole page in a browser: every figure decoded (the photo grids as JPEG); a full-page screenshot."""
    repo, _, _ = dvc_run
    page = (repo / "reports/report.html").resolve()
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    figures = re.findall(r'<figure id="fig-([\w]+)"><img [^>]*src="data:(image/[\w+]+);base64,', dom.stdout)
    assert set(figures) == {("per_ev", "image/png"), ("under_over", "image/png"), ("per_image_psnr", "image/png"),
                            ("qualitative", "image/jpeg"), ("worst_cases", "image/jpeg"),
                            ("luma_histograms", "image/png")}
    shot = tmp_path / "shot.png"
    done = _chromium(tmp_path, "--window-size=1400,7000", f"--screenshot={shot}", page.as_uri())
    assert shot.exists(), done.stderr[-2000:]
    with Image.open(shot) as image:
        hsv = np.asarray(image.convert("HSV"), dtype=np.float64)
    bottom = hsv[hsv.shape[0] // 2:]  # the photo grids are in the lower half: colourful, not blank
    assert (bottom[..., 1] > 80).mean() > 0.05, "no photos in the lower half of the page"


def test_leaderboards_merge_into_one_table_per_dataset(built, tmp_path, monkeypatch, caplog):
    """Every leaderboard row records the dataset and protocol behind it; `expocorr report --merge` writes one
    table per dataset: this run's, a run on other data (its rows' source changed), and rows of an older
    leaderboard that record none."""
    out, _ = built
    rows = json.loads((out / "leaderboard.json").read_text())
    assert {json.dumps(r["dataset"]) for r in rows} == {json.dumps({
        "source": "folder (photos)", "scenes": 5, "images": 25, "test_scenes": 5, "test_images": 25,
        "reference": "reference", "resolution": "full resolution", "ssim": report_data.SSIM_SETTINGS, "psnr_cap": 100.0,
        "protocol": None, "gt_mean": False})}
    monkeypatch.chdir(tmp_path)
    other = [{**r, "psnr": r["psnr"] - 1, "dataset": {**r["dataset"], "source": "msec", "test_images": 50}}
             for r in rows[:2]]
    Path("other.json").write_text(json.dumps(other))
    Path("old.json").write_text(json.dumps([{k: v for k, v in rows[0].items() if k != "dataset"}]))
    mine = str(out / "leaderboard.json")
    assert cli.main(["report", "--merge", mine, "other.json", "old.json", "--out", "merged.md"]) == 0
    text = Path("merged.md").read_text()
    sections = text.split("\n## ")[1:]
    assert [s.splitlines()[0] for s in sections] == ["Dataset: folder (photos)", "Dataset: msec", "Dataset not recorded"]
    methods = [[line.split(" | ")[0].strip("| ") for line in s.splitlines() if line.startswith("| ")][1:]
               for s in sections]
    assert methods == [[r["method"] for r in rows], [r["method"] for r in rows[:2]], [rows[0]["method"]]]
    assert "test split: 5 scenes, 50 images" in sections[1] and f"`{mine}`" in sections[0]
    assert cli.main(["report", "--merge", mine, "other.json", "--out", "merged.html"]) == 0
    assert Path("merged.html").read_text().count("<table") == 2
    with caplog.at_level(logging.ERROR):
        assert cli.main(["report", "--merge", mine, "--out", "merged.txt"]) == 1
        assert cli.main(["report", "--merge", mine]) == 1
    assert "--out merged.txt: must end in .md or .html" in caplog.text and "--merge and --out go together" in caplog.text


@pytest.mark.slow
def test_leaderboards_of_two_real_runs_merge_by_dataset(dvc_run, tmp_path):
    """The DVC run's leaderboard (the bundled photos at 384 px) and a second real run on other data (a folder of
    five photos rendered at 128 px: `expocorr` stage commands, the identity only) merge into two tables."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, load in SCENES.items():
        Image.fromarray(load()).convert("RGB").save(photos / f"{name}.png")

    def other_data(params):
        _cheap_dag(params)
        params["data"].update(source="folder", folder=str(photos))
        params["render"]["max_side"] = 128
        params["evaluate"]["baselines"] = ["identity"]

    other = workspace.make(tmp_path / "other", other_data)
    for cmd in (["download"], ["render"], ["split"], ["evaluate", "--method", "identity"], ["report"]):
        workspace.run(["expocorr", *cmd], other)
    first, second = (str(repo / "reports/leaderboard.json") for repo in (dvc_run[0], other))
    workspace.run(["expocorr", "report", "--merge", first, second, "--out", "merged.md"], tmp_path)
    sections = (tmp_path / "merged.md").read_text().split("\n## ")[1:]
    assert [s.splitlines()[0] for s in sections] == ["Dataset: bundled", f"Dataset: folder ({photos})"]
    assert "resolution: full resolution (test images up to 384 px on the long side)" in sections[0]
    assert "resolution: full resolution (test images up to 128 px on the long side)" in sections[1]
    assert "Rendered: 8 scenes, 40 images" in sections[0] and "Rendered: 5 scenes, 25 images" in sections[1]
    assert [line.split(" | ")[0] for line in sections[1].splitlines() if line.startswith("| identity")] == ["| identity"]
    assert sum(line.startswith(("| identity", "| he")) for line in sections[0].splitlines()) == 2

"""Stage `report`: the leaderboard, figures and a self-contained HTML page from a realistic metrics tree.

The fixture tree is what the evaluate and train stages leave behind, built from real photographs
(scikit-image's astronaut, coffee and chelsea) under synthetic exposure errors, with every metric
actually computed on the images: four methods (two models, a baseline and an oracle baseline).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from skimage.color import deltaE_ciede2000, rgb2lab

from expocorr import cli, params, report
from expocorr.errors import UserError
from expocorr.images import resize_max_side, to_uint8, write_rgb
from expocorr.metrics import psnr, ssim
from expocorr.render import ev_name
from expocorr.tables import write_csv

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
EVS = (-1.5, -1.0, 0.0, 1.0, 1.5)
SCENES = {"astronaut": skdata.astronaut, "coffee": skdata.coffee, "chelsea": skdata.chelsea}
EXAMPLES = [("astronaut", -1.5), ("coffee", -1.0), ("chelsea", 0.0), ("astronaut", 1.0), ("coffee", 1.5)]
PSNR_CAP = 100.0
FIGURES = {"per_ev", "under_over", "per_image_psnr", "training", "qualitative", "luma_histograms"}


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
    return {**{k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ssim", "delta_e2000")}, "n": len(rows)}


def _aggregate(rows: list[dict]) -> dict:
    out = {"overall": _mean(rows), "per_ev": {str(ev): _mean([r for r in rows if r["ev"] == ev]) for ev in EVS}}
    for name, keep in (("under", lambda ev: ev < 0), ("over", lambda ev: ev > 0), ("zero", lambda ev: ev == 0)):
        out[name] = _mean([r for r in rows if keep(r["ev"])])
    return out


def _luma_intersection(a: np.ndarray, b: np.ndarray) -> float:
    ha = np.histogram(a @ [0.299, 0.587, 0.114], 64, (0, 256))[0] / (a.shape[0] * a.shape[1])
    hb = np.histogram(b @ [0.299, 0.587, 0.114], 64, (0, 256))[0] / (b.shape[0] * b.shape[1])
    return float(np.minimum(ha, hb).sum())


def _example(row: dict) -> dict:
    return {k: row[k] for k in ("scene", "ev", "input", "output", "reference", "psnr")}


def build_tree(root: Path, train_logs: bool = True) -> dict[str, dict]:
    """metrics/, results/, data/rendered/images/ and models/*/train_log.csv as the stages write them."""
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
                       "reference": f"data/rendered/images/{scene}/reference.png",
                       "output": f"results/{name}/{scene}_{ev_name(ev)}.png", **_scores(output, reference)}
                row["expert"] = _scores(output, expert)
                rows.append(row)
                hists.append(_luma_intersection(output.astype(float), reference.astype(float)))
                write_rgb(root / row["output"], output)  # the stage keeps only examples + worst; extra files are harmless
        overall_extra = {
            "hist_luminance": float(np.mean(hists)) if name != "exponet" else "not computed",
            "hist_contrast": 0.71 if name != "exponet" else "not computed",
            "hist_saturation": 0.69 if name != "exponet" else "not computed",
            "brisque": 31.5 if name == "msec" else "not computed",
            **{k: "not computed" for k in ("niqe", "lpips", "pi", "inception_score")},
        }
        summary = {"method": name, "kind": kind, "oracle": oracle, "n_images": len(rows), "n_parameters": n_parameters,
                   "headline_reference": "reference", "psnr_cap": PSNR_CAP, **_aggregate(rows)}
        summary["overall"].update(overall_extra)
        summary["references"] = {"reference": {k: v for k, v in _aggregate(rows).items() if k in ("overall", "per_ev")}}
        if name == "msec":
            expert_rows = [{**r["expert"], "ev": r["ev"]} for r in rows]
            summary["references"]["reference_expert_a"] = {
                k: v for k, v in _aggregate(expert_rows).items() if k in ("overall", "per_ev")}
        summary.update({
            "seconds_per_megapixel": {"msec": 0.42, "exponet": 0.2, "identity": 0.001, "ev_oracle": 0.01}[name],
            "params": {"evaluate": {"psnr_cap": PSNR_CAP}},
            "examples": [_example(r) for r in rows if (r["scene"], r["ev"]) in EXAMPLES],
            "worst": _example(min(rows, key=lambda r: r["psnr"])),
        })
        (root / "metrics").mkdir(exist_ok=True)
        (root / f"metrics/{name}.json").write_text(json.dumps(summary, indent=2))
        columns = ["scene", "ev", "input", "reference", "psnr", "ssim", "delta_e2000"]
        write_csv(root / f"metrics/{name}_per_image.csv", rows, columns)
        metrics[name] = summary
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
    assert by_name["msec"]["seconds_per_megapixel_source"] == "metrics/msec.json"
    assert "| baseline (oracle) |" in markdown and "| 433,037 |" in markdown
    assert "| identity | baseline |" in markdown and markdown.count("| — |") >= 2  # baselines have no params


def test_protocol_and_sections(built):
    out, _ = built
    markdown = (out / "report.md").read_text()
    for text in ("σ = 1.5", "data range 255", "no sample-covariance correction", "CIELAB (D65) via scikit-image",
                 "histogram intersection of per-image luminance, contrast and saturation distributions",
                 "capped at 100 dB", "metrics/histogram.py"):
        assert text in markdown, text
    for heading in ("## Leaderboard", "## Per reference", "## Exposure", "## Training", "## Qualitative examples",
                    "## Luminance histograms"):
        assert heading in markdown, heading
    per_reference = markdown.split("## Per reference", 1)[1].split("## ", 1)[0]
    assert "reference_expert_a" in per_reference and "reference (headline)" in per_reference
    assert "| msec |" in per_reference and "| identity |" not in per_reference  # only methods with several references
    assert "worst of msec:" in markdown and "worst of exponet:" in markdown
    assert "worst of identity" not in markdown  # baselines get no worst-case row
    # EV 0 renders equal their reference: the identity scores the cap there, and the report says so
    assert "score the PSNR cap (ev_oracle: 3 of 15 images, identity: 3 of 15 images)" in markdown
    assert "| 100.00 (cap) / 1.0000 |" in markdown


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


def test_figures_are_valid_pngs(built):
    out, _ = built
    names = {f.stem for f in (out / "figures").iterdir()}
    assert names == FIGURES
    for path in (out / "figures").iterdir():
        assert path.suffix == ".png" and is_png(path), path
    with Image.open(out / "figures/qualitative.png") as grid:  # 4 example rows + 2 worst rows, 6 columns
        assert grid.height > 6 * 100 and grid.width > 6 * 100
    markdown = (out / "report.md").read_text()
    for name in FIGURES:
        assert f"](figures/{name}.png)" in markdown


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
    for path in Path("metrics").glob("*.json"):
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
    assert {f.name for f in files} == {f"{n}.svg" for n in FIGURES}
    page = Path("reports/report.html").read_text()
    assert page.count('src="data:image/svg+xml;base64,') == len(FIGURES)
    assert all(f.read_text().lstrip().startswith("<?xml") and "<svg" in f.read_text() for f in files)


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


def test_cli_report(tree, tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    assert cli.main(["report", "--params", "params.yaml"]) == 0
    assert Path("reports/report.html").exists()
    shutil.rmtree("metrics")
    assert cli.main(["report", "--params", "params.yaml"]) == 1


@pytest.mark.parametrize("key, value", [("dpi", 0), ("dpi", 1.5), ("max_examples", 0), ("figure_format", "jpg"),
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

"""The evaluate stage for real: baselines and a trained model on renders of the bundled photos."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import skimage
import yaml
from mlflow.tracking import MlflowClient

import bracketed
import workspace
from expocorr import cli, methods
from expocorr.stages import evaluate
from expocorr.stages.evaluate import example_rows
from expocorr.imaging.images import read_rgb, to_uint8
from expocorr.metrics import NoReference, psnr
from expocorr.tables import read_csv

pytestmark = pytest.mark.slow


def tiny(params):
    params["render"]["max_side"] = 64
    params["train"]["models"] = ["exponet"]
    params["train"]["common"].update(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=32)
    params["evaluate"]["n_examples"] = 2


def write_unpaired(folder):
    """Real photos without references, as a folder such as SICE Part 1 holds them: JPEG and PNG, one in a
    sub-folder, 200 px; a corrupt JPEG and a hidden file among them, one photo past the limit of 3."""
    for name, photo in (("a_astronaut.jpg", "astronaut"), ("c/coffee.png", "coffee"), ("d_chelsea.jpg", "chelsea"),
                        ("e_rocket.jpg", "rocket")):
        rgb = getattr(skimage.data, photo)()
        scale = 200 / max(rgb.shape[:2])
        bracketed.save(folder / name, cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    (folder / "b_broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    (folder / ".hidden.jpg").write_bytes((folder / "a_astronaut.jpg").read_bytes())


UNPAIRED_PHOTOS = ["a_astronaut", "c__coffee", "d_chelsea"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """Data stages, one short training and three evaluations, run once for the module; every
    evaluation also scores an extra set of two real-photo bracketed scenes (`evaluate.extra_sets`) and
    an unpaired set of three real photos (`evaluate.unpaired_sets`, NIQE with the bundled model)."""
    root = tmp_path_factory.mktemp("eval")
    for name in bracketed.PHOTOS[:2]:
        bracketed.write_stack(root / "stacks" / name, name, side=96)
    write_unpaired(root / "unpaired")

    def edit(params):
        tiny(params)
        params["evaluate"]["extra_sets"] = {"brackets": {"folder": str(root / "stacks"), "max_side": 96}}
        params["evaluate"]["unpaired_sets"] = {"real": {"folder": str(root / "unpaired"), "max_side": 160, "limit": 3}}
        params["evaluate"]["noref"]["niqe_params"] = "bundled"

    repo = workspace.make(root, edit)
    for cmd in (["download"], ["render"], ["split"], ["render-extra"], ["train", "--model", "exponet"],
                ["evaluate", "--method", "identity"], ["evaluate", "--method", "clahe"],
                ["evaluate", "--method", "exponet"]):
        workspace.run(["expocorr", *cmd], repo)
    return repo


def scores(repo, method):
    """metrics/METHOD.json: the numbers `dvc metrics` compares."""
    return json.loads((repo / "metrics" / f"{method}.json").read_text())


def summary(repo, method):
    """metrics/METHOD.json and metrics/details/METHOD.json merged (their keys do not overlap)."""
    return {**json.loads((repo / "metrics" / "details" / f"{method}.json").read_text()), **scores(repo, method)}


def leaves(tree: dict) -> list:
    return [v for value in tree.values() for v in (leaves(value) if isinstance(value, dict) else [value])]


def test_metrics_json_has_the_documented_shape(repo):
    m = scores(repo, "identity")
    assert set(m) == {"overall", "under", "over", "per_ev", "extra", "unpaired"}
    assert set(m["per_ev"]) == {"-1.5", "-1.0", "0.0", "1.0", "1.5"}
    assert all(set(group) == {"psnr", "ssim"} for group in m["per_ev"].values())
    for group in ("under", "over"):
        assert set(m[group]) == {"psnr", "ssim", "delta_e2000"}, group
    # BRISQUE computed: a number; LPIPS, PI and the Inception Score not: absent (their reason: details); NIQE
    # computed, but the 64 px test images are smaller than its 96 px block: no value, no mean
    assert set(m["overall"]) == {"psnr", "ssim", "delta_e2000", "hist_luminance", "hist_contrast", "hist_saturation",
                                 "brisque"}
    assert m["unpaired"]["real"].pop("n_images") == 3  # a count; every other leaf a score
    assert all(isinstance(v, float) and math.isfinite(v) for v in leaves(m))

    s = summary(repo, "identity")
    assert s["method"] == "identity" and s["kind"] == "baseline" and s["oracle"] is False
    test_rows = read_csv(repo / "data/splits/test.csv")
    assert s["n_images"] == len(test_rows) == s["n"]["overall"] + s["n_identical_pairs"]
    assert s["n"]["per_ev"] == {ev: len(test_rows) // 5 for ev in m["per_ev"]}
    assert s["noref"]["niqe"].startswith("computed: NIQE with the bundled")
    assert s["noref"]["brisque"].startswith("computed")
    assert s["references"].keys() == {"reference"}
    assert s["seconds_per_megapixel"] >= 0
    assert {"data_source": "bundled", "test_scenes": len({r["scene"] for r in test_rows}),
            "test_images": len(test_rows)}.items() <= s["provenance"].items()
    assert s["provenance"]["rendered_scenes"] == 8 and s["provenance"]["rendered_images"] == 40
    assert len(s["examples"]) == 2 and s["worst"]["psnr"] == min(
        float(r["psnr"]) for r in read_csv(repo / "metrics" / "identity_per_image.csv"))
    for example in s["examples"] + [s["worst"]]:
        assert (repo / example["output"]).is_file()


def test_extra_set_is_scored_like_the_test_split(repo):
    """`expocorr render-extra` renders each registered exposure against its scene's frame nearest mid-grey;
    every evaluate stage scores it: a small numeric group in metrics/NAME.json, counts in the details,
    per-image rows with a `set` column; the reference exposure (input == reference) is left out of the mean."""
    rows = read_csv(repo / "data/extra/brackets/manifest.csv")
    assert {r["scene"] for r in rows} == set(bracketed.PHOTOS[:2]) and len(rows) == 10
    for scene in bracketed.PHOTOS[:2]:  # one stop apart (bracketed.TIMES), 0 at the frame nearest mid-grey
        evs = sorted(float(r["ev"]) for r in rows if r["scene"] == scene)
        assert 0.0 in evs and np.diff(evs).tolist() == [1.0] * 4, evs
    for method in ("identity", "clahe", "exponet"):
        group = scores(repo, method)["extra"]["brackets"]
        assert set(group) == {"psnr", "ssim", "delta_e2000", "under", "over"}, method
        assert set(group["under"]) == set(group["over"]) == {"psnr", "ssim", "delta_e2000"}
        table = read_csv(repo / "metrics/details" / f"{method}_extra.csv")
        assert {r["set"] for r in table} == {"brackets"} and len(table) == 10
        counted = [float(r["psnr"]) for r in table if r["identical_pair"] == "0"]
        assert group["psnr"] == pytest.approx(np.mean(counted), abs=1e-9)
        n = summary(repo, method)["extra_sets"]["brackets"]
        assert (n["n_scenes"], n["n_images"], n["n_identical_pairs"], n["n"]["overall"]) == (2, 10, 2, 8)
    identity = read_csv(repo / "metrics/details/identity_extra.csv")
    for r in identity:  # the identity's output is its input: PSNR of input vs reference, computed here
        a, b = to_uint8(read_rgb(repo / r["input"])), to_uint8(read_rgb(repo / r["reference"]))
        assert (r["identical_pair"] == "1") == (float(r["ev"]) == 0.0) == bool(np.array_equal(a, b))
        if r["identical_pair"] == "0":
            assert float(r["psnr"]) == pytest.approx(psnr(a, b), abs=1e-9)


def test_unpaired_set_gets_no_reference_scores(repo):
    """`expocorr render-extra` takes the first 3 readable photos in path order (recursively; the corrupt one
    skipped and listed, the hidden one passed over), at most 160 px; every evaluate stage records their mean
    BRISQUE and NIQE, per-photo rows and the outputs of the first n_examples photos; the identity's are the inputs'."""
    rows = read_csv(repo / "data/extra/real/manifest.csv")
    assert [r["photo"] for r in rows] == UNPAIRED_PHOTOS
    assert all(max(read_rgb(repo / r["input"]).shape[:2]) == 160 for r in rows)
    sets = json.loads((repo / "data/extra/sets.json").read_text())
    assert sets["brackets"]["kind"] == "bracketed" and sets["real"]["kind"] == "unpaired"
    assert [s["path"].rsplit("/", 1)[1] for s in sets["real"]["skipped"]] == ["b_broken.jpg"]
    noref = NoReference({"brisque": True, "niqe_params": "bundled"})
    inputs = [noref.score(to_uint8(read_rgb(repo / r["input"]))) for r in rows]
    for method in ("identity", "clahe", "exponet"):
        group = scores(repo, method)["unpaired"]["real"]
        assert set(group) == {"brisque", "niqe", "grid", "n_images"} and group["n_images"] == 3, method
        table = read_csv(repo / "metrics/details" / f"{method}_unpaired.csv")
        assert [r["photo"] for r in table] == UNPAIRED_PHOTOS and {r["set"] for r in table} == {"real"}
        for key in ("brisque", "niqe", "grid"):
            assert group[key] == pytest.approx(np.mean([float(r[key]) for r in table]), abs=1e-5)
        assert group["grid"] < 1.5, method  # no printed grid (a faint one: 2.5 levels; tests/test_checkerboard.py)
        examples = summary(repo, method)["unpaired_sets"]["real"]["examples"]
        assert [e["photo"] for e in examples] == UNPAIRED_PHOTOS[:2]  # evaluate.n_examples = 2
        assert all((repo / e["output"]).is_file() for e in examples)
    identity = read_csv(repo / "metrics/details/identity_unpaired.csv")
    for row, own in zip(identity, inputs):
        assert float(row["brisque"]) == pytest.approx(own["brisque"], abs=1e-5)
        assert float(row["niqe"]) == pytest.approx(own["niqe"], abs=1e-5)
        assert float(row["grid"]) == 0.0  # the input against itself
    assert scores(repo, "clahe")["unpaired"]["real"] != scores(repo, "identity")["unpaired"]["real"]


def test_oracle_is_not_scored_on_unpaired_photos(repo, monkeypatch):
    """A lone real photo has no known EV: the oracle cannot run on it, and the set says so instead of a number."""
    monkeypatch.chdir(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    oracle = methods.load_method("inverse_synthesis")
    group, details, table = evaluate.evaluate_unpaired("real", oracle, params, NoReference({"brisque": True}),
                                                       (repo / "unused", repo / "unused"))
    assert group == {} and table == [] and details["status"].startswith("not computed: inverse_synthesis is an oracle")


def test_correct_without_model_picks_the_learned_model_on_the_real_column(repo, tmp_path, monkeypatch, caplog):
    """On these real metrics a baseline leads the brackets column, yet `expocorr correct` without --model
    uses the trained model and says why in one line, quoting the best baseline."""
    learned, baseline = (scores(repo, m)["extra"]["brackets"]["psnr"] for m in ("exponet", "clahe"))
    assert baseline > learned
    photo = tmp_path / "photo.png"
    photo.write_bytes((repo / read_csv(repo / "data/splits/test.csv")[0]["input"]).read_bytes())
    monkeypatch.chdir(repo)
    with caplog.at_level("INFO"):
        assert cli.main(["correct", str(photo), "-o", str(tmp_path / "out")]) == 0
    assert (f"using exponet: best learned model on brackets ({learned:.1f} dB PSNR; clahe {baseline:.1f})"
            in caplog.text)
    assert (tmp_path / "out" / "photo_corrected.png").is_file()


def test_extra_set_errors_name_the_key(repo, tmp_path, monkeypatch, caplog):
    """A folder without a usable scene stops render-extra, a set not rendered stops evaluate before any
    work: one line each, naming the set's key or file."""
    (tmp_path / "empty").mkdir()
    edited = yaml.safe_load((repo / "params.yaml").read_text())
    edited["evaluate"]["extra_sets"] = {"nope": {"folder": str(tmp_path / "empty")}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["render-extra"]) == 1
    assert "render-extra failed: evaluate.extra_sets.nope.folder: " in caplog.text
    monkeypatch.chdir(repo)
    before = (repo / "metrics/identity.json").read_bytes()
    assert cli.main(["evaluate", "--method", "identity", "--params", str(tmp_path / "params.yaml")]) == 1
    assert ("evaluate failed: data/extra/nope/manifest.csv: missing; evaluate.extra_sets names 'nope': run "
            "`expocorr render-extra` first") in caplog.text
    assert (repo / "metrics/identity.json").read_bytes() == before

    (tmp_path / "unreadable").mkdir()
    (tmp_path / "unreadable" / "x.jpg").write_bytes(b"not a photo")
    for folder, message in ((tmp_path / "absent", "is not a folder"), (tmp_path / "unreadable", "no readable photo")):
        edited["evaluate"]["extra_sets"] = {}
        edited["evaluate"]["unpaired_sets"] = {"photos": {"folder": str(folder)}}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
        monkeypatch.chdir(tmp_path)
        caplog.clear()
        assert cli.main(["render-extra"]) == 1
        line = next(r.getMessage() for r in caplog.records if "render-extra failed" in r.getMessage())
        assert line.startswith("render-extra failed: evaluate.unpaired_sets.photos.folder: ") and message in line
        assert "\n" not in line
    edited["evaluate"]["extra_sets"] = {"photos": {"folder": str(tmp_path / "empty")}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    assert cli.main(["render-extra"]) == 1
    assert ("render-extra failed: evaluate.unpaired_sets.photos: also a set of evaluate.extra_sets (both would be "
            "data/extra/photos); rename one") in caplog.text


def test_examples_spread_over_scenes_and_exposures():
    rows = [{"scene": s, "ev": str(ev)} for s in ("a", "b", "c") for ev in (-1.5, -1.0, 0.0, 1.0, 1.5)]
    picked = [(r["scene"], float(r["ev"])) for r in example_rows(rows, 4)]
    assert picked == [("a", -1.5), ("b", 1.5), ("c", -1.0), ("a", 1.5)]
    assert len(example_rows(rows, 20)) == 15 and example_rows(rows, 0) == []


def test_report_shows_each_models_worst_case(repo):
    """`expocorr report` on this real run: the model's worst test pair, as the evaluate stage saved it."""
    workspace.run(["expocorr", "report"], repo)
    worst = summary(repo, "exponet")["worst"]
    markdown = (repo / "reports/report.md").read_text()
    assert f"worst of exponet: {worst['scene']} at EV " in markdown and f"(`{worst['output']}`)" in markdown
    assert (repo / worst["output"]).is_file() and "not found or unreadable" not in markdown
    assert (repo / "reports/figures/worst_cases.jpg").stat().st_size > 0
    # the extra set of real brackets: a column of the leaderboard next to the synthetic test split's
    board = {row["method"]: row for row in json.loads((repo / "reports/leaderboard.json").read_text())}
    for method in ("identity", "clahe", "exponet"):
        assert board[method]["extra"]["brackets"]["psnr"] == scores(repo, method)["extra"]["brackets"]["psnr"]
        assert board[method]["psnr"] == scores(repo, method)["overall"]["psnr"]
    header = next(line for line in markdown.splitlines() if line.startswith("| # |"))
    assert "| PSNR (dB) | brackets PSNR (dB) | SSIM | brackets SSIM |" in header
    assert "bracketed scenes of `evaluate.extra_sets.brackets` (2 scene(s), 10 pair(s))" in markdown
    # the unpaired set: leaderboard columns (JSON and CSV), a section with its table and its grid
    csv_rows = {r["method"]: r for r in read_csv(repo / "reports/leaderboard.csv")}
    for method in ("identity", "clahe", "exponet"):
        real = scores(repo, method)["unpaired"]["real"]
        assert board[method]["unpaired_real_brisque"] == real["brisque"]
        assert board[method]["unpaired_real_niqe"] == real["niqe"]
        assert board[method]["extra_brackets_psnr"] == scores(repo, method)["extra"]["brackets"]["psnr"]
        assert float(csv_rows[method]["unpaired_real_niqe"]) == pytest.approx(real["niqe"], rel=1e-3)
        assert float(csv_rows[method]["extra_brackets_ssim"]) == pytest.approx(
            scores(repo, method)["extra"]["brackets"]["ssim"], rel=1e-3)
    assert "## Real photos without references" in markdown
    assert "| method | real BRISQUE | real NIQE | real grid |" in markdown
    identity = scores(repo, "identity")["unpaired"]["real"]
    assert f"| identity (the inputs) | {identity['brisque']:.2f} | {identity['niqe']:.2f} | 0.00 |" in markdown
    assert "(figures/unpaired_real.jpg)" in markdown and "real: the first 2 photos" in markdown
    grid = repo / "reports/figures/unpaired_real.jpg"
    assert grid.read_bytes()[:3] == b"\xff\xd8\xff"
    html = (repo / "reports/report.html").read_text()
    assert '<table id="unpaired">' in html and 'id="fig-unpaired_real"' in html


def test_identity_scores_match_an_independent_computation(repo):
    """Overall PSNR = mean over the test pairs whose input differs from the reference; EV 0 pairs
    (input == reference) hit the cap and are counted apart."""
    s = summary(repo, "identity")
    values, identical = [], 0
    for row in read_csv(repo / "data/splits/test.csv"):
        a = to_uint8(read_rgb(repo / row["input"]))
        b = to_uint8(read_rgb(repo / row["reference"]))
        if np.array_equal(a, b):
            identical += 1
            continue
        values.append(10 * np.log10(255**2 / np.mean((a.astype(float) - b) ** 2)))
    assert s["n_identical_pairs"] == identical > 0
    assert s["overall"]["psnr"] == pytest.approx(np.mean(values), abs=1e-9)
    assert s["per_ev"]["0.0"]["psnr"] == s["psnr_cap"]
    assert s["overall"]["psnr"] == pytest.approx(
        np.mean([psnr(to_uint8(read_rgb(repo / r["input"])), to_uint8(read_rgb(repo / r["reference"])))
                 for r in read_csv(repo / "data/splits/test.csv") if float(r["ev"]) != 0]), abs=1e-9)


def test_model_metrics_go_into_a_child_of_its_training_run(repo):
    s = summary(repo, "exponet")
    assert s["kind"] == "model" and s["n_parameters"] > 0
    run_id = json.loads((repo / "models/exponet/mlflow_run.json").read_text())["run_id"]
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    children = client.search_runs([client.get_run(run_id).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert [r.info.run_name for r in children] == ["exponet:evaluate"]
    metrics = children[0].data.metrics
    assert metrics["test_psnr"] == pytest.approx(s["overall"]["psnr"])
    assert metrics["test_under_ssim"] == pytest.approx(s["under"]["ssim"])


def test_each_baseline_gets_a_run_of_its_own(repo):
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("expocorr-baselines")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"baseline:identity", "baseline:clahe"}
    assert runs["baseline:clahe"].data.tags["kind"] == "baseline"
    assert runs["baseline:clahe"].data.metrics["test_psnr"] == pytest.approx(summary(repo, "clahe")["overall"]["psnr"])


def test_unknown_method_is_one_clear_error(repo):
    out = workspace.run(["expocorr", "evaluate", "--method", "nope"], repo, check=False)
    assert out.returncode == 1
    assert "unknown method 'nope'" in out.stderr and "Traceback" not in out.stderr


def test_same_params_same_metrics(repo, tmp_path):
    """Evaluating again gives a byte-identical metrics/NAME.json (the timing and the date are details)."""
    before = (repo / "metrics/clahe.json").read_bytes(), summary(repo, "clahe")
    workspace.run(["expocorr", "evaluate", "--method", "clahe"], repo)
    after = (repo / "metrics/clahe.json").read_bytes(), summary(repo, "clahe")
    assert before[0] == after[0]
    for s in (before[1], after[1]):
        s.pop("seconds_per_megapixel"), s["provenance"].pop("evaluated_at")
    assert before[1] == after[1]


def test_oracle_inverts_each_scenes_own_tau_from_a_range(tmp_path):
    """render.tau [lo, hi] (the GAN seed's random highlight clipping): each scene draws its threshold,
    the manifest records it, and inverse_synthesis inverts each scene's own tau."""
    def edit(params):
        tiny(params)
        params["render"]["tau"] = [0.5, 0.9]

    repo = workspace.make(tmp_path, edit)
    for cmd in (["download"], ["render"], ["split"], ["evaluate", "--method", "inverse_synthesis"]):
        workspace.run(["expocorr", *cmd], repo)
    rows = read_csv(repo / "data/splits/test.csv")
    taus = {float(r["tau"]) for r in rows}
    assert all(0.5 <= t <= 0.9 for t in taus)
    for r in rows:  # one tau per scene
        assert {float(q["tau"]) for q in rows if q["scene"] == r["scene"]} == {float(r["tau"])}
    s = summary(repo, "inverse_synthesis")
    assert s["under"]["psnr"] > 35  # the inverse of the synthesis, up to 8-bit quantisation

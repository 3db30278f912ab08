"""The evaluate stage for real: baselines and a trained model on renders of the bundled photos."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

import bracketed
import workspace
from expocorr import cli
from expocorr.evaluate import example_rows
from expocorr.images import read_rgb, to_uint8
from expocorr.metrics import psnr
from expocorr.tables import read_csv

pytestmark = pytest.mark.slow


def tiny(params):
    params["render"]["max_side"] = 64
    params["train"]["models"] = ["exponet"]
    params["train"]["common"].update(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=32)
    params["evaluate"]["n_examples"] = 2


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """Data stages, one short training and three evaluations, run once for the module; every
    evaluation also scores an extra set of two real-photo bracketed scenes (`evaluate.extra_sets`)."""
    root = tmp_path_factory.mktemp("eval")
    for name in bracketed.PHOTOS[:2]:
        bracketed.write_stack(root / "stacks" / name, name, side=96)

    def edit(params):
        tiny(params)
        params["evaluate"]["extra_sets"] = {"brackets": {"folder": str(root / "stacks"), "max_side": 96}}

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
    assert set(m) == {"overall", "under", "over", "per_ev", "extra"}
    assert set(m["per_ev"]) == {"-1.5", "-1.0", "0.0", "1.0", "1.5"}
    assert all(set(group) == {"psnr", "ssim"} for group in m["per_ev"].values())
    for group in ("under", "over"):
        assert set(m[group]) == {"psnr", "ssim", "delta_e2000"}, group
    # BRISQUE computed: a number; NIQE, LPIPS, PI and the Inception Score not: absent (their reason: details)
    assert set(m["overall"]) == {"psnr", "ssim", "delta_e2000", "hist_luminance", "hist_contrast", "hist_saturation",
                                 "brisque"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in leaves(m))

    s = summary(repo, "identity")
    assert s["method"] == "identity" and s["kind"] == "baseline" and s["oracle"] is False
    test_rows = read_csv(repo / "data/splits/test.csv")
    assert s["n_images"] == len(test_rows) == s["n"]["overall"] + s["n_identical_pairs"]
    assert s["n"]["per_ev"] == {ev: len(test_rows) // 5 for ev in m["per_ev"]}
    assert s["noref"]["niqe"].startswith("not computed: ") and s["noref"]["brisque"].startswith("computed")
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

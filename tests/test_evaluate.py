"""The evaluate stage for real: baselines and a trained model on renders of the bundled photos."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

import workspace
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
    """Data stages, one short training and three evaluations, run once for the module."""
    repo = workspace.make(tmp_path_factory.mktemp("eval"), tiny)
    for cmd in (["download"], ["render"], ["split"], ["train", "--model", "exponet"],
                ["evaluate", "--method", "identity"], ["evaluate", "--method", "clahe"],
                ["evaluate", "--method", "exponet"]):
        workspace.run(["expocorr", *cmd], repo)
    return repo


def summary(repo, method):
    return json.loads((repo / "metrics" / f"{method}.json").read_text())


def test_metrics_json_has_the_documented_shape(repo):
    s = summary(repo, "identity")
    assert s["method"] == "identity" and s["kind"] == "baseline" and s["oracle"] is False
    test_rows = read_csv(repo / "data/splits/test.csv")
    assert s["n_images"] == len(test_rows)
    assert set(s["per_ev"]) == {"-1.5", "-1.0", "0.0", "1.0", "1.5"}
    for group in ("overall", "under", "over", "zero"):
        assert {"psnr", "ssim", "delta_e2000", "n"} <= set(s[group]), group
    assert {"hist_luminance", "hist_contrast", "hist_saturation", "brisque"} <= set(s["overall"])
    assert s["overall"]["niqe"] == "not computed" and s["overall"]["lpips"] == "not computed"
    assert s["references"].keys() == {"reference"}
    assert s["seconds_per_megapixel"] >= 0
    assert len(s["examples"]) == 2 and s["worst"]["psnr"] == min(
        float(r["psnr"]) for r in read_csv(repo / "metrics" / "identity_per_image.csv"))
    for example in s["examples"] + [s["worst"]]:
        assert (repo / example["output"]).is_file()


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


def test_model_metrics_go_into_its_training_run(repo):
    s = summary(repo, "exponet")
    assert s["kind"] == "model" and s["n_parameters"] > 0
    run_id = json.loads((repo / "models/exponet/mlflow_run.json").read_text())["run_id"]
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    metrics = client.get_run(run_id).data.metrics
    assert metrics["test_psnr"] == pytest.approx(s["overall"]["psnr"])
    assert metrics["test_ssim_under"] == pytest.approx(s["under"]["ssim"])


def test_each_baseline_gets_a_run_of_its_own(repo):
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("expocorr")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert {"baseline:identity", "baseline:clahe", "exponet"} <= set(runs)
    assert runs["baseline:clahe"].data.tags["kind"] == "baseline"
    assert runs["baseline:clahe"].data.metrics["test_psnr"] == pytest.approx(summary(repo, "clahe")["overall"]["psnr"])


def test_unknown_method_is_one_clear_error(repo):
    out = workspace.run(["expocorr", "evaluate", "--method", "nope"], repo, check=False)
    assert out.returncode == 1
    assert "unknown method 'nope'" in out.stderr and "Traceback" not in out.stderr


def test_same_params_same_metrics(repo, tmp_path):
    """Evaluating again gives byte-identical metrics (timings aside)."""
    before = summary(repo, "clahe")
    workspace.run(["expocorr", "evaluate", "--method", "clahe"], repo)
    after = summary(repo, "clahe")
    before.pop("seconds_per_megapixel"), after.pop("seconds_per_megapixel")
    assert before == after


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

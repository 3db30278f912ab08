"""MLflow tracking for real: `expocorr train` / `expocorr evaluate` in temporary repository copies,
the sqlite store read back with MlflowClient (runs, tags, params, datasets, parents, end times,
artifact locations), a copy of a repository that must leave the original alone, and the README's
`mlflow ui` command serving the repository's runs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import types
import urllib.parse
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

import workspace
from expocorr import tracking
from expocorr.stages.evaluate import outputs
from expocorr.tables import read_csv
from test_mlflow_server import LOOPBACK, free_port, readme_command, serving

pytestmark = pytest.mark.slow

MODEL = "zerodce"
BASELINE = "identity"


def tiny(p):
    """One Zero-DCE epoch of 2 steps on 64 px crops of 96 px renders; one baseline."""
    p["render"]["max_side"] = 96
    p["train"]["models"] = [MODEL]
    p["train"]["common"].update(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=64, sample_every=1)
    p["evaluate"].update(baselines=[BASELINE], n_examples=1)
    p["evaluate"]["noref"]["brisque"] = False


def store(repo: Path, db: str = "mlflow.db") -> MlflowClient:
    return MlflowClient(f"sqlite:///{repo / db}")


def runs(client: MlflowClient, experiment: str) -> dict:
    """The runs of `experiment` by run name."""
    found = client.get_experiment_by_name(experiment)
    return {r.info.run_name: r for r in client.search_runs([found.experiment_id])} if found else {}


def expocorr(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return workspace.run(["expocorr", *args], repo)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """`.repo`: a copy after the data stages, `expocorr train --model zerodce`, then `expocorr evaluate`
    of the model and of a baseline; `.training`: the training run as it was before the evaluation."""
    repo = workspace.make(tmp_path_factory.mktemp("tracked"), tiny)
    for stage in ("download", "render", "split"):
        expocorr(repo, stage)
    expocorr(repo, "train", "--model", MODEL)
    run_id = json.loads((repo / "models" / MODEL / "mlflow_run.json").read_text())["run_id"]
    training = store(repo).get_run(run_id)
    expocorr(repo, "evaluate", "--method", MODEL)
    expocorr(repo, "evaluate", "--method", BASELINE)
    return types.SimpleNamespace(repo=repo, training=training)


@pytest.fixture
def repo(tracked) -> Path:
    return tracked.repo


def test_evaluation_is_a_child_run_and_the_training_run_keeps_its_end_time(repo, tracked):
    before = tracked.training
    model_runs = runs(store(repo), "expocorr")
    assert set(model_runs) == {MODEL, f"{MODEL}:evaluate"}
    after, child = model_runs[MODEL], model_runs[f"{MODEL}:evaluate"]
    assert after.info.run_id == before.info.run_id and after.info.status == "FINISHED"
    assert (after.info.start_time, after.info.end_time) == (before.info.start_time, before.info.end_time)
    assert after.data.metrics == before.data.metrics  # nothing logged into it after training
    assert child.data.tags["mlflow.parentRunId"] == after.info.run_id and child.info.status == "FINISHED"
    assert child.info.start_time >= after.info.end_time
    log = read_csv(repo / "models" / MODEL / "train_log.csv")
    assert after.data.metrics["train_seconds"] == pytest.approx(sum(float(r["seconds"]) for r in log))
    assert after.data.tags["model_sha256"] == child.data.tags["model_sha256"] == sha256(
        repo / "models" / MODEL / "model.pt")


def _split_digest(repo: Path, name: str) -> str:
    """The digest the spec asks for: sha256 of the split's CSV, then of each image file its rows name."""
    csv = repo / "data" / "splits" / f"{name}.csv"
    h = hashlib.sha256(csv.read_bytes())
    for row in read_csv(csv):
        for column in row:
            if column == "input" or column.startswith("reference"):
                h.update(sha256(repo / row[column]).encode())
    return h.hexdigest()[:16]


def test_runs_are_tagged_and_log_comparable_params_and_datasets(repo):
    client = store(repo)
    model_runs, baseline_runs = runs(client, "expocorr"), runs(client, "expocorr-baselines")
    training, child = model_runs[MODEL], model_runs[f"{MODEL}:evaluate"]
    assert set(baseline_runs) == {f"baseline:{BASELINE}"}  # baselines apart from the models' runs
    models = client.get_experiment_by_name("expocorr").experiment_id
    compared = client.search_runs([models], filter_string="tags.stage = 'evaluate'")  # README "Comparing"
    assert [r.info.run_name for r in compared] == [f"{MODEL}:evaluate"]
    baseline = baseline_runs[f"baseline:{BASELINE}"]
    digests = {name: _split_digest(repo, name) for name in ("train", "val", "test")}
    dataset = f"bundled:{tracking.params_hash(digests)}"
    for run, kind, model, stage in ((training, "model", MODEL, "train"), (child, "model", MODEL, "evaluate"),
                                    (baseline, "baseline", BASELINE, "evaluate")):
        tags = run.data.tags
        assert (tags["kind"], tags["model"], tags["stage"], tags["dataset"]) == (kind, model, stage, dataset)
        params = run.data.params
        assert (params["data.source"], params["render.max_side"], params["render.evs"], params["split.seed"]) == \
            ("bundled", "96", "[-1.5, -1.0, 0.0, 1.0, 1.5]", "0")
    shared = {"lr": "0.001", "epochs": "1", "batch_size": "2", "patch_size": "64", "steps_per_epoch": "2",
              "arch.width": "32", "arch.iterations": "8", "train.zerodce.lr": "0.001", "train.common.patch_size": "64"}
    for run in (training, child):
        assert {k: run.data.params[k] for k in shared} == shared
    assert {k: v for k, v in child.data.params.items() if not k.startswith("evaluate.")} == training.data.params
    assert child.data.params["evaluate.psnr_cap"] == baseline.data.params["evaluate.psnr_cap"] == "100.0"
    assert "lr" not in baseline.data.params

    def inputs(run):
        return {(d.dataset.name, d.dataset.digest, d.dataset.source_type, json.loads(d.dataset.source)["uri"],
                 *(t.value for t in d.tags if t.key == "mlflow.data.context")) for d in run.inputs.dataset_inputs}

    assert inputs(training) == {("bundled-train", digests["train"], "local", "data/splits/train.csv", "training"),
                                ("bundled-val", digests["val"], "local", "data/splits/val.csv", "validation")}
    assert inputs(child) == inputs(baseline) == {
        ("bundled-test", digests["test"], "local", "data/splits/test.csv", "testing")}


def test_every_model_logs_the_same_unprefixed_param_names(base):
    names = {}
    for model in base["train"]["models"]:
        logged = tracking.model_params(model, {"common": base["train"]["common"], model: base["train"][model]})
        assert {k[5:] for k in logged if k.startswith("arch.")} == set(base["train"][model]["arch"])
        assert {f"train.{model}.lr", "train.common.patch_size"} <= set(logged)
        names[model] = {k for k in logged if not k.startswith(("arch.", "train."))}
    assert len({frozenset(v) for v in names.values()}) == 1, names
    assert {"lr", "epochs", "batch_size", "patch_size"} <= names[MODEL]
    msec = tracking.model_params("msec", {"common": base["train"]["common"], "msec": base["train"]["msec"]})
    assert msec["patch_size"] == "64,96"  # a curriculum: its stages


def test_metrics_are_the_numeric_leaves_of_the_metrics_file(repo):
    client = store(repo)
    child = runs(client, "expocorr")[f"{MODEL}:evaluate"]
    baseline = runs(client, "expocorr-baselines")[f"baseline:{BASELINE}"]
    for run, method in ((child, MODEL), (baseline, BASELINE)):
        written = json.loads((repo / "metrics" / f"{method}.json").read_text())
        assert run.data.metrics == tracking.metric_leaves(written, "test")
        assert run.data.metrics["test_psnr"] == written["overall"]["psnr"]
        assert run.data.metrics["test_under_psnr"] == written["under"]["psnr"]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        details = outputs(method).get("details")
        assert artifacts == {f"{method}.json", *(["details"] if details and (repo / details).exists() else [])}


def test_metric_leaves_names():
    tree = {"overall": {"psnr": 20.5, "n": 3}, "under": {"psnr": 18.0}, "per_ev": {"-1.5": {"psnr": 17.0}},
            "list": [1, {"x": 2.0}], "flag": True, "name": "x", "empty": None, "nan": float("nan")}
    assert tracking.metric_leaves(tree, "test") == {
        "test_psnr": 20.5, "test_n": 3.0, "test_under_psnr": 18.0, "test_per_ev_-1.5_psnr": 17.0,
        "test_list_0": 1.0, "test_list_1_x": 2.0}


def test_sample_grid_is_labelled_and_shows_under_and_over_exposure_from_several_scenes(repo, monkeypatch):
    from expocorr.stages.train import GRID_HEADER, sample_grid, sample_rows

    monkeypatch.chdir(repo)
    val = read_csv("data/splits/val.csv")
    rows = sample_rows(val)
    assert rows == sample_rows(list(reversed(val)))  # deterministic, whatever the row order
    assert len(rows) == 4 and len({r["scene"] for r in rows}) >= 2
    assert {np.sign(float(r["ev"])) for r in rows} == {-1, 1}
    assert len({(r["scene"], np.sign(float(r["ev"]))) for r in rows}) == len(rows)

    grid = sample_grid(torch.nn.Identity(), rows, torch.device("cpu"), side=128)
    width = grid.shape[1] // 3
    assert grid.shape == (GRID_HEADER + 4 * 128, 3 * width, 3)
    header = grid[:GRID_HEADER]
    assert all((header[:, i * width:(i + 1) * width] > 200).any() for i in range(3))  # a label per column
    for i in range(4):
        line = grid[GRID_HEADER + i * 128:GRID_HEADER + (i + 1) * 128]
        label = line[-18:, :width]
        assert (label > 200).any() and (label.max(axis=2) < 50).mean() > 0.5  # white text on black
        assert np.array_equal(line[:-18, :width], line[:-18, width:2 * width])  # identity: output = input

    training = runs(store(repo), "expocorr")[MODEL]
    logged = Path(training.info.artifact_uri.removeprefix("file://")) / "samples" / "epoch_001.png"
    assert cv2.imread(str(logged)).shape[:2] == grid.shape[:2]


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_copy_of_the_repository_never_writes_into_the_original(repo, tmp_path):
    """`cp -r` of a trained and evaluated repository: evaluating with another store (a fresh clone after
    `dvc pull`, or a changed tracking.uri), evaluating and training with the copied store. Each writes
    its metrics and runs in the copy; the original's files stay byte-identical."""
    original = _tree(repo)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(repo), str(copy)], check=True)
    model_file = copy / "models" / MODEL / "model.pt"
    recorded = json.loads((repo / "models" / MODEL / "mlflow_run.json").read_text())["run_id"]
    (copy / "metrics" / f"{MODEL}.json").unlink()

    workspace.edit_params(copy, lambda p: p["tracking"].update(uri="sqlite:///moved.db"))
    out = expocorr(copy, "evaluate", "--method", MODEL)
    warnings = [line for line in out.stderr.splitlines() if " WARNING expocorr" in line]
    assert len(warnings) == 1 and f"training run {recorded}" in warnings[0], out.stderr
    assert "Traceback" not in out.stderr and (copy / "metrics" / f"{MODEL}.json").exists()
    moved = runs(store(copy, "moved.db"), "expocorr")
    assert set(moved) == {f"{MODEL}:evaluate"}
    run = moved[f"{MODEL}:evaluate"]
    tags = run.data.tags
    assert (tags["model_file"], tags["model_sha256"], tags["training_run"], tags["stage"]) == \
        (f"models/{MODEL}/model.pt", sha256(model_file), recorded, "evaluate")
    assert "mlflow.parentRunId" not in tags and run.data.metrics["test_psnr"] > 0
    assert run.info.artifact_uri.startswith((copy / "mlartifacts").as_uri() + "/")  # beside moved.db

    workspace.edit_params(copy, lambda p: p["tracking"].update(uri=None))
    out = expocorr(copy, "evaluate", "--method", MODEL)
    assert "renamed it 'expocorr (copy: artifacts in" in out.stderr and f"training run {recorded}" in out.stderr
    expocorr(copy, "train", "--model", MODEL)
    assert json.loads((copy / "models" / MODEL / "mlflow_run.json").read_text())["tracking_uri"] == "sqlite:///mlflow.db"

    assert _tree(repo) == original
    client = store(copy)
    here = (copy / "mlartifacts").as_uri()
    experiment = client.get_experiment_by_name("expocorr")
    assert experiment.artifact_location == here
    assert set(runs(client, "expocorr")) == {MODEL, f"{MODEL}:evaluate"}
    assert set(runs(client, f"expocorr (copy: artifacts in {(repo / 'mlartifacts').as_uri()})")) == \
        {MODEL, f"{MODEL}:evaluate"}  # the original's runs, copied with its store
    every = client.search_runs([e.experiment_id for e in client.search_experiments()])
    new = [r for r in every if r.info.run_id not in _run_ids(store(repo))]
    assert len(new) == 2  # the evaluation and the training
    assert all(r.info.artifact_uri.startswith(here + "/") for r in new), [r.info.artifact_uri for r in new]
    models = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert len(models) == 1 and models[0].artifact_location.startswith(here + "/")


def _run_ids(client: MlflowClient) -> set[str]:
    return {r.info.run_id for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}


def test_readme_mlflow_ui_command_serves_the_repositorys_runs_and_artifacts(repo, monkeypatch):
    for key in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NO_PROXY", LOOPBACK)
    port = free_port()
    training = runs(store(repo), "expocorr")[MODEL]
    with serving(readme_command("mlflow ui", port, Path.home()), repo, port) as url:
        served = runs(MlflowClient(url), "expocorr")
        assert set(served) == {MODEL, f"{MODEL}:evaluate"}
        query = urllib.parse.urlencode({"path": "samples/epoch_001.png", "run_uuid": training.info.run_id})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{url}/get-artifact?{query}", timeout=30) as response:
            image = response.read()
    artifacts = Path(training.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(repo / "mlartifacts")
    assert image == (artifacts / "samples" / "epoch_001.png").read_bytes()

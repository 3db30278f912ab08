"""Snakemake and DVC run the same data DAG from one params.yaml, with precise rerun granularity."""

from __future__ import annotations

import pytest
import yaml

import workspace

DATA_OUTPUTS = [
    "data/downloads/index.csv", "data/downloads/skipped.csv", "data/rendered/manifest.csv",
    "data/splits/train.csv", "data/splits/val.csv", "data/splits/test.csv",
]


def _set(path: str, value):
    def edit(params):
        *parents, leaf = path.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value

    return edit


DATA_STAGES = {"download", "render", "split"}


def tiny_training(params):
    """Reduced params for whole-DAG runs: small renders, two short epochs per model."""
    params["render"]["max_side"] = 64
    params["train"]["common"].update(epochs=2, steps_per_epoch=2, batch_size=2, patch_size=32)
    for model in params["train"]["models"]:
        params["train"][model]["epochs"] = None
        params["train"][model]["patch_curriculum"] = None


@pytest.mark.slow
def test_snakemake_data_stages_build_then_plan_precisely(tmp_path):
    repo = workspace.make(tmp_path)
    workspace.run(["snakemake", "--cores", "2", "split"], repo)
    for out in DATA_OUTPUTS:
        assert (repo / out).stat().st_size > 0, out
    assert (repo / "data/rendered/images").is_dir()
    assert "Nothing to be done" in workspace.run(["snakemake", "-n", "--cores", "1", "split"], repo).stdout

    workspace.edit_params(repo, _set("split.seed", 7))
    assert set(workspace.snakemake_plan(repo, "split")) == {"split"}

    workspace.edit_params(repo, _set("render.evs", [-1.0, 0.0, 1.0]))
    assert set(workspace.snakemake_plan(repo, "split")) == {"render", "split"}


@pytest.mark.slow
def test_dvc_data_stages_build_then_plan_precisely(tmp_path):
    repo = workspace.make(tmp_path)
    workspace.run(["dvc", "repro", "split"], repo)
    for out in DATA_OUTPUTS:
        assert (repo / out).stat().st_size > 0, out
    assert workspace.dvc_outdated(repo) & DATA_STAGES == set()

    workspace.edit_params(repo, _set("split.seed", 7))
    assert workspace.dvc_outdated(repo) & DATA_STAGES == {"split"}

    workspace.edit_params(repo, _set("render.evs", [-1.0, 0.0, 1.0]))
    assert workspace.dvc_outdated(repo) & DATA_STAGES == {"render", "split"}


@pytest.mark.slow
def test_engines_produce_identical_data(tmp_path):
    """Both engines call the same commands, so their outputs are byte-identical."""
    snake = workspace.make(tmp_path / "s")
    dvc = workspace.make(tmp_path / "d")
    workspace.run(["snakemake", "--cores", "2", "split"], snake)
    workspace.run(["dvc", "repro", "split"], dvc)
    for out in DATA_OUTPUTS:
        assert (snake / out).read_bytes() == (dvc / out).read_bytes(), out


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["snakemake", "dvc"])
def test_whole_dag_then_one_lr_retrains_one_model(tmp_path, engine):
    """The full DAG runs; afterwards nothing is planned; a change of one model's lr retrains that model only."""
    repo = workspace.make(tmp_path, tiny_training)
    models = yaml.safe_load((repo / "params.yaml").read_text())["train"]["models"]
    if engine == "snakemake":
        workspace.run(["snakemake", "--cores", "2", "--resources", "gpu=1"], repo)
        assert "Nothing to be done" in workspace.run(["snakemake", "-n", "--cores", "1"], repo).stdout
    else:
        workspace.run(["dvc", "repro"], repo)
        assert workspace.dvc_outdated(repo) == set()
    for model in models:
        assert (repo / "models" / model / "model.pt").stat().st_size > 0, model

    workspace.edit_params(repo, _set("train.zerodce.lr", 5e-4))
    if engine == "snakemake":
        assert set(workspace.snakemake_plan(repo)) == {"train@zerodce", "all"}
    else:
        assert workspace.dvc_outdated(repo) == {"train@zerodce"}


def snakemake_name(dvc_stage: str) -> str:
    """The Snakemake job that mirrors a DVC stage: evaluate@X and evaluate_baseline@X are rule evaluate_X."""
    for prefix in ("evaluate@", "evaluate_baseline@"):
        if dvc_stage.startswith(prefix):
            return "evaluate_" + dvc_stage.removeprefix(prefix)
    return dvc_stage


def covers(directories: set[str], files: set[str]) -> bool:
    """Every file lies in one of the directories, and every directory holds one of the files."""
    inside = lambda f, d: f == d or f.startswith(d.rstrip("/") + "/")  # noqa: E731
    return all(any(inside(f, d) for d in directories) for f in files) and all(
        any(inside(f, d) for f in files) for d in directories)


def test_dvc_yaml_matches_snakemake_dag(tmp_path):
    """Stage names, inputs, outputs and commands in dvc.yaml equal those in the Snakemake DAG.

    The one difference is the report stage: DVC cannot expand a list of files into `deps`, so it
    depends on the metrics/ and models/ folders that hold exactly the files Snakemake lists.
    """
    repo = workspace.make(tmp_path)
    plan = workspace.snakemake_plan(repo, "--forceall")
    plan.pop("all")
    stages = {snakemake_name(name): stage for name, stage in workspace.dvc_stages(repo).items()}
    assert set(plan) == set(stages)
    for name, stage in stages.items():
        if name == "report":
            code = {d for d in stage["deps"] if d.startswith("src/")}
            assert plan[name]["input"] & code == code
            assert covers(stage["deps"] - code, plan[name]["input"] - code)
        else:
            assert plan[name]["input"] == stage["deps"], name
        assert plan[name]["output"] == stage["outs"], name
        assert plan[name]["shell"] == stage["cmd"], name


def test_dvc_declares_only_the_params_each_stage_reads(tmp_path):
    stages = workspace.dvc_stages(workspace.make(tmp_path))
    expected: dict[str, set] = {"download": {"data"}, "render": {"render"}, "split": {"split"}}
    models = yaml.safe_load((workspace.REPO / "params.yaml").read_text())["train"]["models"]
    expected |= {f"train@{m}": {"train.common", f"train.{m}"} for m in models}
    expected |= {f"evaluate@{m}": {"evaluate"} for m in models}
    baselines = yaml.safe_load((workspace.REPO / "params.yaml").read_text())["evaluate"]["baselines"]
    expected |= {f"evaluate_baseline@{b}": {"evaluate", "render"} for b in baselines}
    expected["report"] = {"report"}
    assert {name: stage["params"] for name, stage in stages.items()} == expected


def test_snakefile_rejects_invalid_params(tmp_path):
    repo = workspace.make(tmp_path, _set("split.seed", -1))
    proc = workspace.run(["snakemake", "-n", "--cores", "1"], repo, check=False)
    assert proc.returncode != 0
    assert "split.seed: -1 is out of range" in proc.stdout + proc.stderr


def test_snakefile_refuses_config_overrides(tmp_path):
    repo = workspace.make(tmp_path)
    proc = workspace.run(["snakemake", "-n", "--cores", "1", "--config", "foo=1"], repo, check=False)
    assert proc.returncode != 0
    assert "edit params.yaml" in proc.stdout + proc.stderr

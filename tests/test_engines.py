"""Snakemake and DVC run the same data DAG from one params.yaml, with precise rerun granularity."""

from __future__ import annotations

import json

import pytest
import yaml

import bracketed
import workspace
from expocorr.tables import read_csv

DATA_OUTPUTS = [
    "data/downloads/index.csv", "data/downloads/skipped.csv", "data/rendered/manifest.csv",
    "data/rendered/registration.csv", "data/splits/train.csv", "data/splits/val.csv", "data/splits/test.csv",
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


def assert_same_data(a, b):
    """Every data output of repo `a` is byte-identical to repo `b`'s."""
    for out in DATA_OUTPUTS:
        assert (a / out).read_bytes() == (b / out).read_bytes(), out


def e2e_params(params):
    """Reduced params for the whole-DAG run whose models must beat the identity: 128 px renders,
    480 training steps of 64 px crops per paired model (960 for the small ExpoNet, 160 for the VGG-sized
    HDR autoencoder), 40 for each unpaired Zero-DCE; MSEC without its adversarial term (it cost up to 0.6 dB
    on test at this budget; the switch is tested in tests/test_model_msec.py)."""
    params["render"]["max_side"] = 128
    params["train"]["common"].update(epochs=12, steps_per_epoch=40, batch_size=8, patch_size=64, sample_every=12)
    params["train"]["msec"]["patch_curriculum"] = None
    params["train"]["msec"]["arch"]["adv_weight"] = 0.0
    params["train"]["exponet"]["epochs"] = 24
    params["train"]["hdr_autoencoder"]["epochs"] = 4
    for model in ("zerodce", "zerodce_pp"):
        params["train"][model]["epochs"] = 1
    params["evaluate"]["n_examples"] = 2


def smoke_params(params):
    """The same data with a token training budget (1 epoch of 5 steps per model): the whole DAG as
    plumbing, for the second engine."""
    e2e_params(params)
    params["train"]["common"].update(epochs=1, steps_per_epoch=5)
    for model in params["train"]["models"]:
        params["train"][model]["epochs"] = None


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
    assert workspace.dvc_planned(repo) & DATA_STAGES == {"split"}

    workspace.edit_params(repo, _set("render.evs", [-1.0, 0.0, 1.0]))
    assert workspace.dvc_planned(repo) & DATA_STAGES == {"render", "split"}


@pytest.mark.slow
def test_engines_produce_identical_data(tmp_path):
    """Both engines call the same commands, so their outputs are byte-identical."""
    snake = workspace.make(tmp_path / "s")
    dvc = workspace.make(tmp_path / "d")
    workspace.run(["snakemake", "--cores", "2", "split"], snake)
    workspace.run(["dvc", "repro", "split"], dvc)
    assert_same_data(snake, dvc)


@pytest.mark.slow
def test_stack_source_in_both_engines(tmp_path):
    """`data.source: stacks` (bracketed scenes built from real photos, one exposure misaligned): both engines
    build byte-identical data, registration table included; a `render.stacks.register` change reruns render
    and split, not download; a `data.stacks` change reruns download too."""
    folder = tmp_path / "stacks"
    for name in bracketed.PHOTOS[:3]:
        bracketed.write_stack(folder / name, name, side=128, warps={0: bracketed.known_warp((128, 128), 1.0, (2, 1))})

    def stacks_source(params):
        params["data"].update(source="stacks", folder=str(folder))
        params["render"]["max_side"] = 96

    snake, dvc = workspace.make(tmp_path / "s", stacks_source), workspace.make(tmp_path / "d", stacks_source)
    workspace.run(["snakemake", "--cores", "2", "split"], snake)
    workspace.run(["dvc", "repro", "split"], dvc)
    assert_same_data(snake, dvc)
    assert {row["source"] for row in read_csv(snake / "data/rendered/manifest.csv")} == {"stack"}
    assert len(read_csv(snake / "data/rendered/registration.csv")) == 15

    for repo in (snake, dvc):
        workspace.edit_params(repo, _set("render.stacks.register.threshold", 0.9))
    assert set(workspace.snakemake_plan(snake, "split")) == {"render", "split"}
    assert workspace.dvc_planned(dvc) & DATA_STAGES == {"render", "split"}
    for repo in (snake, dvc):
        workspace.edit_params(repo, _set("data.stacks.preset", "fairchild"))
    assert set(workspace.snakemake_plan(snake, "split")) == DATA_STAGES
    assert workspace.dvc_planned(dvc) & DATA_STAGES == DATA_STAGES


PAIRED = ["exponet", "exponet_double", "msec", "hdr_autoencoder", "exposure_gan"]


@pytest.fixture(scope="module")
def whole_dag(tmp_path_factory):
    """The whole DAG from scratch in two temporary copies: Snakemake with the training budget under
    which every paired model must beat the identity, DVC with a token one (the stage commands are the
    same; the CPU time of a second real training is what the suite cannot afford). One OpenMP thread
    per job: beside the other test worker, a training on two threads took three to five times its idle wall time."""
    repos = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        for engine, command, edit in (("snakemake", ["snakemake", "--cores", "2", "--resources", "gpu=1"], e2e_params),
                                      ("dvc", ["dvc", "repro"], smoke_params)):
            repos[engine] = workspace.make(tmp_path_factory.mktemp(engine), edit)
            workspace.run(command, repos[engine], timeout=3600)
    return repos


def _metrics(repo):
    return {p.stem: json.loads(p.read_text()) for p in sorted((repo / "metrics").glob("*.json"))}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["snakemake", "dvc"])
def test_whole_dag_end_to_end(whole_dag, engine):
    """download → … → report: every method scored and in the report, and a rerun plans nothing."""
    repo = whole_dag[engine]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    methods = params["train"]["models"] + params["evaluate"]["baselines"]
    if engine == "snakemake":
        assert "Nothing to be done" in workspace.run(["snakemake", "-n", "--cores", "1"], repo).stdout
    else:
        assert workspace.dvc_planned(repo) == set()
    board = {row["method"]: row for row in json.loads((repo / "reports/leaderboard.json").read_text())}
    assert set(board) == set(methods)
    html = (repo / "reports/report.html").read_text()
    assert set(_metrics(repo)) == set(methods)
    assert all(method in html for method in methods)


@pytest.mark.slow
def test_every_learned_paired_model_beats_the_identity(whole_dag):
    """The honesty check that training works: on validation during training, and on the test split."""
    repo = whole_dag["snakemake"]
    psnr = {method: s["overall"]["psnr"] for method, s in _metrics(repo).items()}
    for model in PAIRED:
        log = read_csv(repo / "models" / model / "train_log.csv")
        assert max(float(r["val_psnr"]) for r in log) > float(log[0]["val_psnr_identity"]), model
    for model in PAIRED:
        assert psnr[model] > psnr["identity"], \
            f"{model} ({psnr[model]:.2f} dB) does not beat the identity ({psnr['identity']:.2f} dB) on the test split"


@pytest.mark.slow
def test_both_engines_score_the_baselines_identically(whole_dag):
    """Same data params, two fresh directories, one per engine: identical data and baseline metrics,
    timings aside (identical training across runs: tests/test_train.py)."""
    runs = [_metrics(repo) for repo in whole_dag.values()]
    baselines = yaml.safe_load((whole_dag["dvc"] / "params.yaml").read_text())["evaluate"]["baselines"]
    for summaries in runs:
        for summary in summaries.values():
            summary.pop("seconds_per_megapixel")
    assert {b: runs[0][b] for b in baselines} == {b: runs[1][b] for b in baselines}
    assert_same_data(whole_dag["snakemake"], whole_dag["dvc"])


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["snakemake", "dvc"])
def test_one_lr_change_reruns_its_model_only(whole_dag, engine):
    """Changing train.zerodce.lr makes exactly its training, its evaluation and the report out of
    date; a report.* change only the report."""
    repo = whole_dag[engine]
    lr = yaml.safe_load((repo / "params.yaml").read_text())["train"]["zerodce"]["lr"]
    workspace.edit_params(repo, _set("train.zerodce.lr", lr / 2))
    if engine == "snakemake":
        assert set(workspace.snakemake_plan(repo)) == {"train@zerodce", "evaluate_zerodce", "report", "all"}
    else:
        assert workspace.dvc_planned(repo) == {"train@zerodce", "evaluate@zerodce", "report"}
    workspace.edit_params(repo, _set("train.zerodce.lr", lr))
    workspace.edit_params(repo, _set("report.dpi", 90))
    if engine == "snakemake":
        assert set(workspace.snakemake_plan(repo)) == {"report", "all"}
    else:
        assert workspace.dvc_planned(repo) == {"report"}


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

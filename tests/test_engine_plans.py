"""Snakemake and DVC run the same data DAG from one params.yaml, with precise rerun granularity: the data
stages, the DAGs declared alike, params checked, `dvc exp run -S`, the real-photo recipe (the whole DAG:
tests/test_engines.py)."""

from __future__ import annotations

import re

import pytest
import skimage.data
import yaml
from PIL import Image

import bracketed
import workspace
from expocorr import params
from expocorr.tables import read_csv


@pytest.mark.slow
def test_snakemake_data_stages_build_then_plan_precisely(tmp_path):
    repo = workspace.make(tmp_path)
    workspace.run(["snakemake", "--cores", "2", "split"], repo)
    for out in workspace.DATA_OUTPUTS:
        assert (repo / out).stat().st_size > 0, out
    assert (repo / "data/rendered/images").is_dir()
    assert "Nothing to be done" in workspace.run(["snakemake", "-n", "--cores", "1", "split"], repo).stdout

    workspace.edit_params(repo, workspace.setter("split.seed", 7))
    assert set(workspace.snakemake_plan(repo, "split")) == {"split"}

    workspace.edit_params(repo, workspace.setter("render.evs", [-1.0, 0.0, 1.0]))
    assert set(workspace.snakemake_plan(repo, "split")) == {"render", "split"}


@pytest.mark.slow
def test_dvc_data_stages_build_then_plan_precisely(tmp_path):
    repo = workspace.make(tmp_path)
    workspace.run(["dvc", "repro", "split"], repo)
    for out in workspace.DATA_OUTPUTS:
        assert (repo / out).stat().st_size > 0, out
    assert workspace.dvc_outdated(repo) & workspace.DATA_STAGES == set()

    workspace.edit_params(repo, workspace.setter("split.seed", 7))
    assert workspace.dvc_planned(repo) & workspace.DATA_STAGES == {"split"}

    workspace.edit_params(repo, workspace.setter("render.evs", [-1.0, 0.0, 1.0]))
    assert workspace.dvc_planned(repo) & workspace.DATA_STAGES == {"render", "split"}


@pytest.mark.slow
def test_engines_produce_identical_data(tmp_path):
    """Both engines call the same commands, so their outputs are byte-identical."""
    snake = workspace.make(tmp_path / "s")
    dvc = workspace.make(tmp_path / "d")
    workspace.run(["snakemake", "--cores", "2", "split"], snake)
    workspace.run(["dvc", "repro", "split"], dvc)
    workspace.assert_same_data(snake, dvc)


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
    workspace.assert_same_data(snake, dvc)
    assert {row["source"] for row in read_csv(snake / "data/rendered/manifest.csv")} == {"stack"}
    assert len(read_csv(snake / "data/rendered/registration.csv")) == 15

    for repo in (snake, dvc):
        workspace.edit_params(repo, workspace.setter("render.stacks.register.threshold", 0.9))
    assert set(workspace.snakemake_plan(snake, "split")) == {"render", "split"}
    assert workspace.dvc_planned(dvc) & workspace.DATA_STAGES == {"render", "split"}
    for repo in (snake, dvc):
        workspace.edit_params(repo, workspace.setter("data.stacks.preset", "fairchild"))
    assert set(workspace.snakemake_plan(snake, "split")) == workspace.DATA_STAGES
    assert workspace.dvc_planned(dvc) & workspace.DATA_STAGES == workspace.DATA_STAGES


PUBLISHED = {name: {"preset": name} for name in ("zerodce-official", "zerodce_pp-official")}  # params-paper.yaml's


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


def with_external(tmp_path):
    """An edit naming a folder of another program's outputs (`evaluate.external`), which exists."""
    folder = tmp_path / "their outputs"
    folder.mkdir()
    return workspace.setter("evaluate.external", {"theirs": str(folder)})


def with_published(tmp_path):
    """`with_external`'s edit, and both published checkpoints of params-paper.yaml in `pretrained`."""
    external = with_external(tmp_path)
    return lambda p: (external(p), p.update(pretrained=PUBLISHED))


def test_dvc_yaml_matches_snakemake_dag(tmp_path):
    """Stage names, inputs, outputs and commands in dvc.yaml equal those in the Snakemake DAG, an external
    method's (`evaluate_external@NAME`) included.

    The one difference is the report stage: DVC cannot expand a list of files into `deps`, so it
    depends on the metrics/ and models/ folders that hold exactly the files Snakemake lists.
    """
    repo = workspace.make(tmp_path, with_published(tmp_path))
    plan = workspace.snakemake_plan(repo, "--forceall")
    plan.pop("all")
    assert {"pretrained@zerodce-official", "evaluate_pretrained@zerodce_pp-official"} <= set(plan)
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
    stages = workspace.dvc_stages(workspace.make(tmp_path, with_published(tmp_path)))
    expected: dict[str, set] = {"download": {"data"}, "render": {"render"}, "split": {"split"},
                                "render_extra": {"evaluate.extra_sets", "evaluate.unpaired_sets"}}
    models = yaml.safe_load((workspace.REPO / "params.yaml").read_text())["train"]["models"]
    expected |= {f"train@{m}": {"train.common", "train.plugins", f"train.{m}"} for m in models}
    scoring = {f"evaluate.{key}" for key in params.EVALUATE_PROTOCOL}  # not evaluate.baselines nor .external
    expected |= {f"evaluate@{m}": scoring for m in models}
    expected |= {f"pretrained@{name}": {f"pretrained.{name}"} for name in PUBLISHED}
    expected |= {f"evaluate_pretrained@{name}": scoring for name in PUBLISHED}
    baselines = yaml.safe_load((workspace.REPO / "params.yaml").read_text())["evaluate"]["baselines"]
    expected |= {f"evaluate_baseline@{b}": scoring | {"render"} for b in baselines}
    expected["evaluate_external@theirs"] = scoring | {"evaluate.external.theirs"}
    expected["report"] = {"report"}
    assert {name: stage["params"] for name, stage in stages.items()} == expected


def test_snakefile_rejects_invalid_params(tmp_path):
    repo = workspace.make(tmp_path, workspace.setter("split.seed", -1))
    proc = workspace.run(["snakemake", "-n", "--cores", "1"], repo, check=False)
    assert proc.returncode != 0
    assert "split.seed: -1 is out of range" in proc.stdout + proc.stderr


def test_snakefile_refuses_config_overrides(tmp_path):
    repo = workspace.make(tmp_path)
    proc = workspace.run(["snakemake", "-n", "--cores", "1", "--config", "foo=1"], repo, check=False)
    assert proc.returncode != 0
    assert "edit params.yaml" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_dvc_exp_run_set_param_changes_only_its_line(tmp_path):
    """`dvc exp run -S split.seed=7 split` rewrites params.yaml (ruamel.yaml, dvc/utils/hydra.py): params.yaml
    is written in the layout DVC writes back, so only the line of split.seed changes, comments kept."""
    repo = workspace.make(tmp_path)
    before = (repo / "params.yaml").read_text().splitlines()
    workspace.run(["dvc", "exp", "run", "-S", "split.seed=7", "split"], repo)
    after = (repo / "params.yaml").read_text().splitlines()
    assert len(after) == len(before)
    assert [(a, b) for a, b in zip(before, after) if a != b] == [("  seed: 0", "  seed: 7")]
    assert (repo / "data/splits/test.csv").stat().st_size > 0  # the experiment ran split


# The keys params-real.yaml sets apart from params.yaml (README "The real-photo recipe").
REAL_RECIPE = {
    "data.source": "folder", "render.max_side": 256, "render.realistic.enabled": True, "render.realistic.key": 0.18,
    "train.exponet.arch.upsample": "resize", "train.exponet_double.arch.upsample": "resize",
    "train.exposure_gan.arch.g_fov": 140,
    "split.fractions.train": 0.8, "split.fractions.val": 0.1, "split.fractions.test": 0.1,
    "train.common.epochs": 10, "train.common.steps_per_epoch": 40, "train.common.patch_size": 256,
    **{f"train.{m}.sampling": "resize" for m in ("exponet", "exponet_double", "msec", "hdr_autoencoder", "exposure_gan")},
    "train.msec.patch_curriculum": None, "train.msec.epochs": 5, "train.hdr_autoencoder.epochs": 2,
    "train.zerodce.epochs": 5, "train.zerodce_pp.epochs": 5, "train.hdr_autoencoder.patch_curriculum": [[0, 128]],
    "train.zerodce.patch_curriculum": [[0, 64]], "train.zerodce_pp.patch_curriculum": [[0, 64]], "train.exposure_gan.epochs": 6,
}


def _leaves(tree, prefix=""):
    if isinstance(tree, dict) and tree:
        return {k: v for key, sub in tree.items() for k, v in _leaves(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


@pytest.mark.slow
def test_real_photo_recipe_as_documented(tmp_path):
    """README: `cp params-real.yaml params.yaml`, set data.folder, run. The recipe differs from the default
    in its documented keys only; Snakemake builds its realistic renders of the folder (5 per photo) and
    plans every model's training on them."""
    default, real = (_leaves(yaml.safe_load((workspace.REPO / name).read_text()))
                     for name in ("params.yaml", "params-real.yaml"))
    assert set(real) == set(default)
    assert {k: v for k, v in real.items() if v != default[k]} == REAL_RECIPE
    folder = tmp_path / "my photos"
    folder.mkdir()
    for name in bracketed.PHOTOS:  # real photos (scikit-image's)
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.jpg")
    repo = workspace.make(tmp_path)
    text = (repo / "params-real.yaml").read_text()
    (repo / "params.yaml").write_text(re.sub(r"(?m)^  folder: +#", f"  folder: {folder}  #", text, count=1))
    workspace.run(["snakemake", "--cores", "2", "split"], repo)
    rows = read_csv(repo / "data/rendered/manifest.csv")
    assert {r["scene"] for r in rows} == set(bracketed.PHOTOS)
    assert len([r for r in rows if float(r["ev"]) != 0]) >= 4 * len(bracketed.PHOTOS)
    planned = workspace.snakemake_plan(repo)
    assert {f"train@{m}" for m in yaml.safe_load(text)["train"]["models"]} <= set(planned)

"""A model from outside expocorr (README "Add a model"): the README's own plugin module and params section,
validated like a built-in, loaded from train.plugins or an entry point, and run through both engines."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

import workspace
from expocorr import methods, params, plugins
from expocorr.models.registry import ARCH_SCHEMAS, MODELS
from expocorr.tables import read_csv

EXPOCORR = Path(sys.executable).parent / "expocorr"
PLUGIN = "tiny_gain"  # the README's example: module plugins/tiny_gain.py registering model tiny_gain


def _readme_example() -> tuple[str, dict]:
    """The plugin module (the first python block) and the params lines (the first yaml block) of README
    "Add a model"."""
    text = (workspace.REPO / "README.md").read_text()
    section = text.split("\n## Add a model\n", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    lines = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1))
    return code, lines


def write_plugin(folder: Path) -> Path:
    """The README's plugin module written to `folder`/tiny_gain.py (a folder to put on PYTHONPATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{PLUGIN}.py").write_text(_readme_example()[0])
    return folder


def with_plugin(p: dict, models: list[str] | None = None) -> dict:
    """`p` with the README's train lines (train.models: `models`, default the README's)."""
    train = copy.deepcopy(_readme_example()[1]["train"])
    p["train"].update(train)
    if models is not None:
        p["train"]["models"] = models
    return p


@pytest.fixture
def unregister():
    """Forget the models registered, the plugin modules imported and the entry points loaded during the test
    (the registry is global)."""
    models, schemas = dict(MODELS), dict(ARCH_SCHEMAS)
    yield
    for registry, before in ((MODELS, models), (ARCH_SCHEMAS, schemas)):
        registry.clear()
        registry.update(before)
    for module in (PLUGIN, "bad_plugin"):
        sys.modules.pop(module, None)
    plugins.load_entry_points.cache_clear()


def test_plugin_section_is_validated_like_a_builtin(p, tmp_path, monkeypatch, unregister):
    monkeypatch.syspath_prepend(str(write_plugin(tmp_path / "plugins")))
    good = params.validate(with_plugin(p))
    assert PLUGIN in good["train"]["models"] and MODELS[PLUGIN].name == PLUGIN
    cases = [
        (lambda q: q["train"][PLUGIN]["arch"].update(width=100), r"train\.tiny_gain\.arch\.width: 100 is out of range"),
        (lambda q: q["train"][PLUGIN]["arch"].update(depth=2), r"train\.tiny_gain\.arch\.depth: unknown key"),
        (lambda q: q["train"][PLUGIN].pop("lr"), r"train\.tiny_gain\.lr: missing required key"),
        (lambda q: q["train"][PLUGIN].update(select="first"), r"train\.tiny_gain\.select: 'first' is not allowed"),
        (lambda q: q["train"].pop(PLUGIN), r"train\.tiny_gain: missing required key"),
        (lambda q: q["train"]["models"].append("tiny_gian"), r"train\.models\.\d: 'tiny_gian' is not allowed"),
    ]
    for edit, message in cases:
        q = copy.deepcopy(good)
        edit(q)
        with pytest.raises(params.ParamsError, match=r"^params\.yaml: " + message):
            params.validate(q)
    q = copy.deepcopy(good)  # not in train.models: the section may go, the built-ins' may not
    q["train"]["models"].remove(PLUGIN)
    del q["train"][PLUGIN]
    params.validate(q)
    del q["train"]["zerodce"]
    with pytest.raises(params.ParamsError, match=r"train\.zerodce: missing required key"):
        params.validate(q)


def test_unimportable_plugin_is_one_line_naming_it(tmp_path):
    """`expocorr <stage>` with a train.plugins module that is not there: exit 1, one error line naming the
    params file, train.plugins and the module."""
    text = (workspace.REPO / "params.yaml").read_text()
    assert text.count("  plugins: []") == 1
    (tmp_path / "params.yaml").write_text(text.replace("  plugins: []", "  plugins:\n  - no_such.plugin"))
    proc = subprocess.run([str(EXPOCORR), "split"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert re.search(r"split failed: params\.yaml: train\.plugins: cannot import plugin module 'no_such\.plugin' "
                     r"\(ModuleNotFoundError: No module named 'no_such'\)", errors[0]), errors[0]


def test_plugin_registering_a_taken_name_is_refused(p, tmp_path, monkeypatch):
    (tmp_path / "dup_plugin.py").write_text(
        "from torch import nn\nfrom expocorr.models import register\n\n\n@register('zerodce')\nclass Z(nn.Module):\n"
        "    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    p["train"]["plugins"] = ["dup_plugin"]
    with pytest.raises(params.ParamsError, match=r"train\.plugins: cannot import plugin module 'dup_plugin' \("
                       r"ValueError: model 'zerodce' registered twice \(expocorr\.models\.zerodce and dup_plugin\)"):
        params.validate(p)
    assert MODELS["zerodce"].__module__ == "expocorr.models.zerodce"


@pytest.mark.parametrize("name, arch_schema, message", [
    ("Tiny-Gain", None, r"model 'Tiny-Gain' \(registered by bad_plugin\): a model name is 1-40 lower-case letters"),
    ("identity", None, r"model 'identity' \(registered by bad_plugin\): 'identity' is taken"),
    ("plugins", None, r"model 'plugins' \(registered by bad_plugin\): 'plugins' is taken"),
    ("odd_arch", {"type": "integr"}, r"model 'odd_arch' \(registered by bad_plugin\): arch_schema is not a valid JSON"),
], ids=["name", "baseline", "train-key", "arch-schema"])
def test_unusable_plugin_models_are_refused(p, tmp_path, monkeypatch, unregister, name, arch_schema, message):
    (tmp_path / "bad_plugin.py").write_text(
        f"from torch import nn\nfrom expocorr.models import register\n\n\n@register({name!r}, arch_schema={arch_schema!r})\n"
        "class M(nn.Module):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    p["train"]["plugins"] = ["bad_plugin"]
    with pytest.raises(params.ParamsError, match=r"^params\.yaml: " + message):
        params.validate(p)


def test_entry_point_registers_the_model_without_train_plugins(p, tmp_path, monkeypatch, unregister):
    """An installed distribution's `expocorr.models` entry point (here a dist-info folder on sys.path, as pip
    would write it) registers the model for validation and for loading it by name (evaluate, correct)."""
    site = write_plugin(tmp_path / "site")
    dist = site / "tiny_gain-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-gain\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{plugins.GROUP}]\n{PLUGIN} = {PLUGIN}\n")
    monkeypatch.syspath_prepend(str(site))
    plugins.load_entry_points.cache_clear()
    q = with_plugin(p)
    q["train"]["plugins"] = []
    assert params.validate(q)["train"]["models"][-1] == PLUGIN
    monkeypatch.chdir(tmp_path)  # no models/ here: found by name, then no file
    with pytest.raises(methods.MethodError, match=r"models/tiny_gain/model\.pt'?: no such model file"):
        methods.load_method(PLUGIN)


@pytest.mark.slow
def test_plugin_model_through_both_engines(tmp_path, monkeypatch):
    """The README's plugin on PYTHONPATH, train.models [tiny_gain] and the identity: `snakemake --cores 2` and
    `dvc repro` in two copies train (1 epoch of 5 steps), evaluate and report it; nothing is left to run, and a
    train.plugins change plans its training again; `expocorr correct --model tiny_gain` corrects a photo with it."""
    from test_engines import smoke_params

    def edit(q):
        smoke_params(q)
        with_plugin(q, models=[PLUGIN])
        q["train"][PLUGIN]["epochs"] = None
        q["evaluate"]["baselines"] = ["identity"]

    monkeypatch.setenv("PYTHONPATH", str(write_plugin(tmp_path / "plugins")))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    repos = {"snakemake": workspace.make(tmp_path / "s", edit), "dvc": workspace.make(tmp_path / "d", edit)}
    commands = {"snakemake": ["snakemake", "--cores", "2"], "dvc": ["dvc", "repro"]}
    with ThreadPoolExecutor(2) as pool:
        for run in [pool.submit(workspace.run, commands[e], repos[e], timeout=1800) for e in repos]:
            run.result()
    for engine, repo in repos.items():
        log = read_csv(repo / "models" / PLUGIN / "train_log.csv")
        assert len(log) == 1 and math.isfinite(float(log[0]["val_psnr"])), engine
        score = json.loads((repo / "metrics" / f"{PLUGIN}.json").read_text())["overall"]["psnr"]
        assert math.isfinite(score), engine
        board = {row["method"]: row for row in json.loads((repo / "reports/leaderboard.json").read_text())}
        assert set(board) == {PLUGIN, "identity"} and board[PLUGIN]["kind"] == "model", engine
        assert PLUGIN in (repo / "reports/report.html").read_text(), engine
    assert "Nothing to be done" in workspace.run(["snakemake", "-n", "--cores", "1"], repos["snakemake"]).stdout
    assert workspace.dvc_planned(repos["dvc"]) == set()
    (tmp_path / "plugins" / "more_models.py").write_text('"""A plugin module registering nothing yet."""\n')
    for repo in repos.values():  # another plugin module may re-register a name: every training reruns
        workspace.edit_params(repo, workspace.setter("train.plugins", [PLUGIN, "more_models"]))
    assert set(workspace.snakemake_plan(repos["snakemake"])) == {f"train@{PLUGIN}", f"evaluate_{PLUGIN}", "report", "all"}
    assert workspace.dvc_planned(repos["dvc"]) == {f"train@{PLUGIN}", f"evaluate@{PLUGIN}", "report"}

    repo = repos["snakemake"]
    photo = min((repo / "data/rendered/images").rglob("*.png"))
    workspace.run([str(EXPOCORR), "correct", "--model", PLUGIN, str(photo), "-o", "corrected"], repo)
    assert (repo / "corrected" / f"{photo.stem}_corrected.png").stat().st_size > 0

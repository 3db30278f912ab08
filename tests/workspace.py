"""A temporary copy of the repository in which the real engines run (git + DVC initialised)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def env() -> dict:
    """The environment for engine runs: the venv's commands first, no analytics, quiet git."""
    out = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # mlflow.set_tracking_uri sets it
    out["PATH"] = f"{BIN}{os.pathsep}{out.get('PATH', '')}"
    out.update(DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return out


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a command in `cwd`, capturing text output; on failure show it."""
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def make(tmp_path: Path, edit=None) -> Path:
    """Copy the repository's tracked and unignored files (tests excluded) into a fresh git repo.

    `edit(params)` may change the params dict before it is written to the copy's params.yaml.
    """
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True,
        text=True, check=True,
    ).stdout.split()
    dest = tmp_path / "repo"
    for name in files:
        src = REPO / name
        if name.startswith("tests/") or not (src.exists() or src.is_symlink()):
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    if edit is not None:
        edit_params(dest, edit)
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "copy"], dest)
    return dest


def edit_params(repo: Path, edit) -> None:
    """Apply `edit(params)` to repo/params.yaml."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    edit(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def snakemake_plan(repo: Path, *extra: str) -> dict[str, dict]:
    """Jobs Snakemake would run (dry run) as DVC names them (`rule`, or `rule@wildcard`),
    each with its input, output and shell command."""
    out = run(["snakemake", "-n", "--cores", "1", *extra], repo).stdout
    plan: dict[str, dict] = {}
    for block in re.split(r"\n(?=\[.*\]\n(?:local)?rule )", out):
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not m:
            continue
        fields = {k: v.strip() for k, v in re.findall(r"^    (\w+): (.*)$", block, re.M)}
        shell = re.search(r"^Shell command: (.*)$", block, re.M)
        wildcards = fields.get("wildcards")
        key = m.group(1) + ("@" + wildcards.split("=", 1)[1] if wildcards else "")
        plan[key] = {
            "input": set(filter(None, fields.get("input", "").split(", "))),
            "output": set(filter(None, fields.get("output", "").split(", "))),
            "shell": shell.group(1).strip() if shell else None,
        }
    return plan


def dvc_outdated(repo: Path) -> set[str]:
    """Stages `dvc status` reports as changed."""
    out = run(["dvc", "status", "--json"], repo).stdout
    return set(json.loads(out or "{}"))


def dvc_stages(repo: Path) -> dict[str, dict]:
    """Every stage of the DVC pipeline after templating (`foreach` expanded), from `dvc stage list`
    names and the rendered stage definitions DVC resolves (deps, outs, params as sets; cmd)."""
    script = (
        "import json, sys\n"
        "from dvc.repo import Repo\n"
        "out = {}\n"
        "for s in Repo('.').index.stages:\n"
        "    params = {k for d in s.deps if d.__class__.__name__ == 'ParamsDependency' for k in d.params}\n"
        "    deps = {d.def_path for d in s.deps if d.__class__.__name__ != 'ParamsDependency'}\n"
        "    out[s.addressing] = {'cmd': s.cmd, 'deps': sorted(deps), 'outs': sorted(o.def_path for o in s.outs),\n"
        "                         'params': sorted(params)}\n"
        "json.dump(out, sys.stdout)\n"
    )
    stages = json.loads(run([sys.executable, "-c", script], repo).stdout)
    return {name: {k: set(v) if isinstance(v, list) else v for k, v in s.items()} for name, s in stages.items()}


def dvc_planned(repo: Path) -> set[str]:
    """Stages `dvc repro` would run now: those `dvc status` reports changed and every stage downstream
    of them in DVC's own stage graph."""
    script = (
        "import json, sys\n"
        "import networkx as nx\n"
        "from dvc.repo import Repo\n"
        "repo = Repo('.')\n"
        "changed = set(repo.status())\n"
        "graph = repo.index.graph  # edges run from a stage to the stages it depends on\n"
        "names = {s: s.addressing for s in graph.nodes}\n"
        "out = {names[s] for s in graph.nodes if names[s] in changed or any(names[a] in changed "
        "for a in nx.descendants(graph, s))}\n"
        "json.dump(sorted(out), sys.stdout)\n"
    )
    return set(json.loads(run([sys.executable, "-c", script], repo).stdout))


DATA_OUTPUTS = [
    "data/downloads/index.csv", "data/downloads/skipped.csv", "data/rendered/manifest.csv",
    "data/rendered/registration.csv", "data/splits/train.csv", "data/splits/val.csv", "data/splits/test.csv",
]


def setter(path: str, value):
    """An edit for `make`/`edit_params` setting the dotted key `path` to `value`."""
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

"""Packaging: the console script, the shipped schema, and environment.yml kept in step with pyproject."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from expocorr import params

REPO = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_every_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_name(r) for r in pip if not r.startswith("-e")}
    assert wanted <= listed, f"missing from environment.yml: {sorted(wanted - listed)}"


def test_packaged_schema_is_the_workflow_schema():
    assert params.schema() == yaml.safe_load((REPO / "workflow/schemas/params.schema.yaml").read_text())


def test_default_params_are_valid():
    params.load(REPO / "params.yaml")


def test_console_script_lists_every_stage():
    exe = Path(sys.executable).parent / "expocorr"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for stage in ("download", "render", "split"):
        assert stage in out

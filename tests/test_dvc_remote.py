"""DVC remote storage: after `dvc repro` and `dvc push` to a local-directory remote, a fresh
`git clone` + `dvc pull` has every output dvc.lock records, byte for byte, and nothing to reproduce."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml

import workspace

pytestmark = pytest.mark.slow

MODELS = ["exponet", "zerodce_pp"]
BASELINES = ["identity"]


def small_pipeline(params):
    """Every kind of stage (data, train, evaluate, evaluate_baseline, report) with tiny sizes."""
    params["render"]["max_side"] = 64
    params["train"]["models"] = MODELS
    params["evaluate"]["baselines"] = BASELINES
    params["train"]["common"].update(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=32, sample_every=1)
    for model in MODELS:
        params["train"][model]["epochs"] = None
        params["train"][model]["patch_curriculum"] = None


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def locked_outputs(repo: Path) -> dict[str, dict]:
    """Every output recorded in dvc.lock: path -> its lock entry (md5, and nfiles for directories)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out for stage in lock["stages"].values() for out in stage.get("outs", [])}


def check_output(repo: Path, path: str, entry: dict) -> None:
    """The file (or every file of the directory) at `path` matches the hashes DVC recorded."""
    target = repo / path
    if entry["md5"].endswith(".dir"):
        assert target.is_dir(), path
        files = {p.relative_to(target).as_posix(): md5(p) for p in target.rglob("*") if p.is_file()}
        assert len(files) == entry.get("nfiles", 0), path
        cache = repo / ".dvc" / "cache" / "files" / "md5" / entry["md5"][:2] / entry["md5"][2:]
        listing = {item["relpath"]: item["md5"] for item in json.loads(cache.read_text())}
        assert files == listing, path
    else:
        assert target.is_file() and md5(target) == entry["md5"], path


def test_push_then_fresh_clone_pulls_every_output_and_is_up_to_date(tmp_path):
    repo = workspace.make(tmp_path, small_pipeline)
    workspace.run(["dvc", "repro"], repo, timeout=1800)
    outputs = locked_outputs(repo)
    assert {f"models/{m}/model.pt" for m in MODELS} | {"reports/report.html", "metrics/identity.json"} <= set(outputs)

    remote = tmp_path / "remote"
    workspace.run(["dvc", "remote", "add", "-d", "local", str(remote)], repo)
    workspace.run(["dvc", "push"], repo)
    workspace.run(["git", "add", "-A"], repo)
    workspace.run(["git", "commit", "-qm", "pipeline run"], repo)
    # git holds code, params, dvc.lock and the remote's address; no output is in git
    tracked = set(workspace.run(["git", "ls-files"], repo).stdout.split())
    assert "dvc.lock" in tracked and not tracked & set(outputs)

    clone = tmp_path / "clone"
    workspace.run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not any((clone / path).exists() for path in outputs)
    workspace.run(["dvc", "pull"], clone)
    for path, entry in outputs.items():
        check_output(clone, path, entry)
    assert workspace.dvc_outdated(clone) == set()
    assert "Data and pipelines are up to date" in workspace.run(["dvc", "status"], clone).stdout
    repro = workspace.run(["dvc", "repro", "--dry"], clone).stdout
    assert "Running stage" not in repro, repro
    assert os.listdir(remote)  # the remote holds the content

"""Snakemake reads params.yaml as plain data (never YTE) and stops on bad params with the stages' one line."""

from __future__ import annotations

import pytest
import workspace

# Printed by Snakemake itself on every run, before the Snakefile is read.
PROFILE_NOTICE = "Using workflow specific profile profiles/default"


def _lol(levels: int) -> str:
    """A "billion laughs": each anchor a list of ten aliases of the one before."""
    lines = ['lol: [&a0 "lol", ' + ", ".join('"lol"' for _ in range(9)) + "]"]
    lines += [f"lol{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(10))}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_snakemake_reads_params_as_plain_data_and_errors_are_one_line(tmp_path):
    repo = workspace.make(tmp_path)
    good = (repo / "params.yaml").read_text()
    ran = tmp_path / "yte-expression-ran"
    yte = f"?__import__('pathlib').Path({str(ran)!r}).touch() or 'x'"
    cases = [  # (params.yaml text, the one line expected)
        ("__use_yte__: true\n" + good.replace("title: expocorr report", f"title: {yte}"),
         "expocorr: params.yaml: __use_yte__: YTE templating is not supported"),
        (_lol(9) + good.replace("  evs:", "  evs: *a8\n  old_evs:", 1),
         "expocorr: params.yaml: not plain YAML data: line 1: YAML anchors and aliases"),
        (good.replace("split:\n  seed: 0", "split:\n  seed: -1"),
         "expocorr: params.yaml: split.seed: -1 is out of range"),
    ]
    for text, expected in cases:
        (repo / "params.yaml").write_text(text)
        proc = workspace.run(["snakemake", "-n", "--cores", "1"], repo, check=False, timeout=60)
        lines = [line for line in (proc.stdout + proc.stderr).splitlines()
                 if line.strip() and not line.startswith(PROFILE_NOTICE)]
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert len(lines) == 1 and lines[0].startswith(expected), proc.stdout + proc.stderr
    assert not ran.exists()  # the YTE expression never ran


@pytest.mark.slow
def test_dvc_plans_a_fresh_clone_with_the_documented_commands(tmp_path):
    """README "Reliability": on a fresh clone `dvc status` lists every stage and `dvc repro --dry --force`
    prints every stage's command (plain `dvc repro --dry` trips over DVC's run-cache lookup, dvc#9021)."""
    repo = workspace.make(tmp_path)
    stages = workspace.dvc_stages(repo)
    assert set(workspace.dvc_outdated(repo)) == set(stages)
    out = workspace.run(["dvc", "repro", "--dry", "--force"], repo, timeout=120).stdout
    for name, stage in stages.items():
        assert f"Running stage '{name}'" in out and stage["cmd"] in out, name
    assert not (repo / "data").exists()  # a dry run builds nothing

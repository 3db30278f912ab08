"""profiles/slurm: a true Snakemake dry run with the Slurm executor plugin plans the whole DAG, the
train jobs request their GPUs, and the plugin turns the planned resources into the sbatch flags.

No cluster is needed and nothing is faked: `snakemake --profile profiles/slurm -n` plans without
calling sinfo, sacct or sbatch, and the sbatch flags come from the plugin's own functions
(`get_submit_command`, `set_gres_string`) applied to the resources that dry run printed.
"""

from __future__ import annotations

import re

import pytest
import yaml

import workspace

pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e '.[slurm]'")
from snakemake_executor_plugin_slurm.submit_string import get_submit_command  # noqa: E402
from snakemake_executor_plugin_slurm.utils import set_gres_string  # noqa: E402


def slurm_plan(repo, *extra: str) -> dict[str, dict]:
    """Jobs of `snakemake --profile profiles/slurm -n` keyed as DVC names them, with threads and resources."""
    proc = workspace.run(["snakemake", "--profile", "profiles/slurm", "-n", *extra], repo)
    assert "Using profiles profiles/slurm" in proc.stderr
    out = proc.stdout
    plan: dict[str, dict] = {}
    for block in re.split(r"\n(?=\[.*\]\n(?:local)?rule )", out):
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not m or m.group(1) == "all":
            continue
        fields = {k: v.strip() for k, v in re.findall(r"^    (\w+): (.*)$", block, re.M)}
        wildcards = fields.get("wildcards")
        key = m.group(1) + ("@" + wildcards.split("=", 1)[1] if wildcards else "")
        resources = dict(item.split("=", 1) for item in fields.get("resources", "").split(", ") if "=" in item)
        plan[key] = {"threads": int(fields.get("threads", 1)), "resources": resources}
    return plan


class PlannedJob:
    """What the plugin reads from a Snakemake job (`job.resources.<name>`, `.get`, `job.threads`),
    holding the resources of one job of the dry run."""

    class Resources(dict):
        def __getattr__(self, name):
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

    def __init__(self, planned: dict):
        self.threads = planned["threads"]
        self.resources = self.Resources(
            {k: int(v) if re.fullmatch(r"\d+", v) else v for k, v in planned["resources"].items()}
        )


def sbatch_flags(planned: dict) -> str:
    """The sbatch options the plugin builds for a planned job (account, partition and workdir aside)."""
    job = PlannedJob(planned)
    params = {"run_uuid": "uuid", "slurm_logfile": "logs/slurm/%j.log", "comment_str": "c", "account": "",
              "partition": "", "workdir": None}
    return get_submit_command(job, params) + set_gres_string(job)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return workspace.make(tmp_path_factory.mktemp("slurm"))


def test_slurm_dry_run_plans_the_whole_dag(repo):
    local = workspace.snakemake_plan(repo)
    plan = slurm_plan(repo)
    assert set(plan) == set(local) - {"all"}
    models = yaml.safe_load((repo / "params.yaml").read_text())["train"]["models"]
    assert {k for k in plan if k.startswith("train@")} == {f"train@{m}" for m in models}


def test_train_jobs_request_gpus_and_cpu_stages_cpus_memory_and_time(repo):
    plan = slurm_plan(repo)
    for name, job in plan.items():
        res = job["resources"]
        assert int(res["mem_mb"]) > 0 and int(res["runtime"]) > 0, name
        if name.startswith("train@"):
            assert res["gpu"] == "1" and res["nodes"] == "1" and int(res["cpus_per_gpu"]) >= 1, (name, res)
            assert int(res["runtime"]) >= 600, (name, res)  # per-rule wall time, not the 60-minute default
        else:
            assert "gpu" not in res and "gres" not in res, (name, res)
    assert plan["split"]["resources"]["runtime"] == "10"

    train = sbatch_flags(plan["train@exponet"])
    assert "--gpus=1" in train and "--nodes=1" in train and "--cpus-per-gpu=" in train
    assert re.search(r"-t 1440\b", train) and re.search(r"--mem \d+", train)
    cpu = sbatch_flags(plan["report"])
    assert "--gpus" not in cpu and "--cpus-per-task=1" in cpu and "--mem 4000" in cpu and "-t 30" in cpu
    evaluate = sbatch_flags(plan["evaluate_he"])  # evaluations use the profile's `cores`, as DVC would use all
    assert "--gpus" not in evaluate and "--cpus-per-task=8" in evaluate and "-t 60" in evaluate


def test_gpus_n_requests_n_gpus_on_one_node(tmp_path):
    def edit(params):
        params["train"]["common"]["gpus"] = 4
        params["train"]["models"] = ["exponet", "msec"]

    plan = slurm_plan(workspace.make(tmp_path, edit))
    for model in ("exponet", "msec"):
        job = plan[f"train@{model}"]
        assert job["resources"]["gpu"] == "4"
        flags = sbatch_flags(job)
        assert "--gpus=4" in flags and "--nodes=1" in flags
    # locally the same `gpu` resource is what `--resources gpu=N` counts
    local = workspace.run(["snakemake", "-n", "--cores", "2", "--resources", "gpu=4"], tmp_path / "repo").stdout
    assert re.search(r"resources: .*\bgpu=4\b", local)


def test_slurm_logs_go_under_logs():
    profile = yaml.safe_load((workspace.REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["slurm-logdir"].startswith("logs/")


def test_slurm_profile_parses_outside_a_dry_run(repo):
    """`-n` plans with one core; a real submission plans with the profile's `cores` (the train rule's
    threads are `workflow.cores`): --summary takes that path without submitting anything."""
    out = workspace.run(["snakemake", "--profile", "profiles/slurm", "--summary"], repo).stdout
    assert "models/exponet/model.pt" in out

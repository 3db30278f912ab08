# Helpers shared by the rules: parameter validation and the names every rule uses.
import yaml

from expocorr import params as expocorr_params

# The stage commands read params.yaml themselves, so the engines must see exactly that file:
# Snakemake's --config/--configfile overrides would make the two disagree.
with open("params.yaml") as _fh:
    if config != yaml.safe_load(_fh):
        raise ValueError(
            "expocorr reads params.yaml in every stage: edit params.yaml instead of passing "
            "--config/--configfile to snakemake"
        )

# One schema for both engines (workflow/schemas/params.schema.yaml): errors name the key path.
expocorr_params.validate(config, "params.yaml")

SPLITS = ["train", "val", "test"]
MODELS = config["train"]["models"]
BASELINES = config["evaluate"]["baselines"]
METHODS = MODELS + BASELINES


wildcard_constraints:
    model="|".join(MODELS) or "NO_MODEL",


# Threads of the jobs that use the whole machine (train, evaluate_<method>): --cores, as DVC gives each
# stage all of it. `snakemake --report` takes no --cores (it runs nothing): 1 there.
ALL_CORES = workflow.resource_settings.cores or 1


def stage_log(stage):
    return f"logs/{stage}.log"

# Helpers shared by the rules: parameter validation and the names every rule uses.
import re
import sys

from expocorr import params as expocorr_params
from expocorr.errors import UserError

# params.yaml as every stage reads it (expocorr.params.load): plain YAML data (no YTE, tags, anchors or
# aliases), validated against workflow/schemas/params.schema.yaml. The stage commands read params.yaml
# themselves, so the engines must see exactly that file: --config/--configfile overrides are refused.
# An error is the stages' one line and exit status 1 (raised, Snakemake would add a traceback).
try:
    _params = expocorr_params.load("params.yaml")
    if config and config != _params:
        raise UserError(
            "params.yaml: --config/--configfile overrides are refused (every stage reads params.yaml "
            "itself): edit params.yaml instead"
        )
except UserError as _exc:
    sys.exit(f"expocorr: {_exc}")
config.update(_params)
workflow.configfiles.append("params.yaml")  # listed in `snakemake --report` as `configfile:` listed it

SPLITS = ["train", "val", "test"]
MODELS = config["train"]["models"]
PRETRAINED = list(config["pretrained"])
BASELINES = config["evaluate"]["baselines"]
METHODS = MODELS + PRETRAINED + BASELINES
EXTERNAL = config["evaluate"]["external"]  # NAME -> folder of another program's outputs
# The evaluate keys every evaluation reads (its params): adding a baseline or an external method reruns no other.
EVALUATE = {key: config["evaluate"][key] for key in expocorr_params.EVALUATE_PROTOCOL}
OUTPUT_NAMES = METHODS + [f"external-{name}" for name in EXTERNAL]  # the stems of metrics/*.json


wildcard_constraints:
    model="|".join(MODELS) or "NO_MODEL",
    name="|".join(PRETRAINED) or "NO_PRETRAINED",
    external="|".join(re.escape(name) for name in EXTERNAL) or "NO_EXTERNAL",


# Threads of the jobs that use the whole machine (train, evaluate_<method>): --cores, as DVC gives each
# stage all of it. `snakemake --report` takes no --cores (it runs nothing): 1 there.
ALL_CORES = workflow.resource_settings.cores or 1


def stage_log(stage):
    return f"logs/{stage}.log"

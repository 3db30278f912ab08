# expocorr pipeline (Snakemake). dvc.yaml declares the same DAG; both call the same `expocorr` commands.
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"
report: "workflow/report/workflow.rst"  # the landing page of `snakemake --report`


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "reports/report.html",

# expocorr pipeline (Snakemake). dvc.yaml declares the same DAG; both call the same `expocorr` commands.
from snakemake.utils import min_version

min_version("9.0")


# No `configfile:` directive: Snakemake evaluates YTE templates in a config file (`__use_yte__`), so
# workflow/rules/common.smk reads params.yaml as plain YAML data, as every stage does.
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

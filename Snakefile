# expocorr pipeline (Snakemake). dvc.yaml declares the same DAG; both call the same `expocorr` commands.
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"


rule all:
    default_target: True
    input:
        expand("data/splits/{split}.csv", split=SPLITS),
        expand("models/{model}/model.pt", model=MODELS),

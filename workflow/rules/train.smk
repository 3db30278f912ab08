# Train stage: one job per model in train.models (the `model` wildcard). Every job depends on the whole
# models package (a plugin model has no file there, and the built-ins share the registry and vgg.py) and on
# train.plugins (the modules that register the plugin models); a plugin's own code is outside the repository.
# pretrained: one job per published checkpoint in pretrained (the `name` wildcard), converted into the same
# model file.


rule train:
    input:
        "data/splits/train.csv",
        "data/splits/val.csv",
        "data/rendered/images",
        "data/downloads/weights",
        "src/expocorr/stages/train.py",
        "src/expocorr/sampling.py",
        "src/expocorr/schedules.py",
        "src/expocorr/models",
    output:
        model="models/{model}/model.pt",
        log=report("models/{model}/train_log.csv", caption="../report/train_log.rst", category="Training",
                   labels={"model": "{model}", "table": "train_log.csv"}),
        run="models/{model}/mlflow_run.json",
    params:
        common=config["train"]["common"],
        model=lambda wildcards: config["train"][wildcards.model],
        plugins=config["train"]["plugins"],
    log:
        "logs/train_{model}.log",
    threads: ALL_CORES
    resources:
        gpu=config["train"]["common"]["gpus"],
    shell:
        "expocorr train --model {wildcards.model} --params params.yaml --log {log}"


rule pretrained:
    input:
        "src/expocorr/stages/pretrained.py",
        "src/expocorr/checkpoints.py",
    output:
        model="models/{name}/model.pt",
    params:
        checkpoint=lambda wildcards: config["pretrained"][wildcards.name],
    log:
        "logs/pretrained_{name}.log",
    threads: 1
    shell:
        "expocorr pretrained --name {wildcards.name} --params params.yaml --log {log}"

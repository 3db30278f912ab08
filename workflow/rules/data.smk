# Data stages: download -> render -> split; render_extra: the extra test sets of evaluate.extra_sets
# and evaluate.unpaired_sets.


rule download:
    input:
        "src/expocorr/stages/download.py",
        "src/expocorr/sources/files.py",
        "src/expocorr/sources/folder.py",
        "src/expocorr/sources/bundled.py",
        "src/expocorr/sources/url.py",
        "src/expocorr/sources/datasets.py",
        "src/expocorr/sources/stacks.py",
    output:
        files=directory("data/downloads/files"),
        weights=directory("data/downloads/weights"),
        index="data/downloads/index.csv",
        skipped="data/downloads/skipped.csv",
    params:
        data=config["data"],
    log:
        stage_log("download"),
    threads: 1
    shell:
        "expocorr download --params params.yaml --log {log}"


rule render:
    input:
        "data/downloads/files",
        "data/downloads/index.csv",
        "src/expocorr/stages/render.py",
        "src/expocorr/stages/render_stacks.py",
        "src/expocorr/imaging/colour.py",
        "src/expocorr/imaging/raw.py",
        "src/expocorr/imaging/register.py",
        "src/expocorr/imaging/synthesis.py",
    output:
        images=directory("data/rendered/images"),
        manifest=report("data/rendered/manifest.csv", caption="../report/manifest.rst", category="Data"),
        registration=report("data/rendered/registration.csv", caption="../report/registration.rst", category="Data"),
    params:
        render=config["render"],
    log:
        stage_log("render"),
    threads: 1
    shell:
        "expocorr render --params params.yaml --log {log}"


rule split:
    input:
        "data/rendered/manifest.csv",
        "src/expocorr/stages/split.py",
    output:
        expand("data/splits/{split}.csv", split=SPLITS),
    params:
        split=config["split"],
    log:
        stage_log("split"),
    threads: 1
    shell:
        "expocorr split --params params.yaml --log {log}"


rule render_extra:
    input:
        "src/expocorr/stages/render_extra.py",
        "src/expocorr/stages/render.py",
        "src/expocorr/imaging/colour.py",
        "src/expocorr/imaging/raw.py",
        "src/expocorr/imaging/synthesis.py",
        "src/expocorr/stages/render_stacks.py",
        "src/expocorr/sources/stacks.py",
        "src/expocorr/imaging/register.py",
    output:
        directory("data/extra"),
    params:
        extra_sets=config["evaluate"]["extra_sets"],
        unpaired_sets=config["evaluate"]["unpaired_sets"],
    log:
        stage_log("render_extra"),
    threads: 1
    shell:
        "expocorr render-extra --params params.yaml --log {log}"

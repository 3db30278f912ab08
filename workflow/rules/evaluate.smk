# Evaluate stage: one rule per method, `evaluate_<method>`: the models of train.models (each depends
# on its own model file, so retraining one model re-evaluates only that model) and the baselines of
# evaluate.baselines (which also read render.* : the oracle inverts the synthesis). Every one reads the
# scoring protocol's evaluate keys (EVALUATE: not evaluate.baselines nor evaluate.external), the metrics code, the downloaded network weights (the Inception Score's, when evaluate.noref names them) and
# the extra test sets of evaluate.extra_sets and evaluate.unpaired_sets (data/extra, written by render_extra).
# The published checkpoints of `pretrained`: one rule, `evaluate_pretrained` (the `name` wildcard), as a model.
# Other programs' outputs (evaluate.external): rule evaluate_external, at the end.

for _method, _depends, _params, _subcategory in [
    (m, f"models/{m}/model.pt", {}, "Models") for m in MODELS
] + [(b, "src/expocorr/baselines", {"render": config["render"]}, "Baselines") for b in BASELINES]:

    rule:
        name:
            f"evaluate_{_method}"
        input:
            "data/splits/test.csv",
            "data/rendered/images",
            "data/extra",
            "src/expocorr/stages/evaluate.py",
            "src/expocorr/metrics",
            "data/downloads/weights",
            _depends,
        output:
            json=report(f"metrics/{_method}.json", caption="../report/metrics.rst", category="Metrics",
                        subcategory=_subcategory, labels={"method": _method, "table": "summary (JSON)"}),
            per_image=report(f"metrics/{_method}_per_image.csv", caption="../report/per_image.rst",
                             category="Metrics", subcategory=_subcategory,
                             labels={"method": _method, "table": "per image (CSV)"}),
            details=f"metrics/details/{_method}.json",
            extra=f"metrics/details/{_method}_extra.csv",
            unpaired=f"metrics/details/{_method}_unpaired.csv",
            results=directory(f"results/{_method}"),
        params:
            method=_method,
            evaluate=EVALUATE,
            **_params,
        log:
            f"logs/evaluate_{_method}.log",
        threads: ALL_CORES  # as many as DVC gives it: same threads, same floating-point sums
        shell:
            # The shell string is formatted when the job runs, after the loop has moved on: take the
            # method from params (bound now), not from the loop variable.
            "expocorr evaluate --method {params.method} --params params.yaml --log {log}"


rule evaluate_pretrained:
    input:
        "data/splits/test.csv",
        "data/rendered/images",
        "data/extra",
        "src/expocorr/stages/evaluate.py",
        "src/expocorr/metrics",
        "data/downloads/weights",
        "models/{name}/model.pt",
    output:
        json=report("metrics/{name}.json", caption="../report/metrics.rst", category="Metrics",
                    subcategory="Published checkpoints", labels={"method": "{name}", "table": "summary (JSON)"}),
        per_image=report("metrics/{name}_per_image.csv", caption="../report/per_image.rst", category="Metrics",
                         subcategory="Published checkpoints", labels={"method": "{name}", "table": "per image (CSV)"}),
        details="metrics/details/{name}.json",
        extra="metrics/details/{name}_extra.csv",
        unpaired="metrics/details/{name}_unpaired.csv",
        results=directory("results/{name}"),
    params:
        evaluate=EVALUATE,
    log:
        "logs/evaluate_{name}.log",
    threads: ALL_CORES
    shell:
        "expocorr evaluate --method {wildcards.name} --params params.yaml --log {log}"


# Other programs' outputs (evaluate.external: NAME -> folder), scored as method external:NAME into files named
# external-NAME (`:` is special in DVC addresses): one job per name, `evaluate_external@NAME` as DVC names it.
# The folder is an input, wherever it is (Snakemake sees a folder's time stamp: it changes when files are
# added, removed or renamed, not when one is rewritten in place; DVC hashes the files).


rule evaluate_external:
    input:
        lambda wildcards: EXTERNAL[wildcards.external],
        "data/splits/test.csv",
        "data/rendered/images",
        "src/expocorr/stages/evaluate.py",
        "src/expocorr/external.py",
        "src/expocorr/metrics",
        "data/downloads/weights",
    output:
        json=report("metrics/external-{external}.json", caption="../report/metrics.rst", category="Metrics",
                    subcategory="External", labels={"method": "external:{external}", "table": "summary (JSON)"}),
        per_image=report("metrics/external-{external}_per_image.csv", caption="../report/per_image.rst",
                         category="Metrics", subcategory="External",
                         labels={"method": "external:{external}", "table": "per image (CSV)"}),
        details="metrics/details/external-{external}.json",
        extra="metrics/details/external-{external}_extra.csv",
        unpaired="metrics/details/external-{external}_unpaired.csv",
        results=directory("results/external-{external}"),
    params:
        method=lambda wildcards: f"external:{wildcards.external}",  # also named by the report captions
        evaluate=EVALUATE,
        folder=lambda wildcards: EXTERNAL[wildcards.external],
    log:
        "logs/evaluate_external-{external}.log",
    threads: ALL_CORES
    shell:
        "expocorr evaluate --method {params.method} --params params.yaml --log {log}"

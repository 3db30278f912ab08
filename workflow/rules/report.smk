# Report stage: leaderboard, figures and a self-contained HTML page from metrics/ and the train logs.


rule report:
    input:
        expand("metrics/{method}.json", method=METHODS),
        expand("metrics/{method}_per_image.csv", method=METHODS),
        expand("models/{model}/train_log.csv", model=MODELS),
        "src/expocorr/report.py",
    output:
        md="reports/report.md",
        html=report("reports/report.html", caption="../report/report.rst", category="Report"),
        leaderboard="reports/leaderboard.json",
        figures=directory("reports/figures"),
    params:
        report=config["report"],
    log:
        "logs/report.log",
    threads: 1
    shell:
        "expocorr report --params params.yaml --log {log}"

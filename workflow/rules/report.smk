# Report stage: leaderboard, figures and a self-contained HTML page from metrics/ and the train logs,
# plus the tables `dvc plots show` draws. `report(...)` marks what `snakemake --report` shows.


rule report:
    input:
        expand("metrics/{method}.json", method=OUTPUT_NAMES),
        expand("metrics/{method}_per_image.csv", method=OUTPUT_NAMES),
        expand("metrics/details/{method}.json", method=OUTPUT_NAMES),
        expand("models/{model}/train_log.csv", model=MODELS),
        "src/expocorr/stages/report/__init__.py",
        "src/expocorr/stages/report/data.py",
        "src/expocorr/stages/report/document.py",
        "src/expocorr/stages/report/tables.py",
        "src/expocorr/stages/report/figures.py",
        "src/expocorr/plot_data.py",
    output:
        md="reports/report.md",
        html=report("reports/report.html", caption="../report/report.rst", category="Report",
                    labels={"file": "report.html"}),
        leaderboard="reports/leaderboard.json",
        leaderboard_csv=report("reports/leaderboard.csv", caption="../report/leaderboard.rst", category="Report",
                               labels={"file": "leaderboard.csv"}),
        figures=report(directory("reports/figures"), patterns=["{figure}.png", "{figure}.svg", "{figure}.jpg"],
                       caption="../report/figure.rst", category="Figures", labels={"figure": "{figure}"}),
        per_ev=report("reports/plots/psnr_per_ev.csv", caption="../report/psnr_per_ev.rst", category="Metrics",
                      subcategory="All methods", labels={"table": "PSNR and SSIM per EV"}),
        training=report("reports/plots/training.csv", caption="../report/training.rst", category="Training",
                        labels={"model": "all models", "table": "training.csv"}),
    params:
        report=config["report"],
    log:
        "logs/report.log",
    threads: 1
    shell:
        "expocorr report --params params.yaml --log {log}"

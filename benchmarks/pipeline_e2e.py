"""Wall time of the full default pipeline from scratch, and of a no-op rerun, with both engines.

Copies the repository (tracked and unignored files) into a temporary directory, runs
`snakemake --cores all --resources gpu=1` (and `dvc repro` in a second copy), then the same command
again, and writes reports/bench/pipeline_e2e.json: wall times, per-model training seconds and best
val PSNR against the identity's, every method's test PSNR, and (with both engines) whether the two
from-scratch runs of the default params gave identical metrics JSONs and train logs (timings aside).

    python benchmarks/pipeline_e2e.py [--engine snakemake|dvc|both] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import write_record

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "reports/bench/pipeline_e2e.json"
COMMANDS = {
    "snakemake": ["snakemake", "--cores", "all", "--resources", "gpu=1"],
    "dvc": ["dvc", "repro"],
}


def copy_repo(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        src = REPO / name
        if name.startswith(("tests/", "benchmarks/")) or not (src.exists() or src.is_symlink()):
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name, follow_symlinks=False)
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@b"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)
    return dest


def timed(cmd: list[str], cwd: Path) -> float:
    # the copy's own package first: an editable install would import the working tree being edited
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(cwd / "src")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds


def training_summary(repo: Path) -> dict:
    """Per model: summed epoch seconds, epochs, best val PSNR and the identity's val PSNR."""
    summary = {}
    for log in sorted((repo / "models").glob("*/train_log.csv")):
        rows = list(csv.DictReader(open(log)))
        summary[log.parent.name] = {
            "seconds": round(sum(float(r["seconds"]) for r in rows), 1), "epochs": len(rows),
            "best_val_psnr": round(max(float(r["val_psnr"]) for r in rows), 3),
            "val_psnr_identity": round(float(rows[-1]["val_psnr_identity"]), 3)}
    return summary


def test_psnr(repo: Path) -> dict:
    """Per method: overall test PSNR (the leaderboard's headline number)."""
    return {p.stem: round(json.loads(p.read_text())["overall"]["psnr"], 3) for p in sorted((repo / "metrics").glob("*.json"))}


def outcomes(repo: Path) -> tuple[dict, dict]:
    """Every metrics JSON (the scores; timings and dates are in metrics/details/) and train log of a run,
    timing fields removed."""
    metrics = {path.name: json.loads(path.read_text()) for path in sorted((repo / "metrics").glob("*.json"))}
    logs = {log.parent.name: [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(open(log))]
            for log in sorted((repo / "models").glob("*/train_log.csv"))}
    return metrics, logs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["snakemake", "dvc", "both"], default="both")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    args = parser.parse_args()
    engines = ["snakemake", "dvc"] if args.engine == "both" else [args.engine]
    root = Path(tempfile.mkdtemp(prefix="expocorr-e2e-"))
    results = []
    for engine in engines:
        repo = copy_repo(root / engine)
        full = timed(COMMANDS[engine], repo)
        noop = timed(COMMANDS[engine], repo)
        models = training_summary(repo)
        train = sum(m["seconds"] for m in models.values())
        results.append({"engine": engine, "full_run_seconds": round(full, 1), "noop_rerun_seconds": round(noop, 1),
                        "training_epoch_seconds_total": round(train, 1), "models": models,
                        "test_psnr": test_psnr(repo),
                        "report": (repo / "reports/report.html").is_file()})
        print(f"{engine}: full {full:.1f} s, no-op rerun {noop:.1f} s, training epochs {train:.1f} s")
    extra = {}
    if len(engines) == 2:
        extra["identical_metrics_across_runs"] = outcomes(root / "snakemake") == outcomes(root / "dvc")
        print(f"identical metrics across the two from-scratch runs: {extra['identical_metrics_across_runs']}")
    write_record(OUT, "pipeline_e2e", results=results, **extra)
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()

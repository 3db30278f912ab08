"""Quality on real photos: the real-photo recipe (params-real.yaml) on ../shared/data/photos, scored on
the synthetic test split and on real exposure errors.

Runs the whole pipeline in a copy of the repository with params-real.yaml, data.folder set to the photos,
the real bracketed scenes of ../shared/data/stacks (frobisher, mertens_house) and ../shared/data/brackets
as `evaluate.extra_sets` (every exposure against the scene's frame nearest mid-grey) and the real
unpaired photos of ../shared/data/sice_part1_512 as an `evaluate.unpaired_sets` set; writes the
leaderboard to reports/bench/quality_real.json with, per column (synthetic test, each real set), how much
each learned model beats the identity, HE, CLAHE and gamma_auto.

    python benchmarks/quality_real.py [--data ../shared/data] [--keep]
    python benchmarks/quality_real.py --summarise DIR   # record a finished (--keep) run again, untimed
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_e2e import copy_repo, timed  # noqa: E402
from record import write_record  # noqa: E402


REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "reports/bench/quality_real.json"
COMPARED = ("identity", "he", "clahe", "gamma_auto")
UNPAIRED_LIMIT = 24  # SICE photos scored without reference (of 400)


def configure(params: dict, data: Path) -> None:
    """params-real.yaml on the real photos, with the real sets of `data` as extra and unpaired sets."""
    params["data"]["folder"] = str(data / "photos")
    side = params["render"]["max_side"]
    params["evaluate"]["extra_sets"] = {name: {"folder": str(data / name), "max_side": side}
                                        for name in ("stacks", "brackets") if (data / name).is_dir()}
    if (data / "sice_part1_512").is_dir():
        params["evaluate"]["unpaired_sets"] = {"sice": {"folder": str(data / "sice_part1_512"), "max_side": 384,
                                                        "limit": UNPAIRED_LIMIT}}


def margins(scores: dict[str, float], models: list[str]) -> dict:
    """{model: {compared method: model − it (dB)}} of one column."""
    return {m: {b: round(scores[m] - scores[b], 3) for b in COMPARED if b in scores} for m in models if m in scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--summarise", type=Path, metavar="DIR",
                        help="record the finished run in DIR (a kept copy) instead of running; wall time not measured")
    args = parser.parse_args()
    if not (args.data / "photos").is_dir():
        sys.exit(f"{args.data / 'photos'}: no such folder (the real-photo benchmark needs ../shared/data/photos)")
    if args.summarise:
        root, repo, seconds = None, args.summarise, None
        params = yaml.safe_load((repo / "params.yaml").read_text())
    else:
        root = Path(tempfile.mkdtemp(prefix="expocorr-quality-"))
        repo = copy_repo(root / "repo")
        params = yaml.safe_load((repo / "params-real.yaml").read_text())
        configure(params, args.data.resolve())
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        t0 = time.perf_counter()
        timed(["snakemake", "--cores", "all", "--resources", "gpu=1"], repo)
        seconds = round(time.perf_counter() - t0, 1)
    board = json.loads((repo / "reports/leaderboard.json").read_text())
    metrics = {p.stem: json.loads(p.read_text()) for p in (repo / "metrics").glob("*.json")}
    models = params["train"]["models"]
    columns = {"test": {m: s["overall"]["psnr"] for m, s in metrics.items()}}
    for name in params["evaluate"]["extra_sets"]:
        columns[name] = {m: s["extra"][name]["psnr"] for m, s in metrics.items() if name in s.get("extra", {})}
    margin = {column: margins(scores, models) for column, scores in columns.items()}
    unpaired = {name: {m: s["unpaired"][name] for m, s in metrics.items() if name in s.get("unpaired", {})}
                for name in params["evaluate"]["unpaired_sets"]}
    print(json.dumps({"psnr": columns, "margins": margin}, indent=2))
    details = json.loads((repo / "metrics/details/identity.json").read_text())
    write_record(
        OUT, "quality_real", data=str(args.data), params_file="params-real.yaml", n_test_images=details["n_images"],
        n_pairs={name: s["n_images"] for name, s in details.get("extra_sets", {}).items()},
        wall_seconds=seconds, timed_from_scratch=seconds is not None, params=params["train"], params_train_common=params["train"]["common"], leaderboard=board,
        psnr=columns, ssim={m: s["overall"]["ssim"] for m, s in metrics.items()}, psnr_margin=margin,
        unpaired=unpaired,
        beats_identity_and_classical={column: [m for m, row in rows.items() if all(v > 0 for v in row.values())]
                             for column, rows in margin.items()},
        one_db_over_gamma_auto={column: [m for m, row in rows.items() if row.get("gamma_auto", -1) >= 1.0]
                                for column, rows in margin.items()})
    if seconds is not None:
        print(f"({seconds / 60:.1f} min)")
    if args.keep or root is None:
        print(f"kept {repo}")
    else:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()

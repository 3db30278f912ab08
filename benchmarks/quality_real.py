"""Quality on real photos: the whole pipeline with `data.source: folder` on ../shared/data/photos.

Trains every model with a budget of about 30 CPU-minutes in total (real photos, renders at 256 px,
longer training than the default), evaluates every method, and writes the leaderboard to
reports/bench/quality_real.json, with how much each learned model beats HE, CLAHE and gamma_auto.

    python benchmarks/quality_real.py [--photos ../shared/data/photos] [--epochs 12] [--keep]
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
CLASSICAL = ("he", "clahe", "gamma_auto")


def configure(params: dict, photos: Path, epochs: int) -> None:
    """Real photos, 256 px renders, a longer schedule than the default."""
    params["data"].update(source="folder", folder=str(photos))
    params["render"]["max_side"] = 256
    params["train"]["common"].update(epochs=epochs, steps_per_epoch=40, batch_size=8, patch_size=96)
    params["train"]["hdr_autoencoder"]["epochs"] = max(2, epochs // 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/data/photos")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if not args.photos.is_dir():
        sys.exit(f"{args.photos}: no such folder (the real-photo benchmark needs ../shared/data/photos)")
    root = Path(tempfile.mkdtemp(prefix="expocorr-quality-"))
    repo = copy_repo(root / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    configure(params, args.photos.resolve(), args.epochs)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    t0 = time.perf_counter()
    timed(["snakemake", "--cores", "all", "--resources", "gpu=1"], repo)
    seconds = time.perf_counter() - t0
    board = json.loads((repo / "reports/leaderboard.json").read_text())
    metrics = {p.stem: json.loads(p.read_text()) for p in (repo / "metrics").glob("*.json")}
    psnr = {m: s["overall"]["psnr"] for m, s in metrics.items()}
    models = params["train"]["models"]
    margins = {m: {b: round(psnr[m] - psnr[b], 3) for b in CLASSICAL if b in psnr} for m in models}
    print(json.dumps({"psnr": psnr, "margins": margins}, indent=2))
    n_test_images = json.loads((repo / "metrics/details/identity.json").read_text())["n_images"]
    write_record(
        OUT, "quality_real", photos=str(args.photos), n_test_images=n_test_images,
        wall_seconds=round(seconds, 1), params_train_common=params["train"]["common"], leaderboard=board, psnr=psnr,
        ssim={m: s["overall"]["ssim"] for m, s in metrics.items()}, psnr_margin_over_classical=margins,
        beats_all_classical=[m for m in models if all(v > 0 for v in margins[m].values())])
    print(f"({seconds / 60:.1f} min)")
    if args.keep:
        print(f"kept {repo}")
    else:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()

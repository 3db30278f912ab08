"""`expocorr correct` per method at 1200×900, 12 and 24 megapixels, and on a folder of 20 photos: wall seconds,
peak RSS and the time of each phase, on the CPU and on the GPU when one is present.

Each (method, size, device) is one real `expocorr correct` process on one JPEG (scikit-image's astronaut resized,
quality 92; a JPEG out), timed from outside (wall seconds, the child's own peak RSS from ``os.wait4``) and from
inside (``--timings``: load, decode, compute, encode); ``startup`` is the rest: starting Python, imports, the
arguments, exit. The photos and models are made in a child too, and this process imports neither torch nor
OpenCV until the end: a child's peak RSS counts its parent's at the fork. ``seconds`` is the compute phase,
what the report quotes per megapixel. The folder run corrects 20 different 1200×900 photos (scikit-image's
photos, resized) in one process: photos/s of the batch, decode and encode overlapping the compute.

    python benchmarks/infer_latency.py [--methods NAME|NAME=FILE ...] [--random-init NAME ...]
        [--sizes 1200x900 4000x3000 6000x4000] [--skip METHOD:SIZE ...] [--devices cpu cuda] [--folder 20]

Methods default to every trained model in models/*/model.pt and every baseline that corrects a single photo
without an oracle. ``NAME=FILE`` times a model file under that name (e.g. the published Zero-DCE checkpoint);
``--random-init NAME`` a model of params.yaml's architecture with random weights (seed 0): the time of the
architecture, not of a trained model. Writes reports/bench/infer_latency.json, which the report stage quotes in
the leaderboard (compute seconds per megapixel): ``{"results": [{"method", "device", "megapixels", "seconds",
"wall_seconds", "peak_rss_mb", "phases", ...}], "folders": [{"method", "device", "photos", "photos_per_second",
...}]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = Path("reports/bench/infer_latency.json")
SIZES = ["1200x900", "4000x3000", "6000x4000"]
FOLDER_SCENES = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"]


def write_photo(path: Path, size: str, scene: str = "astronaut", shift: int = 0) -> Path:
    """A real photo (scikit-image's `scene`) resized to `size`, its hue turned by `shift`, saved as JPEG 92."""
    import cv2
    import skimage.data

    width, height = (int(v) for v in size.split("x"))
    rgb = cv2.resize(getattr(skimage.data, scene)(), (width, height), interpolation=cv2.INTER_CUBIC)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(int) + shift) % 180
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def run_correct(spec: str, inputs: Path, device: str, work: Path) -> dict:
    """One `expocorr correct` process: its --timings, wall seconds and peak RSS (MB)."""
    timings = work / "timings.json"
    cmd = [sys.executable, "-m", "expocorr.cli", "correct", str(inputs), "--model", spec, "-o", str(work / "out"),
           "--overwrite", "--device", device, "--timings", str(timings)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{spec} on {inputs} ({device}): failed:\n{stderr[-2000:]}")
    return {**json.loads(timings.read_text()), "wall_seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def random_init_model(name: str, folder: Path) -> Path:
    """models/NAME/model.pt under `folder`: params.yaml's architecture of `name`, random weights (seed 0)."""
    import torch

    from expocorr import models, params

    arch = params.load(REPO / "params.yaml")["train"][name]["arch"]
    torch.manual_seed(0)
    path = folder / "models" / name / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": name, "arch": arch, "state_dict": models.build(name, arch).state_dict(), "params": {}}, path)
    return path


def default_methods() -> list[str]:
    from expocorr.baselines import BASELINES

    trained = sorted(p.parent.name for p in Path("models").glob("*/model.pt"))
    return trained + [n for n, b in BASELINES.items() if not b.oracle and not b.needs_stack]


def prepare(folder: Path, sizes: list[str], photos: int, random_init: list[str]) -> None:
    """The photos (one per size, and the folder's) and the random-init models under `folder` (run as a child)."""
    for size in sizes:
        write_photo(folder / "photos" / f"{size}.jpg", size)
    for i in range(photos):
        write_photo(folder / "folder" / f"{i:02d}.jpg", "1200x900", FOLDER_SCENES[i % len(FOLDER_SCENES)], shift=i * 7)
    for name in random_init:
        random_init_model(name, folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", help="NAME or NAME=MODEL_FILE (default: trained models and usable "
                        "baselines)")
    parser.add_argument("--random-init", nargs="*", default=[], help="models timed with random weights")
    parser.add_argument("--sizes", nargs="*", default=SIZES, help=f"WIDTHxHEIGHT (default: {' '.join(SIZES)})")
    parser.add_argument("--skip", nargs="*", default=[], help="METHOD:SIZE pairs not run (too slow)")
    parser.add_argument("--devices", nargs="*", default=None, help="default: cpu, and cuda when available")
    parser.add_argument("--folder", type=int, default=20, help="photos in the folder run (0: none)")
    parser.add_argument("--prepare", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(Path(args.prepare), args.sizes, args.folder, args.random_init)
        return
    devices = args.devices or ["cpu"] + (["cuda"] if subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True,
        check=True).stdout.strip() == "True" else [])
    results, folders = [], []
    with tempfile.TemporaryDirectory(prefix="expocorr-latency-") as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, __file__, "--prepare", str(tmp), "--sizes", *args.sizes, "--folder",
                        str(args.folder), "--random-init", *args.random_init], check=True)
        specs = {}  # name -> (--model value, weights)
        for item in args.methods if args.methods is not None else default_methods():
            name, _, file = item.partition("=")
            trained = Path(f"models/{name}/model.pt").exists()
            specs[name] = (str(Path(file).resolve()), f"file {Path(file).name}") if file else (
                name, "trained" if trained else "baseline")
        for name in args.random_init:
            specs[name] = (str(tmp / "models" / name / "model.pt"), "random init")
        for device in devices:
            for name, (spec, weights) in specs.items():
                for size in args.sizes:
                    if f"{name}:{size}" in args.skip:
                        continue
                    run = run_correct(spec, tmp / "photos" / f"{size}.jpg", device, tmp)
                    phases = {k: round(run["seconds"][k], 3) for k in ("load", "decode", "compute", "encode")}
                    phases = {"startup": round(run["wall_seconds"] - sum(phases.values()), 3), **phases}
                    width, height = (int(v) for v in size.split("x"))
                    entry = {"method": name, "weights": weights, "device": device, "size": size,
                             "megapixels": round(width * height / 1e6, 3), "seconds": phases["compute"],
                             "wall_seconds": round(run["wall_seconds"], 3), "peak_rss_mb": round(run["peak_rss_mb"], 1),
                             "precision": run["precision"], "phases": phases}
                    results.append(entry)
                    print(f"{device:5s} {name:16s} {size:10s} wall {entry['wall_seconds']:7.2f} s "
                          f"{entry['peak_rss_mb']:6.0f} MB  " + " ".join(f"{k} {v:.2f}" for k, v in phases.items()),
                          flush=True)
                if args.folder:
                    run = run_correct(spec, tmp / "folder", device, tmp)
                    entry = {"method": name, "weights": weights, "device": device, "photos": args.folder,
                             "size": "1200x900", "photos_per_second": run["photos_per_second"],
                             "batch_seconds": run["seconds"]["batch"], "wall_seconds": round(run["wall_seconds"], 3),
                             "peak_rss_mb": round(run["peak_rss_mb"], 1),
                             "phases": {k: run["seconds"][k] for k in ("load", "decode", "compute", "encode")}}
                    folders.append(entry)
                    print(f"{device:5s} {name:16s} folder of {args.folder}: {entry['photos_per_second']:.2f} photos/s "
                          f"(wall {entry['wall_seconds']:.1f} s)", flush=True)
    sys.path.insert(0, str(REPO / "src"))
    from record import write_record  # torch: only now

    write_record(OUT, "infer_latency", sizes=args.sizes, skipped=args.skip, results=results, folders=folders)


if __name__ == "__main__":
    main()

"""Inference latency and memory of every method at full resolution: wall seconds and peak RSS on a
1200×900 and a 12-megapixel photo, on the CPU and on the GPU when one is present.

Each (method, size, device) runs in a fresh process, so its peak resident memory (the child's own
``ru_maxrss``) is the method's: model loading included, file decoding not (the photo is made in
memory). ``seconds`` times the correction itself (`expocorr.methods.Method`, the
path `evaluate` and `correct` share, full-resolution strategies included), after one warm-up on a
small image. The photo is a real one (scikit-image's astronaut) resized to each size.

    python benchmarks/infer_latency.py [--methods NAME ...] [--sizes 1200x900 4000x3000] [--devices cpu cuda]

Methods default to every trained model in models/*/model.pt and every baseline that corrects a
single photo without an oracle. Writes reports/bench/infer_latency.json, which the report stage
quotes in the leaderboard (seconds per megapixel):
``{"results": [{"method", "device", "megapixels", "seconds", "peak_rss_mb"}, ...]}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

OUT = Path("reports/bench/infer_latency.json")
SIZES = ["1200x900", "4000x3000"]
CTX = {"ev": None, "render": {"curve": "srgb", "gamma": 2.2, "tau": 1.0}}


def photo(width: int, height: int):
    import cv2
    import numpy as np
    import skimage.data

    rgb = cv2.resize(skimage.data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)
    return rgb.astype(np.float32) / np.float32(255.0)


def one(method: str, size: str, device: str) -> dict:
    """Time one method on one photo in this process (run as a child by `main`)."""
    import torch

    from expocorr import inference, methods

    width, height = (int(v) for v in size.split("x"))
    dev = inference.pick_device(device)
    corrector = methods.load_method(method, dev)
    corrector(photo(256, 192), CTX)  # warm-up (allocators, cuDNN autotuning)
    rgb = photo(width, height)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = corrector(rgb, CTX)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    assert out.shape == rgb.shape
    return {"method": method, "device": dev.type, "megapixels": round(width * height / 1e6, 3),
            "width": width, "height": height, "seconds": round(seconds, 4)}


def measure(method: str, size: str, device: str) -> dict:
    """`one` in a child process; adds the child's peak RSS in MB."""
    proc = subprocess.run([sys.executable, __file__, "--one", method, size, device], capture_output=True, text=True,
                          check=False)
    if proc.returncode:
        raise RuntimeError(f"{method} {size} {device}: failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(result.pop("_peak_kb") / 1024, 1)
    return result


def default_methods() -> list[str]:
    from expocorr.baselines import BASELINES

    trained = sorted(p.parent.name for p in Path("models").glob("*/model.pt"))
    return trained + [n for n, b in BASELINES.items() if not b.oracle and not b.needs_stack]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", help="methods (default: trained models and usable baselines)")
    parser.add_argument("--sizes", nargs="*", default=SIZES, help="WIDTHxHEIGHT (default: 1200x900 4000x3000)")
    parser.add_argument("--devices", nargs="*", default=None, help="default: cpu, and cuda when available")
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "SIZE", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import resource

        result = one(*args.one)
        result["_peak_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps(result))
        return

    import torch

    from record import write_record

    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    methods = args.methods or default_methods()
    results = []
    for device in devices:
        for method in methods:
            for size in args.sizes:
                entry = measure(method, size, device)
                results.append(entry)
                print(f"{device:5s} {method:18s} {entry['megapixels']:6.2f} MP {entry['seconds']:8.2f} s "
                      f"{entry['peak_rss_mb']:8.0f} MB", flush=True)
    write_record(OUT, "infer_latency", results=results)


if __name__ == "__main__":
    main()

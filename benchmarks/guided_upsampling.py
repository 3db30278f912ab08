"""Bilateral guided upsampling, this checkout's (torch) beside an earlier revision's module (the NumPy one
before 2026-12), in the same run: seconds to fit the grid on a 512-px pair and to slice it at 1200×900, 12 and
24 megapixels (median of `--repeats`), and the largest difference between their outputs.

    python benchmarks/guided_upsampling.py [--against 02b111a] [--sizes 1200x900 4000x3000 6000x4000]

The earlier module is read with `git show REV:src/expocorr/[imaging/]guided_upsampling.py`. The photo is a real one
(scikit-image's astronaut) resized to each size; the operator a smooth local tone curve and colour mix.
Writes reports/bench/guided_upsampling.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch

REPO = Path(__file__).resolve().parents[1]
OUT = Path("reports/bench/guided_upsampling.json")
SIZES = ["1200x900", "4000x3000", "6000x4000"]
LOW_SIDE = 512


def module_at(revision: str, folder: Path):
    """The guided_upsampling module of `revision`, imported from a copy under `folder`."""
    for where in ("src/expocorr/imaging/guided_upsampling.py", "src/expocorr/guided_upsampling.py"):  # after, before
        shown = subprocess.run(["git", "show", f"{revision}:{where}"], cwd=REPO, capture_output=True, text=True)
        if shown.returncode == 0:
            break
    else:
        raise SystemExit(f"--against {revision}: no guided_upsampling.py there")
    text = shown.stdout
    path = folder / f"guided_upsampling_{revision}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def operator(rgb: np.ndarray) -> np.ndarray:
    """A smooth local operator: a tone curve varying left to right and a colour mix."""
    gamma = np.linspace(0.5, 1.5, rgb.shape[1], dtype=np.float32)[None, :, None]
    mix = np.array([[0.9, 0.1, 0.0], [0.05, 0.9, 0.05], [0.0, 0.1, 0.9]], dtype=np.float32)
    return np.clip(rgb**gamma @ mix.T, 0.0, 1.0)


def timed(fn, repeats: int) -> tuple[float, object]:
    seconds, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="02b111a", help="the earlier revision (default: 02b111a, NumPy)")
    parser.add_argument("--sizes", nargs="*", default=SIZES)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from expocorr.imaging import guided_upsampling as current
    from record import write_record

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        earlier = module_at(args.against, Path(tmp))
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            full = cv2.resize(skimage.data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)
            full = full.astype(np.float32) / np.float32(255.0)
            scale = LOW_SIDE / max(width, height)
            low = cv2.resize(full, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
            low_out = operator(low)
            entry = {"size": size, "megapixels": round(width * height / 1e6, 2)}
            outputs = {}
            for name, module in (("this", current), (args.against, earlier)):
                fit, grid = timed(lambda m=module: m.fit_grid(low, low_out), args.repeats)
                slice_, out = timed(lambda m=module, g=grid: m.slice_grid(g, full, low.shape[:2]), args.repeats)
                entry[name] = {"fit_seconds": round(fit, 3), "slice_seconds": round(slice_, 3)}
                outputs[name] = out
            entry["max_abs_difference"] = float(np.abs(outputs["this"] - outputs[args.against]).max())
            results.append(entry)
            print(entry, flush=True)
    write_record(OUT, "guided_upsampling", against=args.against, low_side=LOW_SIDE, repeats=args.repeats,
                 torch_threads=torch.get_num_threads(), results=results)


if __name__ == "__main__":
    main()

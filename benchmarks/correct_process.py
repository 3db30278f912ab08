"""`expocorr correct` as a whole process (start-up, load, decode, correct, encode, write) on one photo, this
checkout's code beside an earlier revision's, in the same run: wall seconds (median of `--repeats`) and peak
RSS of the process, per method and photo size.

    python benchmarks/correct_process.py --against 02b111a [--methods identity clahe PATH/model.pt ...]
        [--sizes 1200x900 4000x3000] [--repeats 3]

The earlier revision is checked out into a temporary folder (`git worktree`) and run from its source with
this environment's packages (PYTHONPATH), so both columns use the same Python, torch and libraries. The photo
is a real one (scikit-image's astronaut) resized to each size and saved as a JPEG (quality 92); outputs are
JPEG (`--format same`). Writes reports/bench/correct_process.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = Path("reports/bench/correct_process.json")
SIZES = ["1200x900", "4000x3000"]
METHODS = ["identity", "clahe", "gamma_auto"]


def photo(folder: Path, size: str) -> Path:
    import cv2
    import skimage.data

    width, height = (int(v) for v in size.split("x"))
    path = folder / f"photo_{size}.jpg"
    rgb = cv2.resize(skimage.data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(path), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def once(src: Path, method: str, image: Path, out: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one `expocorr correct` process running the code under `src`."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "expocorr.cli", "correct", str(image), "--model", method, "-o", str(out),
           "--overwrite"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=out.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{method} on {image.name} ({src}): failed:\n{stderr[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the earlier revision (a git commit or branch)")
    parser.add_argument("--methods", nargs="*", default=METHODS, help="baselines or model files (default: "
                        f"{' '.join(METHODS)})")
    parser.add_argument("--sizes", nargs="*", default=SIZES, help="WIDTHxHEIGHT (default: 1200x900 4000x3000)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from record import write_record

    revision = subprocess.run(["git", "rev-parse", "--short", args.against], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    results = []
    with tempfile.TemporaryDirectory(prefix="expocorr-bench-") as tmp:
        tmp = Path(tmp)
        earlier = tmp / "earlier"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(earlier), revision], cwd=REPO, check=True)
        try:
            versions = {"this": REPO / "src", revision: earlier / "src"}
            for size in args.sizes:
                image = photo(tmp, size)
                for method in args.methods:
                    for version, src in versions.items():
                        runs = [once(src, method, image, tmp / "out") for _ in range(args.repeats)]
                        entry = {"code": version, "method": Path(method).parent.name if method.endswith(".pt")
                                 else method, "size": size, "seconds": round(statistics.median(r[0] for r in runs), 3),
                                 "all_seconds": [round(r[0], 3) for r in runs],
                                 "peak_rss_mb": round(max(r[1] for r in runs), 1)}
                        results.append(entry)
                        print(f"{version:8s} {entry['method']:16s} {size:10s} {entry['seconds']:7.2f} s "
                              f"{entry['peak_rss_mb']:7.0f} MB", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(earlier)], cwd=REPO, check=False)
    write_record(OUT, "correct_process", against=revision, repeats=args.repeats, results=results)


if __name__ == "__main__":
    main()

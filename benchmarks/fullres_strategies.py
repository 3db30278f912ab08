"""Full-resolution strategies compared: PSNR of each trained model run directly at full resolution
vs tiled vs guided-upsampled (and Zero-DCE++ at curve-estimation scale 1 vs its paper's downscale),
on a synthetic test split rendered at full size — the numbers behind `inference.STRATEGIES`.

Run in a repository whose models are trained and whose data/splits/test.csv holds large images
(e.g. `data.source: folder`, `render.max_side: 1200` or null):

    python benchmarks/fullres_strategies.py [--split data/splits/test.csv] [--models models] [--limit N]

Pairs whose input equals the reference (synthetic EV 0) are left out, as in the evaluate stage's
`overall`. Writes reports/bench/fullres_strategies.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from expocorr import inference
from expocorr.imaging.images import read_rgb, to_uint8
from expocorr.metrics import psnr
from expocorr.tables import read_csv
from record import write_record

OUT = Path("reports/bench/fullres_strategies.json")


def strategies(name: str) -> dict:
    """Strategy label -> function(model, rgb, device) for model `name`."""
    out = {"direct": lambda m, x, d: inference._forward(m, x, d),
           "tiled": lambda m, x, d: inference.run_tiled(m, x, d),
           "guided": lambda m, x, d: inference.run_model(m, x, d, strategy="guided")}
    if name == "zerodce_pp":
        out["direct (paper scale)"] = lambda m, x, d: inference.run_model(m, x, d, strategy="direct")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="data/splits/test.csv")
    parser.add_argument("--models", default="models")
    parser.add_argument("--only", nargs="*", help="model names (default: every models/*/model.pt)")
    parser.add_argument("--limit", type=int, default=None, help="use this many pairs, evenly spaced (default: all)")
    args = parser.parse_args()
    device = torch.device("cpu")
    rows = [r for r in read_csv(args.split)]
    pairs = []
    for r in rows:
        image, reference = read_rgb(r["input"]), to_uint8(read_rgb(r["reference"]))
        if not np.array_equal(to_uint8(image), reference):
            pairs.append((image, reference))
    if args.limit and args.limit < len(pairs):
        pairs = [pairs[int(i)] for i in np.linspace(0, len(pairs) - 1, args.limit).round()]
    sizes = sorted({p[0].shape[:2] for p in pairs})
    results = []
    for path in sorted(Path(args.models).glob("*/model.pt")):
        if args.only and path.parent.name not in args.only:
            continue
        model, checkpoint = inference.load_model(path, device)
        name = checkpoint["model"]
        for label, fn in strategies(name).items():
            t0 = time.perf_counter()
            scores = [psnr(to_uint8(fn(model, image, device)), reference) for image, reference in pairs]
            entry = {"model": name, "strategy": label, "psnr": float(np.mean(scores)), "n": len(scores),
                     "seconds": time.perf_counter() - t0, "chosen": label == inference.STRATEGIES.get(name)}
            results.append(entry)
            print(f"{name:16s} {label:22s} {entry['psnr']:6.2f} dB  ({entry['seconds']:.0f} s)", flush=True)
    out = OUT.with_name(f"{OUT.stem}_{'_'.join(args.only)}.json") if args.only else OUT
    write_record(out, "fullres_strategies", split=args.split, n_pairs=len(pairs), sizes=[list(s) for s in sizes],
                 guided_side=inference.GUIDED_SIDE, tile=inference.TILE, tile_overlap=inference.TILE_OVERLAP,
                 results=results)


if __name__ == "__main__":
    main()

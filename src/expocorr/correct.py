"""`expocorr correct`: correct people's own photos at full resolution with a trained model or a baseline.

    expocorr correct PHOTO_OR_FOLDER... [--model NAME|PATH] [-o OUTDIR] [--suffix _corrected]
                     [--format same|jpg|png|tif] [--quality 95] [--device auto] [--overwrite]

Folders are searched recursively for JPEG, PNG, TIFF and camera raw files. The method is loaded once
and applied through `expocorr.inference` — the code path of the evaluate stage, with its
full-resolution strategies — and each photo is read and written by `expocorr.photo_io` (bit depth,
alpha, grayscale, orientation, EXIF and ICC profile kept). One bad file is one error line naming it;
the others are still corrected and the exit code is 1. Outputs are written atomically and never
replace an input unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

from tqdm import tqdm

from expocorr.errors import UserError

log = logging.getLogger(__name__)

METRICS = Path("metrics")
# What a baseline learns about a user's photo: nothing of a synthesis (no EV); sRGB-encoded files.
PHOTO_CTX = {"ev": None, "render": {"curve": "srgb", "gamma": 2.2, "tau": 1.0}}
NOT_CORRECTORS = {"identity"}  # never the default: it changes nothing


class CorrectError(UserError, ValueError):
    """The correction cannot start (no method, no photos); the message says what to do."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `correct` subcommand's options."""
    parser.add_argument("inputs", nargs="+", metavar="PHOTO_OR_FOLDER", help="photos and folders (searched recursively)")
    parser.add_argument("--model", default=None,
                        help="a trained model (name in models/ or a model.pt path) or a baseline; default: the best "
                             "method on the leaderboard (metrics/*.json)")
    parser.add_argument("-o", "--outdir", default=None,
                        help="write here (a folder's sub-folders are kept); default: next to each photo")
    parser.add_argument("--suffix", default="_corrected", help="added to each output's name (default: _corrected)")
    parser.add_argument("--format", default="same", choices=["same", "jpg", "png", "tif"],
                        help="output format (default: same as the input; camera raw -> 16-bit TIFF)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality 1-100 (default: 95)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps")
    parser.add_argument("--overwrite", action="store_true", help="allow an output to replace an input file")


def best_method(metrics: Path = METRICS) -> str:
    """The method ranked first by headline PSNR in metrics/*.json that can correct a photo on its own
    (oracles, exposure-stack methods and the identity are passed over)."""
    from expocorr import inference
    from expocorr.baselines import BASELINES

    ranked = []
    for path in sorted(metrics.glob("*.json")) if metrics.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            psnr = float(data["overall"]["psnr"])
            details = path.parent / "details" / path.name  # method, kind, oracle (evaluate's sidecar)
            data = {**json.loads(details.read_text(encoding="utf-8")), **data} if details.exists() else data
        except (OSError, ValueError, KeyError, TypeError):
            continue
        name = str(data.get("method") or path.stem)
        if data.get("oracle") or name in NOT_CORRECTORS or not math.isfinite(psnr):
            continue
        if name in BASELINES and BASELINES[name].needs_stack:
            continue
        if data.get("kind") == "model" and not inference.model_path(name).exists():
            continue
        ranked.append((psnr, name))
    if not ranked:
        raise CorrectError(f"no leaderboard to pick a method from ({metrics}/*.json); run the pipeline first "
                           "(`snakemake --cores all` or `dvc repro`), or name one with --model (e.g. --model clahe)")
    return max(ranked)[1]


def load_corrector(spec: str | None, device, metrics: Path = METRICS):
    """The `inference.Method` for --model `spec` (None: the best on the leaderboard in `metrics`)."""
    from expocorr import inference
    from expocorr.baselines import BASELINES

    if spec is None:
        spec = best_method(metrics)
        log.info("correct: using %s, the best method on the leaderboard", spec)
    path = Path(spec)
    if spec.endswith(".pt") or (path.is_file() and spec not in BASELINES):
        if not path.is_file():
            raise CorrectError(f"--model {spec}: no such model file")
        return inference.load_method(path.parent.name, device, path=path)
    if spec in BASELINES:
        baseline = BASELINES[spec]
        if baseline.oracle:
            raise CorrectError(f"--model {spec}: an oracle baseline, it needs the exposure a test image was "
                               "rendered at; your photos have none")
        if baseline.needs_stack:
            raise CorrectError(f"--model {spec}: merges an exposure stack, it cannot correct single photos")
    return inference.load_method(spec, device)


def collect(inputs: list[str], suffix: str, outdir: Path | None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(photo, its folder root) pairs to correct, and error lines for inputs that do not exist.

    In folders, files ending in `suffix` (outputs of an earlier run) and anything under `outdir` are skipped.
    """
    from expocorr.photo_io import is_photo

    found: list[tuple[Path, Path]] = []
    errors: list[str] = []
    skipped = 0
    out_resolved = outdir.resolve() if outdir is not None else None
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            # Broken links are kept: they get an error line like any unreadable photo, not silence.
            for f in sorted(p for p in path.rglob("*")
                            if (p.is_file() or p.is_symlink()) and is_photo(p) and not p.name.startswith(".")):
                if (suffix and f.stem.endswith(suffix)) or (
                        out_resolved is not None and out_resolved in f.resolve().parents):
                    skipped += 1
                    continue
                found.append((f, path))
        elif path.exists():
            found.append((path, path.parent))
        else:
            errors.append(f"{path}: no such file or folder")
    if skipped:
        log.info("correct: skipped %d files named *%s or inside the output folder (earlier outputs)", skipped, suffix)
    seen, unique = set(), []
    for f, root in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((f, root))
    return unique, errors


def output_path(photo_path: Path, root: Path, outdir: Path | None, suffix: str, fmt: str, in_format: str) -> Path:
    """Where the corrected `photo_path` goes: OUTDIR/<path under its folder> or its own folder, + suffix."""
    from expocorr.photo_io import FORMAT_SUFFIX

    ext = photo_path.suffix if fmt == in_format else FORMAT_SUFFIX[fmt]
    name = f"{photo_path.stem}{suffix}{ext}"
    if outdir is None:
        return photo_path.with_name(name)
    return outdir / photo_path.parent.relative_to(root) / name  # root: the folder given, or the photo's own


def run(args: argparse.Namespace) -> int:
    """Correct every photo named by `args`; 0 when all were written, 1 when any failed."""
    from expocorr import inference
    from expocorr.photo_io import output_format, read_photo, write_photo

    if not 1 <= args.quality <= 100:
        raise CorrectError(f"--quality {args.quality}: must be 1..100")
    outdir = Path(args.outdir) if args.outdir else None
    photos, errors = collect(args.inputs, args.suffix, outdir)
    for line in errors:
        log.error("correct: %s", line)
    if not photos:
        raise CorrectError("no photos found (JPEG, PNG, TIFF or camera raw) in " + ", ".join(args.inputs))
    device = inference.pick_device(args.device)
    corrector = load_corrector(args.model, device)
    inputs = {p.resolve() for p, _ in photos}
    outputs: dict[Path, Path] = {}  # output -> the photo it was written for, in this run
    failed = len(errors)
    written = 0
    for path, root in tqdm(photos, desc=f"correct ({corrector.name})", unit="photo", disable=None):
        try:
            photo = read_photo(path)
            fmt = output_format(photo, args.format)
            out = output_path(path, root, outdir, args.suffix, fmt, photo.format)
            if out.resolve() in inputs and not args.overwrite:
                raise CorrectError(f"{out} is an input photo; not overwritten (pass --overwrite, or change "
                                   "--suffix / -o)")
            if out.resolve() in outputs:
                raise CorrectError(f"{out} was just written for {outputs[out.resolve()]}; not overwritten "
                                   "(two photos with the same name and output format)")
            if photo.alpha is not None and fmt == "jpeg":
                log.warning("correct: %s: JPEG has no alpha channel; it is dropped in %s", path, out)
            corrected = corrector(photo.rgb, PHOTO_CTX)
            photo.rgb = None  # the input pixels are no longer needed: free them before encoding
            write_photo(out, photo, corrected, fmt, args.quality)
            outputs[out.resolve()] = path
            del corrected
            written += 1
        except (UserError, OSError, ValueError, MemoryError) as exc:
            failed += 1
            message = str(exc)
            log.error("correct: %s", message if message.startswith(str(path)) else f"{path}: {message}")
        except Exception as exc:  # a bug: still one line, and the other photos go on
            failed += 1
            log.error("correct: %s: unexpected %s: %s", path, type(exc).__name__, exc)
    log.info("correct: %d of %d photos corrected with %s%s", written, len(photos) + len(errors), corrector.name,
             f", {failed} failed" if failed else "")
    return 1 if failed else 0

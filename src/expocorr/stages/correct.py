"""`expocorr correct`: correct people's own photos at full resolution with a trained model or a baseline.

    expocorr correct PHOTO_OR_FOLDER... [--model NAME|PATH] [--checkpoint-format auto|expocorr|official|pytorch_port]
                     [-o OUTDIR] [--suffix _corrected]
                     [--format same|jpg|png|tif] [--quality 95] [--device auto] [--precision auto]
                     [--overwrite] [--params params.yaml] [--timings FILE]

Folders are searched recursively for JPEG, PNG, TIFF and camera raw files. The method is loaded once
and applied through `expocorr.inference` — the code path of the evaluate stage, with its
full-resolution strategies — and each photo is read and written by `expocorr.imaging.photo_io` (bit depth,
alpha, grayscale, orientation, EXIF and ICC profile kept). One bad file is one error line naming it
(quoted); the others are still corrected and the exit code is 1. Photos declaring more than
``correct.max_megapixels`` are refused before decoding, which bounds the memory. Outputs are written
atomically; each folder's MANIFEST records the sha256 of what was written there, and an existing file
is replaced only when it is such an output, unchanged, and not an input — or with ``--overwrite``.

A batch is a pipeline: the next photo is decoded (one thread) and the previous one encoded and written
(another) while the current one is corrected, one photo ahead and one behind, so at most three photos are
in memory. Each photo's checks, messages and manifest update still happen in the photos' order, so the
outputs and the messages are those of one photo at a time. The last line gives photos/s; ``--timings``
writes the time of each phase (load, decode, compute, encode) as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from expocorr.errors import UserError

log = logging.getLogger(__name__)

METRICS = Path("metrics")
# What a baseline learns about a user's photo: nothing of a synthesis (no EV); sRGB-encoded files.
PHOTO_CTX = {"ev": None, "render": {"curve": "srgb", "gamma": 2.2, "tau": 1.0}}
NOT_CORRECTORS = {"identity"}  # never the default: it changes nothing
DEFAULT_MAX_MEGAPIXELS = 100.0  # correct.max_megapixels of params.yaml, used where there is no params file
MANIFEST = ".expocorr-correct.json"  # in each output folder: output name -> sha256 of the bytes written
MANIFEST_MAX_BYTES = 64 * 2**20


class CorrectError(UserError, ValueError):
    """The correction cannot start (no method, no photos); the message says what to do."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `correct` subcommand's options."""
    parser.add_argument("inputs", nargs="+", metavar="PHOTO_OR_FOLDER", help="photos and folders (searched recursively)")
    parser.add_argument("--model", default=None,
                        help="a trained model (name in models/ or a model.pt path; an authors' official checkpoint "
                             "file too, e.g. Zero-DCE's Epoch99.pth, or MSEC's PyTorch port's MSPECnet_woadv.pth) or "
                             "a baseline; default: the best learned model on the leaderboard (metrics/*.json), on its "
                             "real-error column (evaluate.extra_sets) when it has one")
    parser.add_argument("--checkpoint-format", default="auto", choices=["auto", "expocorr", "official", "pytorch_port"],
                        help="how to read a --model file: expocorr's model file, an authors' official state_dict "
                             "(zerodce, zerodce_pp), the snapshot of MSEC's PyTorch port (LZ-CH), or auto: told "
                             "apart by its keys (default)")
    parser.add_argument("-o", "--outdir", default=None,
                        help="write here (a folder's sub-folders are kept); default: next to each photo")
    parser.add_argument("--suffix", default="_corrected", help="added to each output's name (default: _corrected)")
    parser.add_argument("--format", default="same", choices=["same", "jpg", "png", "tif"],
                        help="output format (default: same as the input; camera raw -> 16-bit TIFF)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality 1-100 (default: 95)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="a model's arithmetic: auto (fp16 on CUDA, bf16 on a CPU with native bfloat16, for "
                             "the models measured within 0.05 dB PSNR of fp32; else fp32, the default on most "
                             "CPUs), fp32, bf16 or fp16 (CUDA only); baselines always run as they are")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow an output to replace an existing file: an input, or a file this command did "
                             "not write (default: only its own unchanged earlier outputs are replaced)")
    parser.add_argument("--params", default=None,
                        help="params file for correct.max_megapixels and train.plugins (the plugin models' "
                             "modules) (default: params.yaml when the current folder "
                             f"has one, else {DEFAULT_MAX_MEGAPIXELS:g})")
    parser.add_argument("--timings", default=None, metavar="FILE",
                        help="write the seconds of each phase (load, decode, compute, encode) and photos/s as JSON")


def max_megapixels(params_file: str | None) -> float:
    """`correct.max_megapixels` of `params_file` (None: ./params.yaml if present, else the default); loading
    it imports the plugin models of its train.plugins."""
    from expocorr import params

    if params_file is None and not Path("params.yaml").is_file():
        return DEFAULT_MAX_MEGAPIXELS
    return float(params.load(params_file or "params.yaml")["correct"]["max_megapixels"])


def _leaderboard(metrics: Path) -> list[tuple[str, dict]]:
    """(method, metrics/NAME.json merged with its details sidecar) for every readable metrics file."""
    entries = []
    for path in sorted(metrics.glob("*.json")) if metrics.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            details = path.parent / "details" / path.name  # method, kind, oracle (evaluate's sidecar)
            data = {**json.loads(details.read_text(encoding="utf-8")), **data} if details.exists() else data
            float(data["overall"]["psnr"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        entries.append((str(data.get("method") or path.stem), data))
    return entries


def _psnr(data: dict, column: str | None) -> float:
    """PSNR on extra set `column` (metrics `extra`), or the synthetic test headline (None); NaN if absent."""
    group = data["overall"] if column is None else (data.get("extra") or {}).get(column) or {}
    try:
        return float(group["psnr"])
    except (KeyError, TypeError, ValueError):
        return math.nan


def best_method(metrics: Path = METRICS) -> tuple[str, str]:
    """The trained model `correct` uses without --model, and why (one line): the best by PSNR on the first
    extra set of real exposure errors (`extra` of metrics/NAME.json, ``evaluate.extra_sets``) that the
    models were scored on, else by the synthetic test split's headline PSNR. Only models whose
    models/NAME/model.pt exists count; a baseline is used only when --model names it."""
    from expocorr import methods
    from expocorr.baselines import BASELINES

    entries = _leaderboard(metrics)
    learned = [(name, data) for name, data in entries
               if data.get("kind") in methods.LEARNED_KINDS and methods.model_path(name).exists()]
    baselines = [(name, data) for name, data in entries if data.get("kind") not in methods.LEARNED_KINDS
                 and not data.get("oracle") and name not in NOT_CORRECTORS and not (name in BASELINES and BASELINES[name].needs_stack)]
    sets = [key for _, data in learned for key in (data.get("extra") or {})]
    column = next((key for key in sets if any(math.isfinite(_psnr(d, key)) for _, d in learned)), None)
    ranked = sorted(((_psnr(d, column), n) for n, d in learned if math.isfinite(_psnr(d, column))), reverse=True)
    if not ranked:
        best = max(((_psnr(d, None), n) for n, d in baselines if math.isfinite(_psnr(d, None))), default=None)
        hint = f" (the best baseline there: --model {best[1]})" if best else " (e.g. --model clahe)"
        raise CorrectError(f"no trained model on the leaderboard ({metrics}/*.json with models/NAME/model.pt); "
                           "run the pipeline first (`snakemake --cores all` or `dvc repro`), or name a model file "
                           f"or a baseline with --model{hint}")
    psnr, name = ranked[0]
    rivals = sorted(((_psnr(d, column), n) for n, d in baselines if math.isfinite(_psnr(d, column))), reverse=True)
    rival = f"; {rivals[0][1]} {rivals[0][0]:.1f}" if rivals else ""
    where = f"on {column}" if column else "on the synthetic test split"
    return name, f"best learned model {where} ({psnr:.1f} dB PSNR{rival})"


def load_corrector(spec: str | None, device: str = "auto", metrics: Path = METRICS, checkpoint_format: str = "auto",
                   precision: str = "auto"):
    """The `methods.Method` for --model `spec` (None: the best on the leaderboard in `metrics`); a model on
    `device` (--device: `inference.pick_device`) in `precision` (`inference.pick_precision`), a file read as
    `checkpoint_format` (`inference.load_model`). A baseline loads without torch (start-up: README "Correct
    your own photos") and runs as it is whatever `precision` says."""
    from expocorr import methods
    from expocorr.baselines import BASELINES

    def on_device():
        from expocorr import inference

        return inference.pick_device(device)

    if spec is None:
        spec, reason = best_method(metrics)
        log.info("correct: using %s: %s", spec, reason)
    path = Path(spec)
    if spec.endswith(".pt") or (path.is_file() and spec not in BASELINES):
        if not path.is_file():
            raise CorrectError(f"--model {spec!r}: no such model file")
        return methods.load_method(path.parent.name, on_device(), path=path, checkpoint_format=checkpoint_format,
                                   precision=precision)
    if spec in BASELINES:
        baseline = BASELINES[spec]
        if baseline.oracle:
            raise CorrectError(f"--model {spec}: an oracle baseline, it needs the exposure a test image was "
                               "rendered at; your photos have none")
        if baseline.needs_stack:
            raise CorrectError(f"--model {spec}: merges an exposure stack, it cannot correct single photos")
        if precision not in ("auto", "fp32"):
            log.warning("correct: --precision %s: applies to models only; baseline %s runs as it is", precision, spec)
        return methods.load_method(spec)
    return methods.load_method(spec, on_device(), precision=precision)


def collect(inputs: list[str], suffix: str, outdir: Path | None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(photo, its folder root) pairs to correct, and error lines for inputs that do not exist.

    In folders, files ending in `suffix` (outputs of an earlier run) and anything under `outdir` are skipped.
    """
    from expocorr.imaging.photo_io import is_photo, quoted

    found: list[tuple[Path, Path]] = []
    errors: list[str] = []
    skipped = 0
    out_resolved = outdir.resolve() if outdir is not None else None
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            # Broken links are kept: they get an error line like any unreadable photo, not silence.
            # FIFOs and devices with a photo's suffix are kept too: read_photo refuses them with the reason.
            for f in sorted(p for p in path.rglob("*")
                            if not p.is_dir() and is_photo(p) and not p.name.startswith(".")):
                if (suffix and f.stem.endswith(suffix)) or (
                        out_resolved is not None and out_resolved in f.resolve().parents):
                    skipped += 1
                    continue
                found.append((f, path))
        elif path.exists():
            found.append((path, path.parent))
        else:
            errors.append(f"{quoted(path)}: no such file or folder")
    if skipped:
        log.info("correct: skipped %d files named *%s or inside the output folder (earlier outputs)", skipped,
                 quoted(suffix))
    seen, unique = set(), []
    for f, root in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((f, root))
    return unique, errors


def output_path(photo_path: Path, root: Path, outdir: Path | None, suffix: str, fmt: str, in_format: str) -> Path:
    """Where the corrected `photo_path` goes: OUTDIR/<path under its folder> or its own folder, + suffix."""
    from expocorr.imaging.photo_io import FORMAT_SUFFIX

    ext = photo_path.suffix if fmt == in_format else FORMAT_SUFFIX[fmt]
    name = f"{photo_path.stem}{suffix}{ext}"
    if outdir is None:
        return photo_path.with_name(name)
    return outdir / photo_path.parent.relative_to(root) / name  # root: the folder given, or the photo's own


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(folder: Path) -> dict[str, str]:
    """Output name -> sha256 that `correct` recorded writing in `folder` ({} when there is no readable one)."""
    from expocorr.imaging.images import ImageError, read_regular

    path = folder / MANIFEST
    if not os.path.lexists(path):
        return {}
    try:
        outputs = json.loads(read_regular(path, max_bytes=MANIFEST_MAX_BYTES))["outputs"]
        return {str(k): str(v) for k, v in outputs.items()}
    except (ImageError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("correct: %s: not a readable manifest (%s); the files there count as not ours", repr(str(path)),
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return {}


def ours(out: Path, recorded: dict[str, str], max_bytes: int) -> bool:
    """Whether the existing `out` is a regular file holding exactly what `correct` recorded writing there."""
    from expocorr.imaging.images import ImageError, read_regular

    if out.name not in recorded or out.is_symlink():
        return False
    try:
        return sha256(read_regular(out, max_bytes=max_bytes)) == recorded[out.name]
    except ImageError:
        return False


def _failure(name: str, exc: BaseException) -> str:
    """The one error line of photo `name` that failed with `exc`."""
    if isinstance(exc, MemoryError):
        return f"{name}: out of memory (lower correct.max_megapixels, or free memory)"
    if isinstance(exc, (UserError, OSError, ValueError)):
        message = str(exc)
        return message if message.startswith(name) else f"{name}: {message}"
    return f"{name}: unexpected {type(exc).__name__}: {str(exc)!r}"  # a bug: still one line, the others go on


WORKER = "correct-io"  # the name prefix of the decode and encode threads
HELD_BACK = ("expocorr.imaging.photo_io",)  # loggers those threads use: their records are replayed in the photos' order
_held = threading.local()


class _HoldBack(logging.Filter):
    """Keeps a worker thread's log records (`_in_worker`) for the main thread to replay in order."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not threading.current_thread().name.startswith(WORKER):
            return True
        _held.records.append(record)
        return False


def _in_worker(fn, *args) -> tuple[object, BaseException | None, float, list[logging.LogRecord]]:
    """(fn(*args) or None, its exception or None, seconds, the log records it emitted), for a worker thread."""
    _held.records = []
    t0 = time.perf_counter()
    try:
        return fn(*args), None, time.perf_counter() - t0, _held.records
    except Exception as exc:  # re-raised in the main thread, in order (`run`)
        return None, exc, time.perf_counter() - t0, _held.records


def _encode_and_write(photo, corrected, fmt: str, quality: int, out: Path) -> str:
    """Encode `corrected` as `fmt` and write it to `out` atomically; the sha256 of the bytes written."""
    from expocorr.atomic import write_bytes
    from expocorr.imaging.photo_io import encode_photo, quoted

    data = encode_photo(photo, corrected, fmt, quality)
    try:
        write_bytes(out, data)
    except OSError as exc:  # atomic's message has the name unquoted: say it again, quoted
        raise CorrectError(f"{quoted(out)}: cannot write: {os.strerror(exc.errno) if exc.errno else exc}") from None
    return sha256(data)


def _record(level: int, text: str) -> logging.LogRecord:
    return log.makeRecord(log.name, level, __file__, 0, "correct: %s", (text,), None)


class _Pending:
    """A photo whose output is being encoded and written (`job`), and its log records so far."""

    def __init__(self, path: Path, out: Path, recorded: dict, records: list, job: Future) -> None:
        self.path, self.out, self.recorded, self.records, self.job = path, out, recorded, records, job


def run(args: argparse.Namespace) -> int:
    """Correct every photo named by `args`; 0 when all were written, 1 when any failed."""
    from expocorr.atomic import write_text
    from expocorr.imaging.photo_io import max_file_bytes, output_format, quoted, read_photo

    if not 1 <= args.quality <= 100:
        raise CorrectError(f"--quality {args.quality}: must be 1..100")
    limit = max_megapixels(args.params)
    outdir = Path(args.outdir) if args.outdir else None
    photos, errors = collect(args.inputs, args.suffix, outdir)
    for line in errors:
        log.error("correct: %s", line)
    if not photos:
        raise CorrectError("no photos found (JPEG, PNG, TIFF or camera raw) in " + ", ".join(map(quoted, args.inputs)))
    t0 = time.perf_counter()
    corrector = load_corrector(args.model, args.device, METRICS, args.checkpoint_format, args.precision)
    seconds = {"load": time.perf_counter() - t0, "decode": 0.0, "compute": 0.0, "encode": 0.0}
    if corrector.precision:
        log.info("correct: %s in %s (%s)", corrector.name, *corrector.precision)
    inputs = {p.resolve() for p, _ in photos}
    outputs: dict[Path, Path] = {}  # output -> the photo it was written for, in this run
    manifests: dict[Path, dict[str, str]] = {}  # output folder -> its manifest
    failed = len(errors)
    written = 0
    progress = tqdm(total=len(photos), desc=f"correct ({corrector.name})", unit="photo", disable=None)

    def emit(records: list[logging.LogRecord]) -> None:
        for record in records:
            logging.getLogger(record.name).handle(record)
        progress.update(1)

    def settle(pending: _Pending | None) -> None:
        """Wait for `pending`'s output, record it in its folder's manifest, say what happened (in order)."""
        nonlocal written, failed
        if pending is None:
            return
        digest, exc, took, records = pending.job.result()
        pending.records += records
        seconds["encode"] += took
        try:
            if exc is not None:
                raise exc
            pending.recorded[pending.out.name] = digest
            target = pending.out.parent / MANIFEST
            try:
                write_text(target, json.dumps({"written_by": "expocorr correct", "outputs": pending.recorded},
                                              indent=1, sort_keys=True) + "\n")
            except OSError as error:
                raise CorrectError(f"{quoted(target)}: cannot write: "
                                   f"{os.strerror(error.errno) if error.errno else error}") from None
            outputs[pending.out.resolve()] = pending.path
            written += 1
        except Exception as error:  # one line per photo, whatever went wrong (`_failure`)
            failed += 1
            pending.records.append(_record(logging.ERROR, _failure(quoted(pending.path), error)))
        emit(pending.records)

    holdback = _HoldBack()
    for name in HELD_BACK:
        logging.getLogger(name).addFilter(holdback)
    start = time.perf_counter()
    pending: _Pending | None = None
    try:
        with ThreadPoolExecutor(1, thread_name_prefix=WORKER) as reader, \
                ThreadPoolExecutor(1, thread_name_prefix=WORKER) as writer:
            decoding = [reader.submit(_in_worker, read_photo, photos[0][0], limit)]
            for index, (path, root) in enumerate(photos):
                if index + 1 < len(photos):  # one photo ahead
                    decoding.append(reader.submit(_in_worker, read_photo, photos[index + 1][0], limit))
                photo, exc, took, records = decoding[index].result()
                decoding[index] = None  # its pixels go with the photo
                seconds["decode"] += took
                name = quoted(path)
                try:
                    if exc is not None:
                        raise exc
                    fmt = output_format(photo, args.format)
                    out = output_path(path, root, outdir, args.suffix, fmt, photo.format)
                    if pending is not None and (pending.out.resolve() == out.resolve() or out.parent not in manifests):
                        settle(pending)  # the checks below see what it wrote; a manifest's warning comes after it
                        pending = None
                    recorded = manifests.setdefault(out.parent, read_manifest(out.parent))
                    if out.resolve() in inputs and not args.overwrite:
                        raise CorrectError(f"{quoted(out)} is an input photo; not overwritten (pass --overwrite, "
                                           "or change --suffix / -o)")
                    if out.resolve() in outputs:
                        raise CorrectError(f"{quoted(out)} was just written for {quoted(outputs[out.resolve()])}; "
                                           "not overwritten (two photos with the same name and output format)")
                    if os.path.lexists(out) and not args.overwrite and not ours(out, recorded, max_file_bytes(limit)):
                        raise CorrectError(f"{quoted(out)} exists and is not an unchanged output of expocorr correct "
                                           f"(not in {MANIFEST} there, or changed since); not replaced (pass "
                                           "--overwrite, or change --suffix / -o)")
                    if photo.alpha is not None and fmt == "jpeg":
                        records.append(_record(logging.WARNING, f"{name}: JPEG has no alpha channel; it is dropped "
                                                                f"in {quoted(out)}"))
                    t1 = time.perf_counter()
                    corrected = corrector(photo.rgb, PHOTO_CTX)
                    seconds["compute"] += time.perf_counter() - t1
                    photo.rgb = None  # the input pixels are no longer needed: free them before encoding
                    job = writer.submit(_in_worker, _encode_and_write, photo, corrected, fmt, args.quality, out)
                    del corrected, photo
                except Exception as error:  # one line per photo, whatever went wrong (`_failure`)
                    failed += 1
                    settle(pending)
                    pending = None
                    emit(records + [_record(logging.ERROR, _failure(name, error))])
                    continue
                settle(pending)
                pending = _Pending(path, out, recorded, records, job)
            settle(pending)
    finally:
        for name in HELD_BACK:
            logging.getLogger(name).removeFilter(holdback)
        progress.close()
    seconds["batch"] = time.perf_counter() - start
    rate = written / seconds["batch"]
    log.info("correct: %d of %d photos corrected with %s%s; %.2f photos/s (%.1f s; decode %.1f, compute %.1f, "
             "encode %.1f s, overlapped)", written, len(photos) + len(errors), corrector.name,
             f", {failed} failed" if failed else "", rate, seconds["batch"], seconds["decode"], seconds["compute"],
             seconds["encode"])
    if args.timings:
        write_text(args.timings, json.dumps({
            "method": corrector.name, "kind": corrector.kind,
            "precision": corrector.precision[0] if corrector.precision else None,
            "photos": len(photos) + len(errors), "written": written, "failed": failed,
            "seconds": {key: round(value, 4) for key, value in seconds.items()},
            "photos_per_second": round(rate, 4)}, indent=1) + "\n")
    return 1 if failed else 0

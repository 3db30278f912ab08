"""The `expocorr` command: one subcommand per pipeline stage."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import importlib

from expocorr import params
from expocorr.errors import UserError, printable

# Stage name -> (module with its `run` entry point, help). Modules are imported on use: torch and
# MLflow load only for the stages that need them.
STAGES = {
    "download": ("expocorr.stages.download", "gather source photos into data/downloads/"),
    "render": ("expocorr.stages.render", "synthesise exposure errors into data/rendered/"),
    "split": ("expocorr.stages.split", "split data/rendered/manifest.csv by scene into data/splits/"),
    "render-extra": ("expocorr.stages.render_extra", "render the real bracketed scenes of evaluate.extra_sets into "
                     "data/extra/"),
    "train": ("expocorr.stages.train", "train one model (--model NAME) into models/NAME/"),
    "pretrained": ("expocorr.stages.pretrained", "fetch and convert a published checkpoint (--name NAME of pretrained) "
                   "into models/NAME/model.pt"),
    "evaluate": ("expocorr.stages.evaluate", "evaluate one method (--method NAME) on the test split into metrics/"),
    "report": ("expocorr.stages.report", "build reports/report.{md,html}, figures/ and leaderboard.json from metrics/"),
}
CORRECT_HELP = "correct your own photos (files or folders) at full resolution with a model or a baseline"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="expocorr", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (_, help_text) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        p.add_argument("--log", metavar="FILE", help="also write the log to FILE")
        if name == "train":
            p.add_argument("--model", required=True, help="a name from train.models")
        if name == "pretrained":
            p.add_argument("--name", required=True, help="a name from pretrained")
        if name == "evaluate":
            p.add_argument("--method", required=True, help="a trained model, a published checkpoint, a baseline, or external:NAME "
                           "(the outputs in the folder of evaluate.external.NAME)")
        if name == "report":
            p.add_argument("--merge", nargs="+", metavar="LEADERBOARD", help="instead: merge these "
                           "leaderboard.json files into one table per dataset (with --out)")
            p.add_argument("--out", metavar="FILE", help="with --merge: the page to write (.md or .html)")
    # Not a pipeline stage (no --params): correct your own photos with a trained model or a baseline.
    correct = importlib.import_module("expocorr.stages.correct")
    p = sub.add_parser("correct", help=CORRECT_HELP, description=correct.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log", metavar="FILE", help="also write the log to FILE")
    correct.add_arguments(p)
    return parser


def _setup_logging(log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file and os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 writes the log file
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.log)
    try:
        if args.stage == "correct":
            return importlib.import_module("expocorr.stages.correct").run(args)
        if args.stage == "report" and (args.merge or args.out):  # no params: files in, one page out
            if not (args.merge and args.out):
                raise UserError("--merge and --out go together: expocorr report --merge A.json B.json --out merged.md")
            importlib.import_module("expocorr.stages.report").merge(args.merge, args.out)
            return 0
        loaded = params.load(args.params)
        stage = importlib.import_module(STAGES[args.stage][0])
        if args.stage == "train":
            if "WORLD_SIZE" not in os.environ:  # checked once, before any process is launched
                importlib.import_module("expocorr.machine").check_training(loaded, args.model)
            stage.relaunch_distributed(loaded, sys.argv[1:] if argv is None else argv)
            stage.run(loaded, args.model)
        elif args.stage == "evaluate":
            stage.run(loaded, args.method)
        elif args.stage == "pretrained":
            stage.run(loaded, args.name)
        else:
            stage.run(loaded)
    except (UserError, OSError) as exc:  # bad input, a missing file, a full disk: one line, no traceback
        logging.getLogger("expocorr").error("%s failed: %s", args.stage, exc)
        return 1
    except Exception as exc:
        reason = _store_write_failure(exc)
        if reason is None:
            logging.getLogger("expocorr").exception("%s failed with an unexpected error", args.stage)
            return 2
        mlflow = sys.modules.get("mlflow")
        store = f" {printable(mlflow.get_tracking_uri())}" if mlflow else ""
        logging.getLogger("expocorr").error("%s failed: cannot write the MLflow tracking store%s: %s (is the disk "
                                            "full?)", args.stage, store, reason)
        return 1
    return 0


def _store_write_failure(exc: BaseException | None) -> str | None:
    """SQLite's reason when `exc` (or an error it was raised from) is a write that the disk refused:
    MLflow's store raises them wrapped in SQLAlchemy's and its own types, not as OSError."""
    while exc is not None:
        for reason in ("disk I/O error", "database or disk is full"):
            if reason in str(exc):
                return reason
        exc = exc.__cause__ or exc.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())

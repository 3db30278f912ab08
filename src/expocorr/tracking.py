"""MLflow tracking: where runs go, what every run is tagged with, safe under concurrency.

The default store is ``sqlite:///mlflow.db``, resolved in the repository that runs the stage (the
current directory) every time; a sqlite store keeps its artifacts in ``mlartifacts/`` beside the
database file. MLflow stores artifact locations as absolute URIs (an experiment's when it is
created, each run's from its experiment's), so the store of a copied repository still points into
the original's tree: `setup` renames such an experiment to ``NAME (copy: artifacts in PATH)`` and
creates NAME afresh at this store's location, and no stage writes into a run of another experiment.

Several stages may log at once (``snakemake --cores 2`` trains two models side by side): the
store and the experiment are created up front under a file lock, and every call that touches the
store is retried while SQLite reports "database is locked".
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import subprocess
import time
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path

from expocorr.tables import read_csv

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///mlflow.db"
ARTIFACTS = "mlartifacts"
LOCK_RETRIES = 30
# Read before mlflow.set_tracking_uri, which exports the URI it is given to this variable.
_ENV_URI = os.environ.get("MLFLOW_TRACKING_URI")
SPLITS = {"train": "training", "val": "validation", "test": "testing"}  # split -> MLflow input context
IMAGE_COLUMN = re.compile(r"^(input|reference.*)$")  # split columns naming image files


def configured_uri(params: dict) -> str:
    """`tracking.uri`, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db (relative: the repository's)."""
    return params["tracking"]["uri"] or _ENV_URI or DEFAULT_URI


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite URI, absolute (a relative one from the current directory)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).absolute()


def tracking_uri(params: dict) -> str:
    """The store to use now: `configured_uri` with a relative sqlite path resolved here."""
    uri = configured_uri(params)
    db = _sqlite_file(uri)
    return f"sqlite:///{db}" if db else uri


def artifact_root(uri: str) -> str | None:
    """Where a sqlite store's runs keep their artifacts (mlartifacts/ beside the database file);
    None for other stores (a tracking server serves its own)."""
    db = _sqlite_file(uri)
    return (db.parent / ARTIFACTS).as_uri() if db else None


def baselines_experiment(params: dict) -> str:
    """The experiment of the baselines' runs, kept apart from the models' runs."""
    return f"{params['tracking']['experiment']}-baselines"


def _locked_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database table is locked" in text


def retry(fn, *args, **kwargs):
    """Call `fn`, retrying with back-off while the store answers "database is locked"."""
    for attempt in range(LOCK_RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # mlflow wraps SQLAlchemy's OperationalError in several types
            if not _locked_error(exc) or attempt == LOCK_RETRIES - 1:
                raise
            time.sleep(min(0.1 * 2**attempt, 2.0))
    raise AssertionError("unreachable")


@contextlib.contextmanager
def active_run(**start):
    """An MLflow run (`mlflow.start_run`'s arguments) ended FINISHED, or FAILED on an error, with retries."""
    run = retry(mlflow.start_run, **start)
    try:
        yield run
    except BaseException:
        retry(mlflow.end_run, "FAILED")
        raise
    retry(mlflow.end_run)


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _same_location(a: str, b: str) -> bool:
    if not (a.startswith("file:") and b.startswith("file:")):
        return a == b
    return Path(local_file_uri_to_path(a)).resolve() == Path(local_file_uri_to_path(b)).resolve()


def setup(params: dict, experiment: str | None = None) -> str:
    """Point MLflow at the store and return the id of `experiment` (default `tracking.experiment`),
    creating it once (under a lock) at the store's artifact root. An experiment whose artifacts are
    elsewhere (a copied store) is renamed out of the way first."""
    uri = tracking_uri(params)
    mlflow.set_tracking_uri(uri)
    name = experiment or params["tracking"]["experiment"]
    root = artifact_root(uri)
    db = _sqlite_file(uri)
    lock = db.with_name(db.name + ".lock") if db else Path(".mlflow.lock")
    with _file_lock(lock):
        client = MlflowClient(uri)
        found = retry(client.get_experiment_by_name, name)
        if found is not None and root and not _same_location(found.artifact_location, root):
            moved = f"{name} (copy: artifacts in {found.artifact_location})"
            retry(client.rename_experiment, found.experiment_id, moved)
            log.warning("mlflow: experiment %r of %s keeps its artifacts in %s, outside this store's %s: renamed "
                        "it %r and created %r here", name, uri, found.artifact_location, root, moved, name)
            found = None
        experiment_id = found.experiment_id if found else retry(client.create_experiment, name, artifact_location=root)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def own_run(run_id: str | None, experiment_id: str):
    """The run `run_id` when it is in the current store, not deleted, and in `experiment_id`; else None."""
    if not run_id:
        return None
    try:
        run = retry(MlflowClient().get_run, run_id)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        return None
    if run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
        return None
    return run


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """Nested params as flat `a.b.c` keys (MLflow params are flat)."""
    out: dict[str, object] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def log_params(values: dict[str, object]) -> None:
    """Log params (as strings) to the active run."""
    retry(mlflow.log_params, {k: str(v) for k, v in values.items()})


def data_params(params: dict) -> dict[str, object]:
    """The data, render and split params, flattened (`data.source`, `render.evs`, `split.seed`, ...)."""
    return flatten({k: params[k] for k in ("data", "render", "split")}, "")


def model_params(name: str, settings: dict) -> dict[str, object]:
    """A model's training params: namespaced (`train.common.*`, `train.NAME.*`) and, under the same
    names for every model, `lr`, `weight_decay`, `epochs`, `steps_per_epoch`, `batch_size`,
    `patch_size` (a curriculum's stages comma-separated), `sampling`, `select`, `schedule.*`, `seed`, `arch.*`."""
    from expocorr.sampling import curriculum  # torch (the data loaders): not for a baseline's evaluation

    common, cfg = settings["common"], settings[name]
    stages = curriculum(common, cfg)
    shared = {
        "lr": cfg["lr"], "weight_decay": cfg["weight_decay"], "epochs": cfg["epochs"] or common["epochs"],
        "steps_per_epoch": common["steps_per_epoch"], "batch_size": ",".join(str(s.batch) for s in stages),
        "patch_size": ",".join(str(s.size) for s in stages), "sampling": cfg["sampling"], "select": cfg["select"],
        "seed": common["seed"], **flatten(cfg["schedule"], "schedule."), **flatten(cfg["arch"], "arch."),
    }
    return {**flatten({"common": common, name: cfg}, "train."), **shared}


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def split_digests(folder: Path) -> dict[str, str]:
    """A 16-hex digest per split in `folder` (data/splits/): of its CSV and of every image file its rows name."""
    out, files = {}, {}
    for name in SPLITS:
        path = folder / f"{name}.csv"
        if path.exists():
            h = hashlib.sha256(path.read_bytes())
            for row in read_csv(path):
                for column, value in row.items():
                    if value and IMAGE_COLUMN.match(column):
                        if value not in files:  # references are shared by a scene's rows
                            files[value] = file_sha256(value)
                        h.update(files[value].encode())
            out[name] = h.hexdigest()[:16]
    return out


def dataset_tag(params: dict, digests: dict[str, str]) -> str:
    """`data.source` and a digest of all the splits (`bundled:1f2e...`): equal for runs on the same data."""
    return f"{params['data']['source']}:{params_hash(digests)}"


def log_splits(params: dict, digests: dict[str, str], names: list[str], folder: Path) -> None:
    """Log splits `names` (CSV files in `folder`) as MLflow dataset inputs of the active run: the split's rows, named
    `SOURCE-SPLIT`, with their digest and context (training / validation / testing)."""
    import pandas as pd
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json

    datasets = []
    for name in names:
        path = folder / f"{name}.csv"
        source = get_dataset_source_from_json(json.dumps({"uri": path.as_posix()}), "local")
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        datasets.append(mlflow.data.from_pandas(frame, source=source, name=f"{params['data']['source']}-{name}",
                                                digest=digests[name]))
    retry(mlflow.log_inputs, datasets, [SPLITS[n] for n in names], [None] * len(names))


def metric_leaves(tree, prefix: str, headline: str = "overall") -> dict[str, float]:
    """The finite numeric leaves of a JSON tree as metrics named `prefix_path_of_keys` (list items
    by index; the `headline` group's keys without its name: `test_psnr`, `test_under_psnr`,
    `test_per_ev_-1.5_psnr`); booleans and strings are left out."""
    out: dict[str, float] = {}

    def walk(node, path: list[str]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, path if not path[1:] and key == headline else [*path, str(key)])
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, [*path, str(i)])
        elif isinstance(node, (int, float)) and not isinstance(node, bool) and math.isfinite(node):
            out[re.sub(r"[^\w\-. /:]", "_", "_".join(path))] = float(node)

    walk(tree, [prefix])
    return out


def params_hash(*parts) -> str:
    """A short stable hash of JSON-able values (params sections, file digests)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_commit() -> str:
    """The current commit (with '-dirty' when the tree has changes), or 'unknown' outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
        return sha + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"

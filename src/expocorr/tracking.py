"""MLflow tracking: one store (default: sqlite:///mlflow.db in the repo root), one experiment, safe under concurrency.

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
import os
import subprocess
import time
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
ARTIFACTS = "mlartifacts"
LOCK_RETRIES = 30


def tracking_uri(params: dict) -> str:
    """`tracking.uri`, else $MLFLOW_TRACKING_URI, else a sqlite store in the current directory."""
    return params["tracking"]["uri"] or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_DB).resolve()}"


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
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def setup(params: dict) -> str:
    """Point MLflow at the store, creating it and the experiment once (under a lock); return the experiment id."""
    uri = tracking_uri(params)
    mlflow.set_tracking_uri(uri)
    name = params["tracking"]["experiment"]
    lock = Path(uri.removeprefix("sqlite:///") + ".lock") if uri.startswith("sqlite:///") else Path(".mlflow.lock")
    with _file_lock(lock):
        client = MlflowClient(uri)
        experiment = retry(client.get_experiment_by_name, name)
        if experiment is None:
            artifacts = Path(ARTIFACTS).resolve().as_uri() if uri.startswith("sqlite:") else None
            experiment_id = retry(client.create_experiment, name, artifact_location=artifacts)
        else:
            experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


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

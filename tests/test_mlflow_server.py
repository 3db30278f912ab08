"""A shared MLflow tracking server: a real `mlflow server` on a free loopback port (sqlite backend,
artifacts proxied by the server), a short training pointed at it with `tracking.uri`, then the run,
its metrics and its model read back over HTTP, and the experiment's runs page rendered in headless
Chromium. Everything stays on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

import workspace

pytestmark = pytest.mark.slow

MODEL = "exponet"
EXPERIMENT = "expocorr-shared-server"
LOOPBACK = "127.0.0.1"
# Never leave the machine: no proxy for loopback, no MLflow telemetry.
QUIET = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "MLFLOW_DISABLE_TELEMETRY": "true",
         "DO_NOT_TRACK": "true"}
PROXIES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def quiet_env():
    """Module-wide environment for the server, the training and the client: loopback without proxies."""
    saved = {k: os.environ.get(k) for k in (*QUIET, *PROXIES)}
    for key in PROXIES:
        os.environ.pop(key, None)
    os.environ.update(QUIET)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def readme_command(prefix: str, port: int, home: Path) -> list[str]:
    """README.md's command starting with `prefix` (continuation lines joined) as argv: the venv's
    executable, `port` instead of its --port, `home` for $HOME."""
    readme = (workspace.REPO / "README.md").read_text()
    found = re.search(rf"^{re.escape(prefix)}(?:[^\n]*\\\n)*[^\n]*", readme, re.M)
    assert found, f"README.md has no `{prefix}` command"
    argv = shlex.split(found.group(0).replace("\\\n", " ").replace("$HOME", str(home)))
    argv[argv.index("--port") + 1] = str(port)
    return [str(workspace.BIN / argv[0]), *argv[1:]]


@contextlib.contextmanager
def serving(cmd: list[str], cwd: Path, port: int):
    """Run the server command `cmd` in `cwd` (log in cwd/server.log) until it answers /health; yield
    its URL; stop its process group at the end."""
    env = {**os.environ, **QUIET, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job workers
    for key in PROXIES:
        env.pop(key, None)
    log_path = cwd / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        url = f"http://{LOOPBACK}:{port}"
        try:
            deadline = time.monotonic() + 120
            while not answers(f"{url}/health"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{' '.join(cmd)} did not come up:\n{log_path.read_text()}")
                time.sleep(0.5)
            yield url
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory, quiet_env):
    """README.md's `mlflow server` command (sqlite backend store, served artifact root), with a
    temporary folder for $HOME and a free port, bound to 127.0.0.1."""
    root = tmp_path_factory.mktemp("mlflow-server")
    (root / "mlflow").mkdir()  # the README's `mkdir -p $HOME/mlflow`
    port = free_port()
    with serving(readme_command("mlflow server", port, root), root, port) as url:
        yield {"url": url, "root": root / "mlflow"}


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory):
    """A repository copy with `tracking.uri` pointing at the server, data stages and one short training run."""

    def edit(p):
        p["render"]["max_side"] = 64
        p["train"]["models"] = [MODEL]
        p["train"]["common"].update(epochs=2, steps_per_epoch=3, batch_size=2, patch_size=32, sample_every=1)
        p["tracking"]["uri"] = server["url"]
        p["tracking"]["experiment"] = EXPERIMENT

    repo = workspace.make(tmp_path_factory.mktemp("tracked"), edit)
    for stage in ("download", "render", "split"):
        workspace.run(["expocorr", stage], repo)
    workspace.run(["expocorr", "train", "--model", MODEL], repo)
    return repo


def test_training_logs_to_the_server_and_reads_back_over_http(server, trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a client falling back to the default store would create ./mlflow.db here
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient
    import mlflow.pytorch

    info = json.loads((trained / "models" / MODEL / "mlflow_run.json").read_text())
    assert info["tracking_uri"] == server["url"] and info["experiment"] == EXPERIMENT
    # nothing went to the default local store
    assert not (trained / "mlflow.db").exists() and not (trained / "mlartifacts").exists()

    client = MlflowClient(server["url"])
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # artifacts travel through the server
    run = client.get_run(info["run_id"])
    assert run.info.run_name == MODEL and run.info.status == "FINISHED"
    assert run.info.experiment_id == experiment.experiment_id
    assert run.data.tags["model"] == MODEL and run.data.params["train.common.patch_size"] == "32"
    history = client.get_metric_history(run.info.run_id, "val_psnr")
    assert [m.step for m in history] == [1, 2] and all(m.value == m.value for m in history)
    ckpt = torch.load(trained / "models" / MODEL / "model.pt", map_location="cpu", weights_only=True)
    assert run.data.metrics["best_val_psnr"] == pytest.approx(ckpt["metadata"]["val_psnr"])

    assert {"samples", "train_log.csv"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    log = download_artifacts(run_id=run.info.run_id, artifact_path="train_log.csv", dst_path=str(tmp_path / "log"),
                             tracking_uri=server["url"])
    assert Path(log).read_text() == (trained / "models" / MODEL / "train_log.csv").read_text()

    # the model logged by the run (an MLflow 3 LoggedModel named "model"), fetched from its own artifact
    # location: `runs:/<id>/model` would look the model up in the default (local) store, not the server
    logged = [m for m in client.search_logged_models(experiment_ids=[experiment.experiment_id],
                                                     filter_string="name = 'model'")
              if m.source_run_id == run.info.run_id]
    assert len(logged) == 1 and logged[0].artifact_location.startswith("mlflow-artifacts:")
    model_dir = download_artifacts(artifact_uri=logged[0].artifact_location, dst_path=str(tmp_path / "model"),
                                   tracking_uri=server["url"])
    model = mlflow.pytorch.load_model(model_dir, map_location="cpu")
    x = torch.rand(1, 3, 33, 47)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    # the server stored the files under its artifact destination
    assert any(p.name == "MLmodel" for p in (server["root"] / "artifacts").rglob("MLmodel"))
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_experiment_page_shows_the_run_in_headless_chromium(server, trained, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (.ci/run installs the Debian package)")
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(server["url"]).get_experiment_by_name(EXPERIMENT)
    page = f"{server['url']}/#/experiments/{experiment.experiment_id}/runs"
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server",
        f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {LOOPBACK}",  # no name resolves but loopback
        f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,900", "--hide-scrollbars",
        "--virtual-time-budget=15000",
    ]
    dom = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120,
                         env=workspace.env())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = " ".join(re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", "", dom.stdout, flags=re.S)).split())
    assert EXPERIMENT in text and re.search(rf"\b{MODEL}\b", text), text[:2000]
    assert "bundled-train" in text, text[:2000]  # the Dataset column: the training split logged as an input

    shot = tmp_path / "experiment.png"
    run = subprocess.run([browser, *flags, f"--screenshot={shot}", page], capture_output=True, text=True,
                         timeout=120, env=workspace.env())
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}", file=sys.stderr)

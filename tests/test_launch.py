"""The single-node launcher of `train.common.gpus > 1`: failures and SIGTERM stop every worker (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

LAUNCH = "import sys; from expocorr import launch; sys.exit(launch.local(2, sys.argv[1:]))"
# A worker: writes its pid to pids/RANK, then rank 1 exits with FAIL (when set) and every other rank sleeps.
WORKER = ("import os, sys, time, pathlib; rank = os.environ['RANK']; "
          "pathlib.Path('pids', rank).write_text(str(os.getpid())); "
          "fail = os.environ.get('FAIL'); sys.exit(int(fail)) if fail and rank == '1' else time.sleep(120)")


def start(tmp_path: Path, **env: str) -> subprocess.Popen:
    (tmp_path / "pids").mkdir()
    return subprocess.Popen([sys.executable, "-c", LAUNCH, "-c", WORKER], cwd=tmp_path, env={**os.environ, **env})


def worker_pids(tmp_path: Path) -> list[int]:
    """The workers' pids, once both have started."""
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "pids").iterdir())) < 2:
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.05)
    return [int(p.read_text()) for p in sorted((tmp_path / "pids").iterdir())]


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_failing_worker_stops_the_others_and_gives_its_exit_status(tmp_path):
    launcher = start(tmp_path, FAIL="3")
    assert launcher.wait(timeout=60) == 3
    assert all(gone(pid) for pid in worker_pids(tmp_path))  # rank 0 was sleeping for 120 s


def test_sigterm_stops_every_worker(tmp_path):
    launcher = start(tmp_path)
    pids = worker_pids(tmp_path)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=60) == 128 + signal.SIGTERM
    assert all(gone(pid) for pid in pids)

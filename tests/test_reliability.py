"""Reliability: interrupted and failing stages lose nothing, unsafe files are refused."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

import workspace
from expocorr.inference import MethodError, load_model

REPO = Path(__file__).resolve().parents[1]


class Evil:
    """Unpickling this would run a shell command."""

    def __reduce__(self):
        return (os.system, ("echo PWNED > /tmp/expocorr-pwned",))


def test_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model": "exponet", "arch": {}, "state_dict": {}, "payload": Evil()}, path)
    with pytest.raises(MethodError, match="pickled Python objects, refused for safety"):
        load_model(path)
    assert not Path("/tmp/expocorr-pwned").exists()


def test_pickled_model_file_fails_evaluate_with_one_line(tmp_path):
    repo = workspace.make(tmp_path, lambda p: p["render"].update(max_side=48))
    for stage in ("download", "render", "split"):
        workspace.run(["expocorr", stage], repo)
    (repo / "models/exponet").mkdir(parents=True)
    torch.save({"model": "exponet", "arch": {}, "state_dict": {}, "payload": Evil()}, repo / "models/exponet/model.pt")
    out = workspace.run(["expocorr", "evaluate", "--method", "exponet"], repo, check=False)
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "models/exponet/model.pt" in errors[0] and "refused for safety" in errors[0]
    assert "Traceback" not in out.stderr
    assert not (repo / "metrics/exponet.json").exists()


def test_no_server_binds_beyond_loopback():
    """Nothing in the package listens on all interfaces; documented servers bind 127.0.0.1."""
    sources = "\n".join(p.read_text() for p in (REPO / "src").rglob("*.py"))
    assert "0.0.0.0" not in sources
    readme = (REPO / "README.md").read_text()
    for command in re.findall(r"^mlflow (?:ui|server)[^\n]*(?:\\\n[^\n]*)*", readme, re.M):
        assert "--host 127.0.0.1" in command, command


def _big_photos(folder: Path, n: int = 6, side: int = 1800) -> None:
    """Real photos upscaled so rendering each takes a while (something to interrupt)."""
    folder.mkdir(parents=True)
    for i, name in enumerate(["astronaut", "coffee", "chelsea", "rocket", "astronaut", "coffee"][:n]):
        image = getattr(skimage.data, name)()
        h, w = image.shape[:2]
        big = cv2.resize(image, (side, round(side * h / w)), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"{i}_{name}.png"), cv2.cvtColor(np.roll(big, 37 * i, axis=1), cv2.COLOR_RGB2BGR))


def _render_params(folder: Path):
    def edit(p):
        p["data"].update(source="folder", folder=str(folder))
        p["render"].update(max_side=None, noise={"shot": 0.001, "read": 0.001})

    return edit


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_render_killed_midway_then_rerun_matches_uninterrupted(tmp_path):
    _big_photos(tmp_path / "photos")
    edit = _render_params(tmp_path / "photos")
    reference, killed = workspace.make(tmp_path / "ref", edit), workspace.make(tmp_path / "kill", edit)
    for repo in (reference, killed):
        workspace.run(["expocorr", "download"], repo)
    workspace.run(["expocorr", "render"], reference)

    proc = subprocess.Popen(["expocorr", "render"], cwd=killed, env=workspace.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rendered = killed / "data/rendered"
    deadline = time.time() + 120
    while time.time() < deadline and not list(rendered.glob(".images.*.tmp/*/ev*.png")):
        time.sleep(0.05)
    assert proc.poll() is None, "render finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (rendered / "images").exists() and not (rendered / "manifest.csv").exists()  # nothing partial

    workspace.run(["expocorr", "render"], killed)
    assert _tree(killed / "data/rendered") == _tree(reference / "data/rendered")  # bitwise, no leftovers


def _limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_failing_writes_keep_previous_outputs(tmp_path):
    """A full disk (simulated: writes past 20 kB fail) stops render with one clear line; the
    previous outputs stay as they were."""
    repo = workspace.make(tmp_path, lambda p: p["render"].update(max_side=64))
    for stage in ("download", "render"):
        workspace.run(["expocorr", stage], repo)
    before = _tree(repo / "data/rendered")
    workspace.edit_params(repo, lambda p: p["render"].update(max_side=256))
    proc = subprocess.run(["expocorr", "render"], cwd=repo, env=workspace.env(), capture_output=True, text=True,
                          preexec_fn=_limit_file_size(20_000))
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "cannot write" in errors[0] and "File too large" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert _tree(repo / "data/rendered") == before

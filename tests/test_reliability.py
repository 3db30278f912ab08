"""Reliability: interrupted and failing stages lose nothing, unsafe files are refused."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import time
from glob import escape as glob_escape
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import workspace

from expocorr.inference import MethodError, load_model
from expocorr.tables import read_csv

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


def _write(path: Path, image: np.ndarray, **save) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, **save)


def bad_input_corpus(folder: Path) -> dict[str, str]:
    """One file per kind (built here, no binary fixtures); returns kind -> file name."""
    from PIL import Image

    folder.mkdir(parents=True)
    photo = skimage.data.chelsea()  # 300×451 real photo
    kinds = {}

    def add(kind: str, name: str) -> Path:
        kinds[kind] = name
        return folder / name

    good = add("jpeg", "good.jpg")
    _write(good, photo, quality=92)
    add("truncated_jpeg", "truncated.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    add("zero_byte", "empty.jpg").write_bytes(b"")
    add("text_as_jpeg", "notes.jpg").write_text("this is not an image\n")
    cv2.imwrite(str(add("tiff_16bit", "deep.tif")), cv2.cvtColor((photo.astype(np.uint16) * 257), cv2.COLOR_RGB2BGR))
    _write(add("rgba_png", "alpha.png"), np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)]))
    _write(add("grayscale", "gray.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY))
    Image.fromarray(photo).convert("CMYK").save(add("cmyk_jpeg", "cmyk.jpg"), quality=92)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.fromarray(photo).save(add("exif_rotated", "rotated.jpg"), exif=exif, quality=92)
    _write(add("one_pixel", "dot.png"), photo[:1, :1])
    add("fake_raw", "random.dng").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    os.symlink(folder / "gone.jpg", add("unreadable", "dangling.jpg"))
    _write(add("spaces_non_ascii", "été à la plage ü.jpg"), photo[::-1], quality=92)
    return kinds


BAD = {"truncated_jpeg", "zero_byte", "text_as_jpeg", "fake_raw", "unreadable"}


@pytest.mark.slow
def test_bad_input_corpus_through_the_stages_and_correct(tmp_path):
    """Each kind gets a correct result or one error line naming the file; the rest of the batch completes."""
    kinds = bad_input_corpus(tmp_path / "corpus")
    repo = workspace.make(tmp_path, lambda p: (p["data"].update(source="folder", folder=str(tmp_path / "corpus")),
                                               p["render"].update(max_side=128)))
    workspace.run(["expocorr", "download"], repo)
    workspace.run(["expocorr", "render"], repo)
    indexed = {Path(r["path"]).name for r in read_csv(repo / "data/downloads/index.csv")}
    skipped = {Path(r["path"]).name: r["reason"] for r in read_csv(repo / "data/downloads/skipped.csv")}
    manifest = read_csv(repo / "data/rendered/manifest.csv")
    for kind, name in kinds.items():
        stem = Path(name).stem
        if kind in BAD:
            assert name in skipped and not any(Path(n).stem == stem for n in indexed), kind
        else:
            assert name not in skipped, (kind, skipped.get(name))
    assert len(skipped) == len(BAD)
    assert len(indexed) == len(kinds) - len(BAD)
    assert len(manifest) == 5 * (len(kinds) - len(BAD))  # every readable photo rendered at 5 EVs

    out = subprocess.run(["expocorr", "correct", str(tmp_path / "corpus"), "--model", "clahe", "-o",
                          str(tmp_path / "out")], cwd=repo, env=workspace.env(), capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    errors = [line for line in out.stderr.splitlines() if "ERROR" in line]
    for kind, name in kinds.items():
        hits = [line for line in errors if name in line]
        produced = list((tmp_path / "out").glob(f"{glob_escape(Path(name).stem)}_corrected.*"))
        if kind in BAD:
            assert len(hits) == 1 and not produced, (kind, hits, produced)
        else:
            assert not hits and len(produced) == 1, (kind, hits)
    assert "Traceback" not in out.stderr
    rotated = cv2.imread(str(next((tmp_path / "out").glob("rotated_corrected.*"))))
    assert rotated.shape[:2] == (451, 300)  # EXIF orientation applied: portrait now
    gray = cv2.imread(str(next((tmp_path / "out").glob("gray_corrected.*"))), cv2.IMREAD_UNCHANGED)
    assert gray.ndim == 2
    deep = cv2.imread(str(next((tmp_path / "out").glob("deep_corrected.*"))), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16
    alpha = cv2.imread(str(next((tmp_path / "out").glob("alpha_corrected.*"))), cv2.IMREAD_UNCHANGED)
    assert alpha.shape[2] == 4 and (alpha[..., 3] == 128).all()


@pytest.mark.slow
def test_a_50_megapixel_photo_through_the_stages_and_correct(tmp_path):
    (tmp_path / "big").mkdir()
    photo = cv2.resize(skimage.data.chelsea(), (8700, 5800), interpolation=cv2.INTER_CUBIC)  # 50.5 MP
    cv2.imwrite(str(tmp_path / "big/huge.jpg"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    del photo
    repo = workspace.make(tmp_path, lambda p: (p["data"].update(source="folder", folder=str(tmp_path / "big")),
                                               p["render"].update(max_side=256)))
    workspace.run(["expocorr", "download"], repo)
    workspace.run(["expocorr", "render"], repo)
    assert len(read_csv(repo / "data/rendered/manifest.csv")) == 5
    workspace.run(["expocorr", "correct", str(tmp_path / "big/huge.jpg"), "--model", "clahe", "-o", str(tmp_path / "out")],
                  repo)
    out = cv2.imread(str(tmp_path / "out/huge_corrected.jpg"))
    assert out.shape == (5800, 8700, 3)

"""Reliability: interrupted and failing stages lose nothing, unsafe files are refused."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import resource
import signal
import subprocess
import threading
import time
from glob import escape as glob_escape
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import workspace
import yaml

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


def _big_photos(folder: Path, n: int = 4, side: int = 1400) -> None:
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
    os.symlink("/dev/zero", add("device_link", "zero.jpg"))  # endless: must be refused, not read
    _write(add("spaces_non_ascii", "été à la plage ü.jpg"), photo[::-1], quality=92)
    return kinds


BAD = {"truncated_jpeg", "zero_byte", "text_as_jpeg", "fake_raw", "unreadable", "device_link"}


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


# --- hostile photos for `expocorr correct`: bounded memory, regular files only, the real reason, quoted names ---

FORGED = "evil\nERROR forged.jpg"  # a name that would print a forged log line if not quoted


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """One `expocorr correct --model clahe` run (a real subprocess, its own peak RSS) over a folder of hostile
    files and a FIFO named on the command line; returns (exit code, peak RSS bytes, stderr lines, the folder)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("hostile")
    folder = root / "photos"
    folder.mkdir()
    Image.new("1", (13000, 13000)).save(folder / "huge.png")  # 20 kB declaring 169 megapixels
    os.symlink("/dev/zero", folder / "zero.jpg")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "notes.jpg").write_text("not a photo\n")
    (folder / FORGED).write_text("not a photo either\n")
    _write(folder / "good.jpg", skimage.data.chelsea(), quality=90)
    proc = subprocess.Popen(["expocorr", "correct", str(folder), str(folder / "pipe.jpg"), "--model", "clahe",
                             "-o", str(root / "out")], cwd=REPO, env=workspace.env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(120, proc.kill)  # a read that blocks (the FIFO) fails the test instead of hanging it
    timer.start()
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    timer.cancel()
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024, stderr.splitlines(), folder


def _error_for(lines: list[str], name: str) -> str:
    hits = [line for line in lines if " ERROR " in line and repr(name)[1:-1] in line]
    assert len(hits) == 1, (name, lines)
    return hits[0]


def test_huge_declared_png_is_refused_before_decoding_in_bounded_memory(hostile_run):
    code, peak, lines, folder = hostile_run
    assert code == 1 and not any("Traceback" in line for line in lines), lines
    line = _error_for(lines, "huge.png")
    assert "13000×13000" in line and "correct.max_megapixels = 100" in line and "not decoded" in line
    # Without the check it decoded: 6.8 GB (the 507 MB of pixels, then float copies). Now the process stays
    # near its imports and the small good photo: 0.45 GB measured here, 1.32 GB in a fresh CI venv.
    assert peak < 2 * 1024**3, f"peak RSS {peak / 1024**3:.2f} GB"
    assert (folder.parent / "out" / "good_corrected.jpg").exists()  # the batch went on


def test_fifo_and_link_to_a_device_are_refused_unread(hostile_run):
    _, _, lines, folder = hostile_run
    assert "links to a character device, not a regular file" in _error_for(lines, "zero.jpg")
    assert "is a FIFO (named pipe), not a regular file" in _error_for(lines, "pipe.jpg")  # named twice: one line


def test_unknown_format_is_named_as_such(hostile_run):
    assert "unknown format" in _error_for(hostile_run[2], "notes.jpg")


def test_file_names_in_messages_are_quoted(hostile_run):
    _, _, lines, folder = hostile_run
    assert f"'{folder}/evil\\nERROR forged.jpg': unknown format" in _error_for(lines, FORGED)
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ", line) for line in lines), lines


@contextlib.contextmanager
def _unprivileged():
    """Root reads any file: as root, act as the user `nobody` (effective ids only, restored after)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_unreadable_photo_names_permission_denied(tmp_path, make_dng):
    from expocorr.imaging.images import ImageError
    from expocorr.imaging.photo_io import read_photo

    photo, raw = tmp_path / "private.jpg", tmp_path / "private.dng"
    _write(photo, skimage.data.chelsea(), quality=90)
    make_dng(raw, np.full((64, 96, 3), 0.25))
    read_photo(raw)  # readable now (and rawpy imported before the ids change)
    messages = []
    for path in (photo, raw):
        path.chmod(0)
        with _unprivileged(), pytest.raises(ImageError) as err:
            read_photo(path)
        messages.append(str(err.value))
    assert messages == [f"{str(path)!r}: cannot read: Permission denied" for path in (photo, raw)]


def test_raw_file_above_the_pixel_limit_is_refused_before_developing(tmp_path, make_dng):
    from expocorr.imaging.images import ImageError
    from expocorr.imaging.photo_io import read_photo

    make_dng(tmp_path / "shot.dng", np.full((64, 96, 3), 0.25))
    assert read_photo(tmp_path / "shot.dng", max_megapixels=0.01).rgb.shape[:2] == (64, 96)
    with pytest.raises(ImageError, match=r"'.*shot\.dng': too large: 96×64 pixels \(0\.006144 megapixels\), "
                                         r"above correct\.max_megapixels = 0\.001; not decoded"):
        read_photo(tmp_path / "shot.dng", max_megapixels=0.001)


def test_file_larger_than_a_photo_within_the_limit_is_refused_unread(tmp_path):
    from expocorr.imaging.images import ImageError
    from expocorr.imaging.photo_io import max_file_bytes, read_photo

    big = tmp_path / "big.tif"
    with open(big, "wb") as f:
        f.truncate(max_file_bytes(0.1) + 1)  # sparse: no disk used
    with pytest.raises(ImageError, match=r"'.*big\.tif': too large: \d+ MiB, above the \d+ MiB"):
        read_photo(big, max_megapixels=0.1)


# --- model files: the model asked for, finite weights and outputs ---


def _save_model(path: Path, name: str, edit=None) -> Path:
    """A real model `name` (params.yaml's architecture, seeded) saved as the train stage saves it; `edit(state)`
    may change its weights first."""
    from expocorr import models

    arch = yaml.safe_load((REPO / "params.yaml").read_text())["train"][name]["arch"]
    torch.manual_seed(0)
    state = models.build(name, arch).state_dict()
    if edit is not None:
        edit(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": name, "arch": arch, "state_dict": state, "params": {}}, path)
    return path


def test_model_file_of_another_model_is_refused_by_evaluate_and_correct(tmp_path, monkeypatch, caplog):
    from expocorr import cli, methods

    monkeypatch.chdir(tmp_path)
    _save_model(tmp_path / "models/msec/model.pt", "zerodce")  # a zerodce file where msec's should be
    with pytest.raises(MethodError, match=r"^'models/msec/model.pt': records model 'zerodce', not 'msec'"):
        methods.load_method("msec")  # what `expocorr evaluate --method msec` builds its corrector with
    _write(tmp_path / "a.jpg", skimage.data.chelsea()[:60, :80], quality=90)
    for spec in ("msec", "models/msec/model.pt"):
        caplog.clear()
        assert cli.main(["correct", "a.jpg", "--model", spec]) == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "'models/msec/model.pt': records model 'zerodce', not 'msec'" in errors[0]
    assert not (tmp_path / "a_corrected.jpg").exists()
    _save_model(tmp_path / "mine/model.pt", "zerodce")  # outside the train layout: the file says what it is
    assert methods.load_method("mine", path=tmp_path / "mine/model.pt").name == "zerodce"


def test_nan_weights_are_refused_at_load(tmp_path, monkeypatch, caplog):
    from expocorr import cli

    def poison(state):
        next(v for k, v in state.items() if k.endswith("weight"))[0].fill_(float("nan"))

    path = _save_model(tmp_path / "models/zerodce/model.pt", "zerodce", poison)
    with pytest.raises(MethodError, match=r"model.pt': \d+ non-finite weights \(NaN or infinite\), first in '"):
        load_model(path)
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "a.jpg", skimage.data.chelsea()[:60, :80], quality=90)
    assert cli.main(["correct", "a.jpg", "--model", "zerodce"]) == 1
    assert any("'models/zerodce/model.pt': " in r.getMessage() and "non-finite weights" in r.getMessage()
               for r in caplog.records if r.levelno >= logging.ERROR)
    assert not (tmp_path / "a_corrected.jpg").exists()  # not an all-black image with exit code 0


def test_non_finite_output_is_refused_naming_the_model_file(tmp_path):
    from expocorr import methods

    def overflow(state):  # finite weights of alternating sign, so large that the activations become inf - inf
        for v in state.values():
            if v.is_floating_point():
                v.copy_(torch.where(torch.arange(v.numel()).reshape(v.shape) % 2 == 0, 3e38, -3e38))

    path = _save_model(tmp_path / "zerodce/model.pt", "zerodce", overflow)
    method = methods.load_method("zerodce", path=path)
    rgb = skimage.data.chelsea()[:60, :80].astype(np.float32) / 255
    with pytest.raises(MethodError, match=rf"^{re.escape(repr(str(path)))}: gave non-finite values"):
        method(rgb, {})

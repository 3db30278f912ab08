"""`expocorr correct` and the full-resolution strategies of `expocorr.inference` it shares with evaluate."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image, ImageCms
import yaml
from torch import nn

import workspace
from expocorr import cli, inference, methods, models, params
from expocorr.stages.correct import DEFAULT_MAX_MEGAPIXELS, MANIFEST
from expocorr.models.registry import MODELS
from expocorr.imaging.photo_io import read_photo

REPO = Path(__file__).resolve().parents[1]
ARCH = {name: params.load(REPO / "params.yaml")["train"][name]["arch"] for name in MODELS}
CPU = torch.device("cpu")
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
GB = 1024**3


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = models.build(name, ARCH[name]).eval()
    return model


def real_photo(height: int, width: int) -> np.ndarray:
    """scikit-image's astronaut (a real photo) resized to height×width, uint8 RGB."""
    return cv2.resize(skimage.data.astronaut(), (width, height), interpolation=cv2.INTER_AREA if height <= 512
                      else cv2.INTER_CUBIC)


# --- strategies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_small_images_stay_on_the_direct_path(name):
    """Up to 512 px (the default test split) every model runs as before: evaluate results do not change."""
    assert inference.strategy_for(name, 512, 384) == "direct"
    rgb = real_photo(96, 128).astype(np.float32) / 255
    model = build(name)
    np.testing.assert_array_equal(inference.run_model(model, rgb, CPU), inference._forward(model, rgb, CPU))


def test_large_images_use_each_models_strategy():
    assert inference.strategy_for("msec", 900, 1200) == "guided"
    assert inference.strategy_for("zerodce", 900, 1200) == "direct"
    assert inference.strategy_for("zerodce_pp", 900, 1200) == "direct"
    assert inference.strategy_for("a_new_model", 900, 1200) == "tiled"
    for name in MODELS:
        assert inference.strategy_for(name, 4000, 6000) in ("direct", "guided", "tiled")
    assert inference.zerodce_pp_scale(384, 512) == 1
    assert inference.zerodce_pp_scale(900, 1200) == 12 and inference.zerodce_pp_scale(4000, 6000) == 12
    assert inference.zerodce_pp_scale(600, 800) == 8


def test_zerodce_tiles_with_a_receptive_field_halo_give_the_direct_result_exactly(monkeypatch):
    model = build("zerodce")
    rgb = real_photo(300, 700).astype(np.float32) / 255
    tiled = inference.run_halo_tiled(model, rgb, CPU, inference.RECEPTIVE_RADIUS["zerodce"], tile=128)
    np.testing.assert_allclose(tiled, inference._forward(model, rgb, CPU), atol=1e-5)


def test_zerodce_pp_paper_scale_matches_the_model_at_that_scale():
    model = build("zerodce_pp")
    rgb = real_photo(600, 800).astype(np.float32) / 255
    scale = inference.zerodce_pp_scale(600, 800)
    banded = inference.run_zerodce_pp(model, rgb, CPU, scale, band_rows=50)
    model.scale_factor = scale
    np.testing.assert_allclose(banded, inference._forward(model, rgb, CPU), atol=1e-4)


class Pointwise(nn.Module):
    """A per-pixel tone curve: any correct tiling or blending gives exactly its direct result."""

    def forward(self, x):
        return x.clamp(0, 1) ** 0.7


def test_tiles_blend_to_the_direct_result_for_a_pointwise_model():
    rgb = real_photo(333, 777).astype(np.float32) / 255
    tiled = inference.run_tiled(Pointwise(), rgb, CPU, tile=128, overlap=32)
    np.testing.assert_allclose(tiled, rgb**0.7, atol=1e-5)


def test_guided_strategy_returns_full_size():
    model = build("msec")
    rgb = real_photo(600, 900).astype(np.float32) / 255
    out = inference.run_model(model, rgb, CPU)
    assert out.shape == rgb.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    # (How closely it keeps the low-res result: tests/test_guided_upsampling.py, on smooth operators;
    # an untrained network's output is not one.)


def test_memory_hungry_baselines_go_guided_on_large_photos(monkeypatch):
    monkeypatch.setattr(methods, "BASELINE_DIRECT_MEGAPIXELS", 0.1)
    calls = []
    method = methods.load_method("ev_auto")
    inner = methods.run_guided
    monkeypatch.setattr(methods, "run_guided", lambda fn, rgb, side: calls.append(side) or inner(fn, rgb, side))
    rgb = real_photo(400, 600).astype(np.float32) / 255
    out = method(rgb, {"ev": None, "render": {"curve": "srgb", "gamma": 2.2, "tau": 1.0}})
    assert calls == [methods.BASELINE_GUIDED_SIDE] and out.shape == rgb.shape


def test_method_does_not_clip_the_callers_array_in_place():
    rgb = np.full((8, 8, 3), 0.5, np.float32)
    out = methods.Method("x", "baseline", lambda x, ctx: x)(rgb, {})
    assert out is not rgb and not np.shares_memory(out, rgb)


# --- the command ---------------------------------------------------------------------------------


def save(path: Path, kind: str, orientation: int = 1) -> None:
    """A small real photo of `kind`: jpg, png, png16, png-rgba, png-gray, tif16, tif-rgba16."""
    rgb = real_photo(60, 80)
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "expocorr camera"
    if kind in ("jpg", "png", "png-rgba", "png-gray"):
        pixels = {"png-rgba": np.dstack([rgb, np.arange(80, dtype=np.uint8)[None, :].repeat(60, 0)]),
                  "png-gray": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)}.get(kind, rgb)
        Image.fromarray(pixels).save(path, exif=exif.tobytes(), icc_profile=SRGB_ICC)
    else:
        pixels = rgb.astype(np.uint16) * 257
        if "rgba" in kind:
            pixels = np.dstack([pixels, (np.arange(80, dtype=np.uint16) * 800)[None, :].repeat(60, 0)])
        cv2.imwrite(str(path), cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA if "rgba" in kind else cv2.COLOR_RGB2BGR))


def correct(*argv: str) -> int:
    return cli.main(["correct", *argv])


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    save(folder / "a.jpg", "jpg", orientation=6)
    save(folder / "b.png", "png-rgba")
    save(folder / "sub" / "c.png", "png-gray")
    save(folder / "sub" / "d.png", "png16")
    save(folder / "e.tif", "tif-rgba16")
    return folder


def test_folder_round_trip_keeps_size_orientation_alpha_gray_and_depth(photos, tmp_path):
    out = tmp_path / "out"
    assert correct(str(photos), "--model", "gamma_auto", "-o", str(out)) == 0
    a = read_photo(out / "a_corrected.jpg")
    assert a.rgb.shape == (80, 60, 3) and a.orientation == 1 and a.icc == SRGB_ICC  # turned upright
    assert Image.open(out / "a_corrected.jpg").getexif()[0x010F] == "expocorr camera"
    b = read_photo(out / "b_corrected.png")
    np.testing.assert_array_equal(b.alpha, read_photo(photos / "b.png").alpha)
    c = read_photo(out / "sub" / "c_corrected.png")
    assert c.gray and c.rgb.shape == (60, 80, 3) and Image.open(out / "sub" / "c_corrected.png").mode == "L"
    assert read_photo(out / "sub" / "d_corrected.png").bit_depth == 16
    e = read_photo(out / "e_corrected.tif")
    assert e.bit_depth == 16 and np.array_equal(e.alpha, read_photo(photos / "e.tif").alpha)
    assert not np.allclose(read_photo(out / "sub" / "d_corrected.png").rgb, read_photo(photos / "sub" / "d.png").rgb)


def test_outputs_next_to_inputs_and_a_rerun_skips_them(photos, caplog):
    assert correct(str(photos / "a.jpg"), str(photos / "sub"), "--model", "clahe", "--format", "png") == 0
    assert (photos / "a_corrected.png").exists() and (photos / "sub" / "c_corrected.png").exists()
    assert correct(str(photos / "sub"), "--model", "clahe", "--format", "png") == 0  # not *_corrected_corrected
    assert not list(photos.rglob("*_corrected_corrected*"))


def test_one_bad_file_in_a_folder(photos, tmp_path, caplog):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    data = (photos / "b.png").read_bytes()
    (photos / "truncated.png").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert correct(str(photos), "--model", "clahe", "-o", str(out)) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and all("\n" not in e for e in errors)
    assert any("broken.jpg" in e for e in errors) and any("truncated.png" in e for e in errors)
    assert sorted(p.name for p in out.rglob("*") if p.is_file() and p.name != MANIFEST) == [
        "a_corrected.jpg", "b_corrected.png", "c_corrected.png", "d_corrected.png", "e_corrected.tif"]
    assert not list(out.rglob(".*.tmp"))  # nothing half-written


def test_missing_input_is_an_error_line_and_exit_1(photos, caplog):
    assert correct(str(photos / "a.jpg"), str(photos / "nope.jpg"), "--model", "he") == 1
    assert (photos / "a_corrected.jpg").exists()
    assert any("nope.jpg" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


def test_never_overwrites_an_input_unless_asked(photos, caplog):
    before = (photos / "b.png").read_bytes()
    assert correct(str(photos / "b.png"), "--model", "clahe", "--suffix", "") == 1
    assert (photos / "b.png").read_bytes() == before
    assert any("--overwrite" in r.getMessage() for r in caplog.records)
    assert correct(str(photos / "b.png"), "--model", "clahe", "--suffix", "", "--overwrite") == 0
    assert (photos / "b.png").read_bytes() != before


def test_existing_files_are_replaced_only_when_our_own_unchanged_outputs(photos, caplog):
    """An output path holding a file correct did not write (or one changed since) is left alone unless
    --overwrite; correct's own earlier outputs, recorded with their sha256 in the folder's manifest, are
    replaced by a rerun."""
    out = photos / "a_corrected.jpg"
    out.write_bytes(b"the user's own file")
    assert correct(str(photos / "a.jpg"), "--model", "he") == 1
    assert out.read_bytes() == b"the user's own file"
    assert any("exists and is not an unchanged output of expocorr correct" in r.getMessage() and "--overwrite" in
               r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert correct(str(photos / "a.jpg"), "--model", "he", "--overwrite") == 0
    assert correct(str(photos / "a.jpg"), "--model", "clahe") == 0  # its own output: replaced
    recorded = json.loads((photos / MANIFEST).read_text())["outputs"]
    assert recorded == {"a_corrected.jpg": hashlib.sha256(out.read_bytes()).hexdigest()}
    out.write_bytes(out.read_bytes() + b"edited")  # changed since: no longer ours
    caplog.clear()
    assert correct(str(photos / "a.jpg"), "--model", "he") == 1
    assert out.read_bytes().endswith(b"edited") and any("exists" in r.getMessage() for r in caplog.records)


def test_max_megapixels_comes_from_the_params_file(photos, tmp_path, caplog):
    assert DEFAULT_MAX_MEGAPIXELS == params.load(REPO / "params.yaml")["correct"]["max_megapixels"]
    small = params.load(REPO / "params.yaml")
    small["correct"]["max_megapixels"] = 0.001  # 60×80 = 0.0048 MP
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(small))
    assert correct(str(photos / "a.jpg"), str(photos / "b.png"), "--model", "he",
                   "--params", str(tmp_path / "small.yaml")) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and all("too large: " in e and "correct.max_megapixels = 0.001" in e for e in errors)
    small["correct"]["max_megapixels"] = 179  # above Pillow's own decompression-bomb limit
    with pytest.raises(params.ParamsError, match=r"correct\.max_megapixels: 179 is out of range"):
        params.validate(small)


def test_camera_raw_becomes_a_16_bit_tiff(tmp_path, make_dng):
    linear = (real_photo(64, 96).astype(np.float64) / 255) ** 2.2
    make_dng(tmp_path / "raw" / "shot.dng", linear)
    assert correct(str(tmp_path / "raw"), "--model", "gamma_auto") == 0
    out = read_photo(tmp_path / "raw" / "shot_corrected.tif")
    assert out.bit_depth == 16 and out.rgb.shape == read_photo(tmp_path / "raw" / "shot.dng").rgb.shape


def test_two_photos_with_one_output_name(photos, tmp_path, caplog):
    save(photos / "a.png", "png")  # a.jpg and a.png both become a_corrected.png
    assert correct(str(photos / "a.jpg"), str(photos / "a.png"), "--model", "he", "--format", "png") == 1
    assert (photos / "a_corrected.png").exists()
    assert any("same name" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


def test_oracle_and_stack_baselines_are_refused(photos, caplog):
    assert correct(str(photos / "a.jpg"), "--model", "inverse_synthesis") == 1
    assert correct(str(photos / "a.jpg"), "--model", "debevec_reinhard") == 1
    assert correct(str(photos / "a.jpg"), "--model", "no_such_method") == 1
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "oracle" in messages and "exposure stack" in messages and "unknown method" in messages
    assert not (photos / "a_corrected.jpg").exists()


def test_default_model_is_the_leaderboards_best(photos, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    assert correct(str(photos / "a.jpg")) == 1
    assert any("run the pipeline first" in r.getMessage() for r in caplog.records)
    (tmp_path / "metrics").mkdir()
    for name, psnr, oracle in [("inverse_synthesis", 40.0, True), ("clahe", 17.0, False), ("he", 15.0, False),
                               ("exponet", 30.0, False)]:  # exponet: no model file here, so not usable
        (tmp_path / "metrics" / f"{name}.json").write_text(json.dumps(
            {"method": name, "kind": "model" if name == "exponet" else "baseline", "oracle": oracle,
             "overall": {"psnr": psnr}}))
    caplog.clear()  # baselines only (exponet has no model file here): a baseline is used only when named
    assert correct(str(photos / "a.jpg")) == 1
    assert any("no trained model on the leaderboard" in r.getMessage() and "--model clahe" in r.getMessage()
               for r in caplog.records)


def test_default_model_is_the_best_learned_one_on_real_errors(photos, tmp_path, monkeypatch, caplog):
    """Without --model: the trained model best on the first extra set (real brackets), though a baseline leads
    the synthetic test split and another model leads it among models; without extra sets, the synthetic
    headline decides. One line says why."""
    monkeypatch.chdir(tmp_path)
    for name in ("exponet", "exponet_double"):
        (tmp_path / "models" / name).mkdir(parents=True)
        torch.save({"model": name, "arch": ARCH[name], "state_dict": build(name).state_dict(), "params": {}},
                   tmp_path / "models" / name / "model.pt")
    (tmp_path / "metrics" / "details").mkdir(parents=True)
    board = [("exponet", "model", False, 20.0, 17.2), ("exponet_double", "model", False, 22.0, 15.0),
             ("gamma_auto", "baseline", False, 25.0, 16.6), ("inverse_synthesis", "baseline", True, 40.0, 30.0)]

    def write(extra: bool):
        for name, kind, oracle, psnr, real in board:
            (tmp_path / "metrics" / "details" / f"{name}.json").write_text(json.dumps(
                {"method": name, "kind": kind, "oracle": oracle}))
            (tmp_path / "metrics" / f"{name}.json").write_text(json.dumps(
                {"overall": {"psnr": psnr}, **({"extra": {"brackets": {"psnr": real}}} if extra else {})}))

    for extra, line in [(True, "correct: using exponet: best learned model on brackets (17.2 dB PSNR; gamma_auto 16.6)"),
                        (False, "correct: using exponet_double: best learned model on the synthetic test split (22.0 dB "
                                "PSNR; gamma_auto 25.0)")]:
        write(extra)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert correct(str(photos / "a.jpg"), "-o", str(tmp_path / f"out{extra}")) == 0
        assert line in [r.getMessage() for r in caplog.records]
        assert (tmp_path / f"out{extra}" / "a_corrected.jpg").is_file()


def test_format_and_quality_options(photos, tmp_path):
    out = tmp_path / "out"
    assert correct(str(photos / "e.tif"), str(photos / "a.jpg"), "--model", "he", "-o", str(out), "--format", "jpg",
                   "--quality", "50") == 0
    assert read_photo(out / "e_corrected.jpg").alpha is None  # JPEG has no alpha: dropped with a warning
    assert correct(str(photos / "a.jpg"), "--model", "he", "--quality", "0") == 1


# --- trained models (a real, tiny training) ----------------------------------------------------------


def tiny_all_models(p):
    p["render"]["max_side"] = 64
    p["train"]["models"] = sorted(MODELS)
    p["train"]["common"].update(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=32, sample_every=1)
    for name in MODELS:
        p["train"][name]["epochs"] = None
        p["train"][name]["patch_curriculum"] = None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A repository copy with every registered model trained for two steps (real data, real trainer), two
    trainings at a time (each is mostly the process's start-up)."""
    repo = workspace.make(tmp_path_factory.mktemp("trained"), tiny_all_models)
    for stage in ("download", "render", "split"):
        workspace.run(["expocorr", stage], repo)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda name: workspace.run(["expocorr", "train", "--model", name], repo), sorted(MODELS)))
    return repo


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_trained_models_correct_a_large_photo(trained, tmp_path, name):
    """Each trained model, by name and by path, on a 700×1000 photo (its full-resolution strategy)."""
    photo = tmp_path / "in" / "photo.jpg"
    photo.parent.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(real_photo(700, 1000)).save(photo, exif=exif.tobytes(), quality=95)
    out = tmp_path / "out"
    proc = workspace.run([sys.executable, "-m", "expocorr.cli", "correct", str(photo), "--model", name, "-o", str(out),
                          "--device", "cpu"], trained)
    result = read_photo(out / "photo_corrected.jpg")
    assert result.rgb.shape == (1000, 700, 3), proc.stderr
    by_path = workspace.run([sys.executable, "-m", "expocorr.cli", "correct", str(photo), "--model",
                             str(trained / "models" / name / "model.pt"), "-o", str(tmp_path / "out2")], trained)
    assert read_photo(tmp_path / "out2" / "photo_corrected.jpg").rgb.shape == (1000, 700, 3), by_path.stderr


def peak_rss(cmd: list[str], cwd: Path) -> tuple[int, float, str]:
    """Exit code, peak resident memory (bytes) and stderr of `cmd` (os.wait4: this child's own peak)."""
    env = workspace.env()
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024, stderr


MEMORY_BASELINES = ["identity", "he", "clahe", "gamma_auto", "ev_auto", "mertens"]


@pytest.fixture(scope="module")
def photo_24mp(tmp_path_factory):
    """A real photo (scikit-image's astronaut) upscaled to 6000×4000 = 24 MP, saved as JPEG."""
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(real_photo(4000, 6000), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS) + MEMORY_BASELINES)
def test_24_megapixel_photo_stays_under_3_gb(trained, photo_24mp, tmp_path, name):
    code, peak, stderr = peak_rss([sys.executable, "-m", "expocorr.cli", "correct", str(photo_24mp), "--model", name,
                                   "-o", str(tmp_path), "--device", "cpu"], trained)
    assert code == 0, stderr
    assert read_photo(tmp_path / "big_corrected.jpg").rgb.shape == (4000, 6000, 3)
    assert peak < 3 * GB, f"{name}: peak RSS {peak / GB:.2f} GB"


def test_a_folder_pipelined_gives_the_outputs_and_messages_of_one_photo_at_a_time(photos, tmp_path, caplog):
    """Decode ahead and encode behind (`correct.run`): every output byte-identical to correcting each photo
    alone, a corrupt file one error line naming it, warnings and errors in the photos' order; photos/s and
    --timings at the end."""
    (photos / "b2_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    save(photos / "f.png", "png-rgba")
    (tmp_path / "m" / "zerodce_pp").mkdir(parents=True)
    model = tmp_path / "m" / "zerodce_pp" / "model.pt"
    torch.save({"model": "zerodce_pp", "arch": ARCH["zerodce_pp"], "state_dict": build("zerodce_pp").state_dict(),
                "params": {}}, model)
    files = sorted(p for p in photos.rglob("*") if p.is_file())
    for method in ("clahe", str(model)):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert correct(str(photos), "--model", method, "--format", "jpg", "-o", str(tmp_path / "batch"),
                           "--overwrite", "--timings", str(tmp_path / "timings.json")) == 1
        said = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
        assert [level for level, _ in said] == ["WARNING", "ERROR", "WARNING", "WARNING"]  # alpha dropped; corrupt
        for (_, text), name in zip(said, ["b.png", "b2_broken.jpg", "e.tif", "f.png"]):
            assert text.startswith(f"correct: '{photos / name}'"), text
        assert "photos/s" in caplog.records[-1].getMessage()
        timings = json.loads((tmp_path / "timings.json").read_text())
        assert (timings["written"], timings["failed"]) == (len(files) - 1, 1) and timings["photos_per_second"] > 0
        assert set(timings["seconds"]) == {"load", "decode", "compute", "encode", "batch"}
        for f in files:
            if f.name == "b2_broken.jpg":
                continue
            alone = tmp_path / "alone" / f.name
            assert correct(str(f), "--model", method, "--format", "jpg", "-o", str(alone), "--overwrite") == 0
            batch = tmp_path / "batch" / f.parent.relative_to(photos) / f"{f.stem}_corrected.jpg"
            assert batch.read_bytes() == (alone / f"{f.stem}_corrected.jpg").read_bytes(), f

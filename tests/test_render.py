"""Stage `render`: exposure errors synthesised from real photos (sRGB and camera raw)."""

from __future__ import annotations

import copy
import itertools
import logging
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage

from expocorr import params
from expocorr.imaging import synthesis
from expocorr.stages import download, render, split
from expocorr.errors import UserError
from expocorr.imaging.images import SRGB_SUFFIXES, ImageError, read_rgb, resize_max_side, to_uint8, write_rgb
from expocorr.sources import bundled as bundled_source
from expocorr.sources.files import RAW_SUFFIXES
from expocorr.tables import read_csv, write_csv

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared/data"
KODAK = SHARED / "raw/kodak_dc50"
PHOTOS = SHARED / "photos"
SKIMAGE_DATA = Path(skimage.__file__).parent / "data"  # real photos shipped with scikit-image
MSEC_EVS = (-1.5, -1.0, 0.0, 1.0, 1.5)


# --- helpers -------------------------------------------------------------------------------------



@pytest.fixture
def p(base) -> dict:
    """The real params, pinned to the bundled photos and the MSEC EVs the assertions below name."""
    q = copy.deepcopy(base)
    q["data"]["source"] = "bundled"
    q["render"]["evs"] = list(MSEC_EVS)
    return q


def u8(path: str | Path) -> np.ndarray:
    """The 8-bit RGB samples of a PNG exactly as stored."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.dtype == np.uint8, path
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def brightness(path: str | Path) -> float:
    return float(read_rgb(path).mean())


def increasing(values: list[float]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


def by_scene(rows: list[dict]) -> dict[str, list[dict]]:
    """Manifest rows per scene, sorted by EV."""
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["scene"], []).append(row)
    return {scene: sorted(rs, key=lambda r: float(r["ev"])) for scene, rs in out.items()}


def run_stages(root: Path, p: dict, *stages) -> list[dict]:
    """Run the stages with `root` as the working directory; return the manifest rows (paths made absolute)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for stage in stages:
            stage.run(p)
    if render not in stages:
        return []
    rows = read_csv(root / render.MANIFEST)
    for row in rows:
        for key in ("input", "reference"):
            row[key] = root / row[key]
    return rows


def _lut(curve: str, gamma: float, offset: float) -> np.ndarray:
    """Linear light of every 8-bit code value (shifted by `offset` steps, kept in [0, 255])."""
    codes = np.clip(np.arange(256) + offset, 0, 255) / 255.0
    return render.decode_curve(codes, curve, gamma)


def decode(q: np.ndarray, curve: str = "srgb", gamma: float = 2.2) -> np.ndarray:
    """Linear light of 8-bit samples under the camera curve."""
    return _lut(curve, gamma, 0.0)[q]


def assert_exposed(reference: np.ndarray, rendered: np.ndarray, factor: float, curve: str = "srgb",
                   gamma: float = 2.2) -> None:
    """`rendered` (uint8) is `reference` (uint8) with linear light times `factor`, clipped at 1, up to 8-bit
    quantisation: the exact target lies inside the linear interval of the stored code value +- half a step."""
    assert reference.shape == rendered.shape
    target = np.minimum(decode(reference, curve, gamma) * factor, 1.0)
    lo, hi = _lut(curve, gamma, -0.5)[rendered], _lut(curve, gamma, 0.5)[rendered]
    bad = (target < lo - 1e-9) | (target > hi + 1e-9)
    assert not bad.any(), f"{bad.sum()} of {bad.size} samples off (factor {factor})"


@pytest.fixture(scope="module")
def bundled(tmp_path_factory, base):
    """download + render of the bundled real photos with the MSEC EVs, no noise, plain clipping."""
    p = copy.deepcopy(base)
    p["data"]["source"] = "bundled"
    p["render"].update(evs=list(MSEC_EVS), tau=1.0, curve="srgb", noise={"shot": 0.0, "read": 0.0})
    root = tmp_path_factory.mktemp("bundled")
    rows = run_stages(root, p, download, render)
    return root, rows


# --- sRGB path on real photos --------------------------------------------------------------------


def test_manifest_every_photo_at_every_ev(bundled):
    root, rows = bundled
    index = read_csv(root / download.INDEX)
    assert len(index) == len(bundled_source.BUNDLED)  # the bundled photos of scikit-image, matplotlib and scikit-learn
    scenes = by_scene(rows)
    assert set(scenes) == {row["scene"] for row in index}
    header = (root / render.MANIFEST).read_text().splitlines()[0]
    assert header == "scene,ev,input,reference,source"
    for scene, rs in scenes.items():
        assert tuple(float(r["ev"]) for r in rs) == MSEC_EVS
        assert {r["source"] for r in rs} == {"srgb"}
        assert len({r["reference"] for r in rs}) == 1
        for r in rs:
            assert r["input"].is_file() and r["reference"].is_file()
            assert r["input"].parent.name == scene
            assert r["input"].name == f"{render.ev_name(float(r['ev']))}.png"
    assert sorted(p.name for p in (root / render.IMAGES).iterdir()) == sorted(scenes)


def test_ev0_equals_reference_exactly(bundled):
    _, rows = bundled
    checked = 0
    for row in rows:
        if float(row["ev"]) == 0.0:
            assert np.array_equal(u8(row["input"]), u8(row["reference"])), row["scene"]
            checked += 1
    assert checked >= 4


def test_brightness_strictly_increases_with_ev(bundled):
    _, rows = bundled
    for scene, rs in by_scene(rows).items():
        means = [brightness(r["input"]) for r in rs]
        assert increasing(means), (scene, means)


def test_ev_scales_linear_light(bundled):
    """EV e multiplies linear light by 2**e (clipped at 1), exactly up to 8-bit quantisation."""
    _, rows = bundled
    for rs in by_scene(rows).values():
        reference = u8(rs[0]["reference"])
        for r in rs:
            assert_exposed(reference, u8(r["input"]), 2.0 ** float(r["ev"]))


def test_ev_minus_one_halves_linear_light(bundled):
    _, rows = bundled
    for scene, rs in by_scene(rows).items():
        (row,) = [r for r in rs if float(r["ev"]) == -1.0]
        ref = decode(u8(row["reference"]))
        dark = decode(u8(row["input"]))
        unclipped = (ref > 0.05) & (ref < 0.99)  # mid-tones: quantisation error well under 1 %
        assert unclipped.mean() > 0.3, scene
        ratio = dark[unclipped] / ref[unclipped]
        assert np.median(ratio) == pytest.approx(0.5, abs=0.005), scene
        assert np.abs(ratio - 0.5).max() < 0.05, scene


def test_positive_ev_clips_highlights(bundled):
    _, rows = bundled
    for scene, rs in by_scene(rows).items():
        (row,) = [r for r in rs if float(r["ev"]) == 1.5]
        ref = decode(u8(row["reference"]))
        bright = u8(row["input"])
        assert (bright[ref * 2**1.5 >= 1.0] == 255).all(), scene
        assert (bright == 255).mean() > (u8(row["reference"]) == 255).mean(), scene


def test_tau_affects_only_positive_evs(tmp_path, p):
    p["render"]["max_side"] = 128
    for name in ("plain", "tau"):
        (tmp_path / name).mkdir()
    plain = run_stages(tmp_path / "plain", p, download, render)
    p["render"]["tau"] = 0.5
    clipped = run_stages(tmp_path / "tau", p, download, render)
    plain_by, clipped_by = by_scene(plain), by_scene(clipped)
    assert set(plain_by) == set(clipped_by)
    for scene in plain_by:
        reference = u8(plain_by[scene][0]["reference"])
        assert np.array_equal(reference, u8(clipped_by[scene][0]["reference"]))
        for a, b in zip(plain_by[scene], clipped_by[scene]):
            ev = float(a["ev"])
            if ev <= 0:
                assert a["input"].read_bytes() == b["input"].read_bytes(), (scene, ev)
            else:
                # highlights clip at tau and are rescaled to 1: linear light * 2**ev / tau, clipped
                assert_exposed(reference, u8(b["input"]), 2.0**ev / 0.5)
                assert (u8(b["input"]) == 255).mean() > (u8(a["input"]) == 255).mean(), (scene, ev)
                assert brightness(b["input"]) > brightness(a["input"]), (scene, ev)


def test_tau_range_draws_one_tau_per_scene():
    """render.tau [lo, hi]: each scene draws its threshold from render.seed and its name, the same every run."""
    r = {"tau": [0.5, 1.0], "seed": 0}
    scenes = ("astronaut", "coffee", "chelsea", "rocket", "a scene")
    taus = {s: render.scene_tau(r, s) for s in scenes}
    assert all(0.5 <= t <= 1.0 for t in taus.values())
    assert len(set(taus.values())) == len(scenes)
    assert taus == {s: render.scene_tau(copy.deepcopy(r), s) for s in scenes}
    assert render.scene_tau(dict(r, seed=1), "astronaut") != taus["astronaut"]
    assert render.scene_tau({"tau": [0.7, 0.7], "seed": 0}, "astronaut") == 0.7
    assert render.scene_tau({"tau": 0.7, "seed": 0}, "astronaut") == 0.7
    with pytest.raises(render.RenderError, match=r"render\.tau"):
        render.scene_tau({"tau": [0.9, 0.6], "seed": 0}, "astronaut")


def test_tau_range_renders_each_scene_at_its_own_tau(tmp_path, p):
    """With a range, the positive EVs of a scene clip at its drawn tau, recorded in the manifest's `tau`
    column; a number keeps today's manifest, and [t, t] renders the same bytes as t."""
    p["render"]["max_side"] = 96
    out = {}
    for name, tau in (("number", 0.6), ("point", [0.6, 0.6]), ("range", [0.5, 1.0])):
        (tmp_path / name).mkdir()
        p["render"]["tau"] = tau
        out[name] = by_scene(run_stages(tmp_path / name, p, download, render))
    header = {name: (tmp_path / name / render.MANIFEST).read_text().splitlines()[0] for name in out}
    assert header["number"] == "scene,ev,input,reference,source"
    assert header["point"] == header["range"] == "scene,ev,tau,input,reference,source"
    drawn = set()
    for scene, rows in out["number"].items():
        for a, b in zip(rows, out["point"][scene], strict=True):
            assert a["input"].read_bytes() == b["input"].read_bytes(), (scene, a["ev"])
        ranged = out["range"][scene]
        (tau,) = {float(r["tau"]) for r in ranged}
        assert tau == pytest.approx(render.scene_tau(p["render"], scene), abs=1e-12)
        drawn.add(tau)
        reference = u8(ranged[0]["reference"])
        for r in ranged:
            ev = float(r["ev"])
            assert_exposed(reference, u8(r["input"]), 2.0**ev / tau if ev > 0 and tau < 1 else 2.0**ev)
    assert len(drawn) == len(out["range"]) > 1


def test_expose_tau_unit():
    linear = np.linspace(0.0, 1.0, 101)
    assert np.array_equal(render.expose(linear, 1.0, 0.5), render.expose(linear, 2.0, 1.0))
    assert np.array_equal(render.expose(linear, 1.0, 0.25), np.clip(linear * 8, 0, 1))
    for ev in (-1.5, -1.0, 0.0):
        assert np.array_equal(render.expose(linear, ev, 0.5), render.expose(linear, ev, 1.0))
    assert np.array_equal(render.expose(linear, 0.0, 1.0), linear)


def test_gamma_curve(tmp_path, p):
    p["render"].update(curve="gamma", gamma=2.2, max_side=128)
    rows = run_stages(tmp_path, p, download, render)
    for scene, rs in by_scene(rows).items():
        reference = u8(rs[0]["reference"])
        means = [brightness(r["input"]) for r in rs]
        assert increasing(means), (scene, means)
        for r in rs:
            ev = float(r["ev"])
            rendered = u8(r["input"])
            if ev == 0:
                assert np.array_equal(rendered, reference)
            assert_exposed(reference, rendered, 2.0**ev, curve="gamma", gamma=2.2)
    # the gamma curve is not the sRGB curve: EV -1 of the same photo differs
    p_srgb = dict(p["render"], curve="srgb")
    photo = read_rgb(rows[0]["reference"])
    a = render.render_evs(photo, "x", p["render"])[-1.0]
    b = render.render_evs(photo, "x", p_srgb)[-1.0]
    assert np.abs(a - b).max() > 0.01


def test_noise_off_by_default_and_deterministic(tmp_path, base, p):
    assert base["render"]["noise"] == {"shot": 0.0, "read": 0.0}
    p["render"]["max_side"] = 96

    def files(name: str, **render_edits) -> dict[str, bytes]:
        q = copy.deepcopy(p)
        for key, value in render_edits.items():
            if key in ("shot", "read"):
                q["render"]["noise"][key] = value
            else:
                q["render"][key] = value
        root = tmp_path / name
        root.mkdir()
        run_stages(root, q, download, render)
        images = root / render.IMAGES
        return {f.relative_to(images).as_posix(): f.read_bytes() for f in sorted(images.rglob("*.png"))}

    clean_a, clean_b = files("clean_a"), files("clean_b")
    assert clean_a == clean_b
    noisy = files("noisy", shot=0.01, read=0.005)
    assert files("noisy_again", shot=0.01, read=0.005) == noisy  # same seed -> identical bytes
    reseeded = files("reseeded", shot=0.01, read=0.005, seed=1)
    assert set(noisy) == set(clean_a) == set(reseeded)
    for name in noisy:
        if name.endswith("reference.png"):  # references stay clean
            assert noisy[name] == clean_a[name] == reseeded[name]
        else:
            assert noisy[name] != clean_a[name], name
            assert reseeded[name] != noisy[name], name


def test_noise_model_statistics():
    """Shot + read noise: residuals in linear light have std sqrt(shot * x + read**2)."""
    rgb = read_rgb(SKIMAGE_DATA / "astronaut.png")
    r = {"evs": [-1.0, 0.0], "curve": "srgb", "gamma": 2.2, "tau": 1.0, "seed": 0,
         "noise": {"shot": 0.004, "read": 0.01}}
    out = render.render_evs(rgb, "astronaut", r)
    clean = render.expose(render.srgb_to_linear(rgb.astype(np.float64)), -1.0, 1.0)
    noisy = render.srgb_to_linear(out[-1.0])
    mask = (clean > 0.1) & (clean < 0.4)  # far from clipping at 0 and 1
    z = (noisy - clean)[mask] / np.sqrt(0.004 * clean[mask] + 0.01**2)
    assert abs(z.mean()) < 0.02
    assert z.std() == pytest.approx(1.0, abs=0.03)
    # EVs and scenes draw different noise
    other = render.render_evs(rgb, "another scene", r)
    assert not np.array_equal(other[-1.0], out[-1.0])


@pytest.mark.slow
def test_max_side_resizes_and_never_upsamples(tmp_path, p):
    originals = None
    for max_side in (100, 4096, None):
        p["render"]["max_side"] = max_side
        root = tmp_path / str(max_side)
        root.mkdir()
        rows = run_stages(root, p, download, render)
        if originals is None:
            originals = {r["scene"]: read_rgb(root / r["path"]).shape[:2] for r in read_csv(root / download.INDEX)}
        for r in rows:
            h0, w0 = originals[r["scene"]]
            for key in ("input", "reference"):
                h, w = u8(r[key]).shape[:2]
                if max_side == 100:
                    assert max(h, w) == 100, (r["scene"], h, w)
                    assert abs(h / w - h0 / w0) < 0.02
                else:
                    assert (h, w) == (h0, w0), (r["scene"], max_side)
    assert any(max(hw) > 100 for hw in originals.values())


def test_srgb_transfer_functions():
    assert render.srgb_to_linear(np.array(0.5)) == pytest.approx(0.21404114, abs=1e-8)
    assert render.linear_to_srgb(np.array(0.21404114)) == pytest.approx(0.5, abs=1e-7)
    assert render.linear_to_srgb(np.array(0.18)) == pytest.approx(0.46135612, abs=1e-7)
    assert render.srgb_to_linear(np.array([0.0, 1.0])) == pytest.approx([0.0, 1.0])
    assert render.srgb_to_linear(np.array(0.04045)) == pytest.approx(0.04045 / 12.92)
    assert render.linear_to_srgb(np.array(0.0031308)) == pytest.approx(0.04045, abs=1e-6)
    x = np.random.default_rng(0).random((64, 64, 3))
    assert np.allclose(render.linear_to_srgb(render.srgb_to_linear(x)), x, atol=1e-12)
    assert np.allclose(render.srgb_to_linear(render.linear_to_srgb(x)), x, atol=1e-12)
    codes = np.arange(256) / 255.0  # every 8-bit code value survives the round trip
    assert np.array_equal(np.round(render.linear_to_srgb(render.srgb_to_linear(codes)) * 255), np.arange(256))
    assert np.all(np.diff(render.srgb_to_linear(codes)) > 0)
    # out-of-range inputs are clipped, never NaN
    assert np.allclose(render.linear_to_srgb(np.array([-0.5, 2.0])), [0.0, 1.0], atol=1e-12)
    assert np.allclose(render.srgb_to_linear(np.array([-0.5, 2.0])), [0.0, 1.0], atol=1e-12)


def test_ev_names_distinct():
    assert render.ev_name(-1.5) == "ev-1.5"
    assert render.ev_name(0.0) == "ev+0.0"
    assert render.ev_name(-0.0) == "ev+0.0"
    assert render.ev_name(1) == "ev+1.0"
    evs = [-2.0, -1.25, -1.2, -0.2, -0.25, 0.0, 0.2, 0.25, 0.3, 1.0, 1.04, 1.5]
    assert len({render.ev_name(ev) for ev in evs}) == len(evs)


def test_close_evs_do_not_overwrite(tmp_path, p):
    p["render"].update(evs=[-0.25, -0.2, 0.0, 0.2, 0.25], max_side=64)
    rows = run_stages(tmp_path, p, download, render)
    for scene, rs in by_scene(rows).items():
        assert len({r["input"] for r in rs}) == 5
        means = [brightness(r["input"]) for r in rs]
        assert increasing(means), (scene, means)


def test_wide_evs_fine_for_srgb(tmp_path, p):
    """EVs beyond LibRaw's range are fine for sRGB photos (only raw sources are limited)."""
    p["render"].update(evs=[-3.0, 0.0, 3.0], max_side=64)
    rows = run_stages(tmp_path, p, download, render)
    assert len(rows) == 3 * len(by_scene(rows))


def test_missing_index(tmp_path, monkeypatch, p):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError):
        render.run(p)


# --- bad files -----------------------------------------------------------------------------------


def _append_rows(root: Path, extra: list[dict]) -> None:
    rows = read_csv(root / download.INDEX) + extra
    write_csv(root / download.INDEX, rows, list(rows[0].keys()))


def test_bad_files_skipped_rest_rendered(tmp_path, p, caplog):
    p["render"]["max_side"] = 64
    run_stages(tmp_path, p, download)
    good = [row["scene"] for row in read_csv(tmp_path / download.INDEX)]
    files = tmp_path / download.FILES
    (files / "garbage.jpg").write_bytes(b"this is not a JPEG at all" * 100)
    (files / "empty.png").write_bytes(b"")
    (files / "garbage.dng").write_bytes(b"II*\x00" + b"\x00" * 200)
    _append_rows(tmp_path, [
        {"scene": "garbage", "kind": "srgb", "path": "data/downloads/files/garbage.jpg"},
        {"scene": "empty", "kind": "srgb", "path": "data/downloads/files/empty.png"},
        {"scene": "garbage_raw", "kind": "raw", "path": "data/downloads/files/garbage.dng"},
        {"scene": "vanished", "kind": "srgb", "path": "data/downloads/files/vanished.png"},
    ])
    with caplog.at_level(logging.WARNING, logger="expocorr"):
        rows = run_stages(tmp_path, p, render)
    assert set(by_scene(rows)) == set(good)
    assert len(rows) == 5 * len(good)
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    for name in ("garbage.jpg", "empty.png", "garbage.dng", "vanished.png"):
        assert any(name in w for w in warnings), (name, warnings)
    # no half-rendered folder is left for a skipped photo
    assert sorted(d.name for d in (tmp_path / render.IMAGES).iterdir()) == sorted(good)


def test_all_bad_raises_and_keeps_previous_output(tmp_path, p):
    p["render"]["max_side"] = 64
    run_stages(tmp_path, p, download, render)
    manifest = (tmp_path / render.MANIFEST).read_bytes()
    images = sorted(f.relative_to(tmp_path) for f in (tmp_path / render.IMAGES).rglob("*"))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff not really")
    write_csv(tmp_path / download.INDEX, [{"scene": "bad", "kind": "srgb", "path": "bad.jpg"}],
              download.INDEX_FIELDS)
    with pytest.raises(ImageError, match="none of its 1 photos could be rendered"):
        run_stages(tmp_path, p, render)
    assert (tmp_path / render.MANIFEST).read_bytes() == manifest
    assert sorted(f.relative_to(tmp_path) for f in (tmp_path / render.IMAGES).rglob("*")) == images
    leftovers = [f for f in (tmp_path / render.OUT).iterdir() if f.name.startswith(".")]
    assert leftovers == []


def test_all_bad_fresh_writes_nothing(tmp_path, monkeypatch, p):
    monkeypatch.chdir(tmp_path)
    Path("a.png").write_bytes(b"")
    write_csv(download.INDEX, [{"scene": "a", "kind": "srgb", "path": "a.png"}], download.INDEX_FIELDS)
    with pytest.raises(ImageError):
        render.run(p)
    assert not render.MANIFEST.exists()
    assert not render.IMAGES.exists()


def test_same_scene_twice_not_overwritten(tmp_path, p):
    """Two files that map to one scene id (x.png and x.jpg) must not overwrite each other's renders."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(SKIMAGE_DATA / "astronaut.png", folder / "x.png")
    write_rgb(folder / "x.jpg", read_rgb(SKIMAGE_DATA / "coffee.png"))
    shutil.copy(SKIMAGE_DATA / "chelsea.png", folder / "y.png")
    shutil.copy(SKIMAGE_DATA / "rocket.jpg", folder / "z.jpg")
    p["data"].update(source="folder", folder=str(folder))
    p["render"]["max_side"] = 64
    root = tmp_path / "run"
    root.mkdir()
    rows = run_stages(root, p, download, render, split)
    keys = Counter((r["scene"], r["ev"]) for r in rows)
    assert max(keys.values()) == 1  # no duplicated manifest rows
    assert len({r["input"] for r in rows}) == len(rows)
    for rs in by_scene(rows).values():
        reference = u8(rs[0]["reference"])
        for r in rs:
            assert_exposed(reference, u8(r["input"]), 2.0 ** float(r["ev"]))


def test_repeated_scene_in_index_rendered_once(tmp_path, monkeypatch, p, caplog):
    """An index naming one scene twice (two files) renders the first and warns about the second."""
    monkeypatch.chdir(tmp_path)
    write_csv(download.INDEX, [
        {"scene": "x", "kind": "srgb", "path": SKIMAGE_DATA / "astronaut.png"},
        {"scene": "x", "kind": "srgb", "path": SKIMAGE_DATA / "coffee.png"},
        {"scene": "y", "kind": "srgb", "path": SKIMAGE_DATA / "chelsea.png"},
    ], download.INDEX_FIELDS)
    p["render"]["max_side"] = 64
    with caplog.at_level(logging.WARNING, logger="expocorr"):
        render.run(p)
    rows = read_csv(render.MANIFEST)
    assert Counter(r["scene"] for r in rows) == {"x": 5, "y": 5}
    assert any("coffee.png" in rec.getMessage() and "'x'" in rec.getMessage() for rec in caplog.records)
    astronaut = read_rgb(SKIMAGE_DATA / "astronaut.png")
    expected = (np.clip(resize_max_side(astronaut, 64), 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(u8(render.IMAGES / "x/reference.png"), expected)


def test_repeated_scene_after_failure_renders_second_file(tmp_path, monkeypatch, p):
    """If the first file of a scene cannot be read, the next file of that scene is used."""
    monkeypatch.chdir(tmp_path)
    Path("broken.png").write_bytes(b"not a png")
    write_csv(download.INDEX, [
        {"scene": "x", "kind": "srgb", "path": "broken.png"},
        {"scene": "x", "kind": "srgb", "path": SKIMAGE_DATA / "coffee.png"},
    ], download.INDEX_FIELDS)
    p["render"]["max_side"] = 64
    render.run(p)
    assert Counter(r["scene"] for r in read_csv(render.MANIFEST)) == {"x": 5}


# --- MSEC-style inputs (indexed as given) ---------------------------------------------------------


def test_msec_rows_indexed_with_split(tmp_path, monkeypatch, p):
    """MSEC inputs are copied (resized) with their expert references, shared per scene, and keep their split."""
    monkeypatch.chdir(tmp_path)
    rows = []
    for scene, name, split_name in (("a0001", "astronaut.png", "training"), ("a0002", "coffee.png", "testing"),
                                    ("a0003", "chelsea.png", "validation")):
        photo = read_rgb(SKIMAGE_DATA / name)
        ref = Path(f"src/{scene}_gt.png")
        ref.parent.mkdir(exist_ok=True)
        write_rgb(ref, photo)
        for ev in (-1.5, -1.0, 0.0, 1.0, 1.5):
            inp = Path(f"src/{scene}_{ev}.png")
            write_rgb(inp, render.render_evs(photo, scene, dict(p["render"], evs=[ev]))[ev])
            rows.append({"scene": scene, "kind": "msec", "path": inp, "split": split_name, "ev": ev,
                         "reference": ref, "reference_expert_c": ref})
    write_csv(download.INDEX, rows, download.INDEX_FIELDS + [f"reference_expert_{e}" for e in "abcde"])
    p["render"]["max_side"] = 80
    render.run(p)
    manifest = read_csv(render.MANIFEST)
    assert list(manifest[0]) == ["scene", "ev", "input", "reference", "reference_expert_c", "source", "split"]
    assert len(manifest) == 15
    for row in manifest:
        assert row["source"] == "msec"
        for key in ("input", "reference", "reference_expert_c"):
            assert max(u8(row[key]).shape[:2]) == 80
    for scene, rs in by_scene(manifest).items():
        means = [brightness(r["input"]) for r in rs]
        assert increasing(means), (scene, means)
        assert len({r["reference"] for r in rs}) == 1
    split.run(p)
    for name, dataset_name, scene in (("train", "training", "a0001"), ("val", "validation", "a0003"),
                                      ("test", "testing", "a0002")):
        got = read_csv(split.OUT / f"{name}.csv")
        assert {r["scene"] for r in got} == {scene} and {r["split"] for r in got} == {dataset_name}


# --- raw path ------------------------------------------------------------------------------------


def _linear_photo(name: str = "astronaut.png", step: int = 2) -> np.ndarray:
    """A real photo in linear light (even size), as the light a sensor would record."""
    rgb = read_rgb(SKIMAGE_DATA / name)[::step, ::step]
    h, w = rgb.shape[:2]
    return render.srgb_to_linear(rgb[: h - h % 2, : w - w % 2].astype(np.float64))


@pytest.fixture
def dng_folder(tmp_path, make_dng):
    """A folder of two real-photo DNGs (RGGB and BGGR) plus a text file download must ignore."""
    folder = tmp_path / "raws"
    folder.mkdir()
    make_dng(folder / "astronaut.dng", _linear_photo("astronaut.png"), pattern="RGGB")
    make_dng(folder / "coffee.dng", _linear_photo("coffee.png"), pattern="BGGR")
    (folder / "notes.txt").write_text("not a raw file")
    return folder


def _raw_params(p: dict, folder: Path, **render_edits) -> dict:
    q = copy.deepcopy(p)
    q["data"].update(source="raw", folder=str(folder))
    q["render"]["max_side"] = None
    q["render"].update(render_edits)
    return q


def test_raw_renders_increase_with_ev(tmp_path, p, dng_folder):
    q = _raw_params(p, dng_folder)
    root = tmp_path / "run"
    root.mkdir()
    rows = run_stages(root, q, download, render)
    index = read_csv(root / download.INDEX)
    assert {r["kind"] for r in index} == {"raw"} and len(index) == 2
    scenes = by_scene(rows)
    assert set(scenes) == {"astronaut", "coffee"}
    for scene, rs in scenes.items():
        assert [float(r["ev"]) for r in rs] == q["render"]["evs"]
        assert {r["source"] for r in rs} == {"raw"}
        folder = rs[0]["reference"].parent
        assert sorted(f.name for f in folder.iterdir()) == sorted(
            [f"{render.ev_name(ev)}.png" for ev in q["render"]["evs"]] + ["reference.png"])
        (ev0,) = [r for r in rs if float(r["ev"]) == 0.0]
        assert ev0["input"].read_bytes() == ev0["reference"].read_bytes()  # reference = the EV 0 render
        means = [brightness(r["input"]) for r in rs]
        assert increasing(means), (scene, means)
        # the DNG develops back to the photo it was made from, and EV -1 halves its linear light
        original = render.linear_to_srgb(_linear_photo(f"{scene}.png"))
        reference = read_rgb(ev0["reference"])
        assert reference.shape == original.shape
        assert np.abs(reference - original).mean() < 0.03
        (dark,) = [r for r in rs if float(r["ev"]) == -1.0]
        ref_lin, dark_lin = decode(u8(ev0["reference"])), decode(u8(dark["input"]))
        mid = (ref_lin > 0.05) & (ref_lin < 0.95)
        assert np.median(dark_lin[mid] / ref_lin[mid]) == pytest.approx(0.5, abs=0.01)


def test_raw_tau_and_half_size(tmp_path, p, dng_folder):
    """tau for raw: EV +1 at tau 0.5 is the EV +2 render; half_size halves the resolution."""
    plain = tmp_path / "plain"
    plain.mkdir()
    rows_plain = by_scene(run_stages(plain, _raw_params(p, dng_folder, evs=[0.0, 1.0, 2.0]), download, render))
    tau = tmp_path / "tau"
    tau.mkdir()
    rows_tau = by_scene(run_stages(tau, _raw_params(p, dng_folder, evs=[-1.0, 0.0, 1.0], tau=0.5), download, render))
    for scene in rows_plain:
        by_ev_plain = {float(r["ev"]): r["input"] for r in rows_plain[scene]}
        by_ev_tau = {float(r["ev"]): r["input"] for r in rows_tau[scene]}
        assert by_ev_tau[1.0].read_bytes() == by_ev_plain[2.0].read_bytes()
        assert by_ev_tau[0.0].read_bytes() == by_ev_plain[0.0].read_bytes()
    half = tmp_path / "half"
    half.mkdir()
    q = _raw_params(p, dng_folder, evs=[-1.0, 0.0, 1.0])
    q["render"]["raw"]["half_size"] = True
    rows_half = by_scene(run_stages(half, q, download, render))
    for scene, rs in rows_half.items():
        full = u8(rows_plain[scene][0]["input"]).shape[:2]
        for r in rs:
            assert u8(r["input"]).shape[:2] == (full[0] // 2, full[1] // 2)


def test_raw_noise_deterministic(tmp_path, p, dng_folder):
    def images(name: str, **noise) -> dict[str, bytes]:
        q = _raw_params(p, dng_folder, evs=[-1.0, 0.0, 1.0], max_side=64)
        q["render"]["noise"].update(noise)
        root = tmp_path / name
        root.mkdir()
        run_stages(root, q, download, render)
        return {f.relative_to(root).as_posix(): f.read_bytes() for f in sorted((root / render.IMAGES).rglob("*.png"))}

    clean, noisy, again = images("clean"), images("noisy", shot=0.01, read=0.01), images("again", shot=0.01, read=0.01)
    assert noisy == again
    for name in clean:
        if name.endswith("reference.png"):
            assert noisy[name] == clean[name]
        else:
            assert noisy[name] != clean[name], name


@pytest.mark.parametrize("evs, bad", [([-3.0, 0.0, 1.0], "-3.0"), ([-1.0, 0.0, 3.5], "3.5")])
def test_raw_evs_outside_libraw_range(tmp_path, p, dng_folder, evs, bad):
    q = _raw_params(p, dng_folder, evs=evs)
    root = tmp_path / "run"
    root.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        download.run(q)
        with pytest.raises(render.RenderError, match=r"^render\.evs: ") as info:
            render.run(q)
    assert bad in str(info.value)
    assert not (root / render.OUT).exists()  # nothing written


def test_raw_tau_beyond_libraw_range(tmp_path, p, dng_folder):
    q = _raw_params(p, dng_folder, evs=[0.0, 1.5], tau=0.3)  # 2**1.5 / 0.3 > 8
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        download.run(q)
        with pytest.raises(render.RenderError, match=r"render\.tau"):
            render.run(q)
    assert not (tmp_path / render.OUT).exists()


def test_raw_evs_at_libraw_limits_accepted():
    render._check_raw_evs([-2.0, 0.0, 3.0])
    with pytest.raises(render.RenderError, match=r"render\.evs"):
        render._check_raw_evs([-2.5])


@pytest.mark.shared_data
def test_kodak_kdc(tmp_path, p):
    if not (KODAK / "RAW_KODAK_DC50.KDC").is_file():
        pytest.skip(f"{KODAK} not available")
    q = _raw_params(p, KODAK)
    q["render"]["max_side"] = 384
    rows = run_stages(tmp_path, q, download, render)
    index = read_csv(tmp_path / download.INDEX)
    assert [(r["scene"], r["kind"]) for r in index] == [("RAW_KODAK_DC50", "raw")]
    (rs,) = by_scene(rows).values()
    assert [float(r["ev"]) for r in rs] == q["render"]["evs"]
    means = [brightness(r["input"]) for r in rs]
    assert increasing(means), means
    (ev0,) = [r for r in rs if float(r["ev"]) == 0.0]
    assert ev0["input"].read_bytes() == ev0["reference"].read_bytes()
    assert max(u8(ev0["reference"]).shape[:2]) == 384


@pytest.mark.shared_data
def test_kodak_kdc_ev_out_of_range(tmp_path, p):
    if not (KODAK / "RAW_KODAK_DC50.KDC").is_file():
        pytest.skip(f"{KODAK} not available")
    q = _raw_params(p, KODAK, evs=[-3.0, 0.0, 1.0])
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        download.run(q)
        with pytest.raises(render.RenderError, match=r"render\.evs"):
            render.run(q)
    assert not (tmp_path / render.OUT).exists()


# --- a real photo folder -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.shared_data
def test_shared_photo_folder(tmp_path, p):
    if not PHOTOS.is_dir():
        pytest.skip(f"{PHOTOS} not available")
    suffixes = SRGB_SUFFIXES | RAW_SUFFIXES
    photos = [f for f in PHOTOS.rglob("*") if f.is_file() and f.suffix.lower() in suffixes
              and not any(part.startswith(".") for part in f.relative_to(PHOTOS).parts)]
    assert photos
    p["data"].update(source="folder", folder=str(PHOTOS))
    p["render"]["max_side"] = 128
    rows = run_stages(tmp_path, p, download, render, split)
    index = read_csv(tmp_path / download.INDEX)
    skipped = read_csv(tmp_path / download.SKIPPED)
    assert len(index) + len(skipped) == len(photos)
    assert len({r["scene"] for r in index}) == len(index)
    evs = p["render"]["evs"]
    assert len(rows) == len(index) * len(evs)
    assert Counter((r["scene"], float(r["ev"])) for r in rows) == Counter(
        (r["scene"], ev) for r in index for ev in evs)
    for r in rows:
        assert max(u8(r["input"]).shape[:2]) <= 128
    splits = {s: read_csv(tmp_path / split.OUT / f"{s}.csv") for s in split.SPLITS}
    assert sum(len(v) for v in splits.values()) == len(rows)
    scene_sets = [{r["scene"] for r in v} for v in splits.values()]
    assert all(scene_sets)
    assert not (scene_sets[0] & scene_sets[1] or scene_sets[0] & scene_sets[2] or scene_sets[1] & scene_sets[2])
    assert set().union(*scene_sets) == {r["scene"] for r in index}


# --- realistic exposure errors (render.realistic) --------------------------------------------------

OFF = {"enabled": True, "per_scene": 5, "ev_range": [-3.0, 3.0], "ev_step": 0.5, "camera_curve": False,
       "shot_noise": None, "read_noise": False, "white_balance": 0.0, "rolloff": None, "jpeg_quality": None}
HEADER_REALISTIC = "scene,ev,input,reference,source," + ",".join(synthesis.COLUMNS)


def _capture(linear: np.ndarray, ev: float, scene: str = "astronaut", **effects) -> tuple[np.ndarray, dict]:
    """One realistic capture with only `effects` on (the rest off), and its draw."""
    cfg = dict(OFF, **effects)
    d = synthesis.draw(cfg, 0, scene, 0, ev)
    return synthesis.capture(linear, d, 0, scene, 0, render.linear_to_srgb), d


def _plain(linear: np.ndarray, ev: float) -> np.ndarray:
    """Today's synthesis: 2**ev, clipped, sRGB, 8 bits."""
    return to_uint8(render.linear_to_srgb(np.clip(linear * 2.0**ev, 0, 1)))


def _blockiness(u: np.ndarray) -> float:
    """Mean luma step across 8-pixel JPEG block boundaries over the mean step inside blocks (1: no blocks)."""
    y = u.astype(np.float64) @ [0.299, 0.587, 0.114]
    steps = np.abs(np.diff(y, axis=1)).mean(axis=0)  # steps[k]: between columns k and k + 1
    boundary = (np.arange(steps.size) % 8) == 7
    return float(steps[boundary].mean() / steps[~boundary].mean())


@pytest.fixture(scope="module")
def astronaut_linear() -> np.ndarray:
    return render.srgb_to_linear(read_rgb(SKIMAGE_DATA / "astronaut.png")[::4, ::4].astype(np.float64))


def test_realistic_off_everywhere_and_keeps_the_plain_path(tmp_path, p):
    """Off in every params file; off, its other keys change nothing (same bytes, same manifest)."""
    for name in ("params.yaml", "params-paper.yaml", "params-paper-hdr.yaml"):
        assert params.load(REPO / name)["render"]["realistic"]["enabled"] is False, name
    p["render"]["max_side"] = 64
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    run_stages(tmp_path / "a", p, download, render)
    p["render"]["realistic"].update(per_scene=2, ev_range=[-1.0, 1.0], camera_curve=False, jpeg_quality=[10, 20])
    run_stages(tmp_path / "b", p, download, render)
    a, b = ({f.relative_to(root).as_posix(): f.read_bytes() for f in sorted((root / "data/rendered").rglob("*.*"))}
            for root in (tmp_path / "a", tmp_path / "b"))
    assert a == b and len(a) > 10
    assert a["data/rendered/manifest.csv"].decode().splitlines()[0] == "scene,ev,input,reference,source"


def test_realistic_renders_deterministic_recorded_and_clean_references(tmp_path, p):
    """Same seed, same bytes; another seed, other inputs; references stay the clean render; every row
    records its draws, and capturing the reference with them reproduces the stored input."""
    p["render"]["max_side"] = 64
    (tmp_path / "plain").mkdir()
    plain = {r["scene"]: r["reference"] for r in run_stages(tmp_path / "plain", p, download, render)}
    p["render"]["realistic"]["enabled"] = True
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        (tmp_path / name).mkdir()
        runs[name] = run_stages(tmp_path / name, dict(p, render=dict(p["render"], seed=seed)), download, render)
    files = {name: {f.relative_to(tmp_path / name).as_posix(): f.read_bytes()
                    for f in sorted((tmp_path / name / "data/rendered").rglob("*.*"))} for name in runs}
    assert files["a"] == files["b"]
    assert (tmp_path / "a" / render.MANIFEST).read_text().splitlines()[0] == HEADER_REALISTIC
    cfg = p["render"]["realistic"]
    for scene, rows in by_scene(runs["a"]).items():
        evs = [float(r["ev"]) for r in rows]
        assert len(set(evs)) == cfg["per_scene"] == len(rows) and min(evs) < 0 < max(evs)
        assert all(-3 <= ev <= 3 and (ev * 2).is_integer() for ev in evs), evs
        assert rows[0]["reference"].read_bytes() == plain[scene].read_bytes()  # the clean, well-exposed target
        linear = render.srgb_to_linear(read_rgb(rows[0]["reference"]).astype(np.float64))
        for i, r in enumerate(rows):
            assert 70 <= int(r["jpeg_quality"]) <= 95 and 0.5 <= float(r["rolloff"]) <= 1
            assert 0.85 <= float(r["wb_r"]) <= 1.15 and 0.85 <= float(r["wb_b"]) <= 1.15
            assert 0.6 <= float(r["crf_n"]) <= 1.2 and 1e-4 <= float(r["shot"]) <= 0.012
            drawn = {k: (int(r[k]) if k == "jpeg_quality" else float(r[k])) for k in ["ev", *synthesis.COLUMNS]}
            again = synthesis.capture(linear, drawn, 0, scene, i, render.linear_to_srgb)
            assert np.array_equal(again, u8(r["input"])), (scene, r["ev"])
    inputs = [k for k in files["a"] if k.endswith(".png") and not k.endswith("reference.png")]
    assert all(files["a"][k] != files["c"].get(k) for k in inputs)
    assert all(files["a"][k] == files["c"][k] for k in files["a"] if k.endswith("reference.png"))


def test_realistic_camera_references_share_the_inputs_camera(tmp_path, p):
    """`reference: camera`: each input its own reference, the photo captured with the input's curve, white
    balance and roll-off at EV 0 without noise or JPEG; the inputs are the same bytes as with `photo`."""
    p["render"]["max_side"] = 64
    p["render"]["realistic"]["enabled"] = True
    runs = {}
    for mode in ("photo", "camera"):
        (tmp_path / mode).mkdir()
        p["render"]["realistic"]["reference"] = mode
        runs[mode] = run_stages(tmp_path / mode, p, download, render)
    for scene, rows in by_scene(runs["camera"]).items():
        photo_rows = by_scene(runs["photo"])[scene]
        linear = render.srgb_to_linear(read_rgb(photo_rows[0]["reference"]).astype(np.float64))
        assert len({r["reference"] for r in rows}) == len(rows)
        for i, (r, q) in enumerate(zip(rows, photo_rows)):
            assert r["reference"].name == f"reference_{render.ev_name(float(r['ev']))}.png"
            assert r["input"].read_bytes() == q["input"].read_bytes()
            drawn = {k: (int(r[k]) if k == "jpeg_quality" else float(r[k])) for k in ["ev", *synthesis.COLUMNS]}
            clean = synthesis.reference_draw(drawn)
            assert clean["ev"] == 0.0 and not {"shot", "read", "jpeg_quality"} & set(clean)
            expected = synthesis.capture(linear, clean, 0, scene, i, render.linear_to_srgb)
            assert np.array_equal(expected, u8(r["reference"])), (scene, r["ev"])
            assert not np.array_equal(expected, u8(q["reference"]))  # not the photo: its camera


@pytest.mark.parametrize("reference", ["photo", "camera"])
def test_realistic_key_sets_ev0_at_mid_grey(tmp_path, p, reference):
    """`key: 0.18`: each scene is first re-exposed so its log-average luminance is the key (`key_ev`, recorded);
    the inputs and references are then captured from that re-exposure, so EV 0 is the exposure a real bracket
    is scored against (its frame nearest mid-grey)."""
    p["render"]["max_side"] = 64
    p["render"]["realistic"].update(enabled=True, reference=reference)
    (tmp_path / "plain").mkdir()
    plain = by_scene(run_stages(tmp_path / "plain", p, download, render))
    p["render"]["realistic"]["key"] = 0.18
    (tmp_path / "key").mkdir()
    rows = run_stages(tmp_path / "key", p, download, render)
    assert "key_ev" in (tmp_path / "key" / render.MANIFEST).read_text().splitlines()[0].split(",")
    shifts = []
    for scene, scene_rows in by_scene(rows).items():
        photo = read_rgb(tmp_path / "plain" / plain[scene][0]["reference"].parent / "reference.png")
        photo = render.srgb_to_linear(photo.astype(np.float64))
        shift = render.key_ev(photo)
        shifts.append(shift)
        linear = np.clip(photo * 2.0 ** round(shift, 3), 0, 1)
        for i, r in enumerate(scene_rows):
            assert float(r["key_ev"]) == pytest.approx(shift, abs=1e-3)
            drawn = {k: (int(r[k]) if k == "jpeg_quality" else float(r[k])) for k in ["ev", *synthesis.COLUMNS]}
            assert np.array_equal(synthesis.capture(linear, drawn, 0, scene, i, render.linear_to_srgb), u8(r["input"]))
            target = render.srgb_to_linear(u8(r["reference"]) / 255.0)
            if reference == "photo":
                assert abs(render.key_ev(target)) < 0.15 + max(0.0, shift) / 4, scene  # clipped highlights lower it
            else:
                assert np.array_equal(u8(r["reference"]), synthesis.capture(
                    linear, synthesis.reference_draw(drawn), 0, scene, i, render.linear_to_srgb))
    assert max(map(abs, shifts)) > 0.2  # the bundled photos are not all at the key already

def test_realistic_ev_draws_respect_the_range_and_grid():
    cfg = dict(OFF, ev_range=[-2.2, 1.9], ev_step=0.5, per_scene=4)
    assert synthesis.ev_grid(cfg) == [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]
    seen = set()
    for k in range(100):
        evs = synthesis.scene_evs(cfg, 0, f"scene {k}")
        assert len(set(evs)) == 4 and evs == sorted(evs) and set(evs) <= set(synthesis.ev_grid(cfg))
        assert evs[0] < 0 < evs[-1]  # the first part is under-exposed, the last over-exposed
        assert evs == synthesis.scene_evs(copy.deepcopy(cfg), 0, f"scene {k}")
        seen |= set(evs)
    assert seen == set(synthesis.ev_grid(cfg))
    assert synthesis.scene_evs(cfg, 1, "scene 0") != synthesis.scene_evs(cfg, 0, "scene 0") or \
        synthesis.scene_evs(cfg, 1, "scene 1") != synthesis.scene_evs(cfg, 0, "scene 1")


def test_realistic_each_effect_present_only_when_on(astronaut_linear):
    photo = astronaut_linear
    out, d = _capture(photo, -1.0)
    assert d == {"ev": -1.0} and np.array_equal(out, _plain(photo, -1.0))  # all off: today's synthesis
    # camera curve: the drawn sigmoid instead of sRGB (DoRF's mean curve is close to sRGB at mid-grey)
    out, d = _capture(photo, -1.0, camera_curve=True)
    assert np.array_equal(out, to_uint8(synthesis.camera_curve(np.clip(photo * 0.5, 0, 1), d["crf_n"], d["crf_sigma"])))
    assert np.abs(out.astype(int) - _plain(photo, -1.0)).mean() > 2
    assert synthesis.camera_curve(np.array([0.0, 0.18, 1.0]), 0.9, 0.6) == pytest.approx([0, 0.42, 1], abs=0.01)
    # white balance: linear channel means scale by the drawn gains (EV -1: nothing clips)
    out, d = _capture(photo, -1.0, white_balance=0.15)
    ratio = decode(out).mean(axis=(0, 1)) / decode(_plain(photo, -1.0)).mean(axis=(0, 1))
    assert ratio == pytest.approx([d["wb_r"], 1.0, d["wb_b"]], abs=0.01) and abs(d["wb_r"] - 1) > 0.01
    # soft roll-off: values under t untouched, fewer blown highlights than plain clipping at EV +1
    out, d = _capture(photo, 1.0, rolloff=[0.6, 0.6])
    plain = _plain(photo, 1.0)
    below = np.clip(photo * 2, 0, 1) < 0.59
    assert np.array_equal(out[below], plain[below])
    assert (out == 255).mean() < 0.5 * (plain == 255).mean() and (plain == 255).mean() > 0.05
    # JPEG: 8x8 block edges appear, more at a lower quality; PSNR against the plain render that of a JPEG
    cat = render.srgb_to_linear(read_rgb(SKIMAGE_DATA / "chelsea.png")[::2, ::2].astype(np.float64))
    out, d = _capture(cat, 0.0, jpeg_quality=[50, 50])
    assert d["jpeg_quality"] == 50
    assert _blockiness(out) > _blockiness(_plain(cat, 0.0)) + 0.2
    assert _blockiness(out) > _blockiness(_capture(cat, 0.0, jpeg_quality=[95, 95])[0]) + 0.2
    mse = np.mean((out.astype(float) - _plain(cat, 0.0)) ** 2)
    assert 25 < 10 * np.log10(255**2 / mse) < 45
    # noise: Poisson-Gaussian in linear light, std sqrt(shot * x + read**2) in a flat field
    flat = np.full((64, 64, 3), 0.2)
    out, d = _capture(flat, -1.0, shot_noise=[0.004, 0.004], read_noise=True)
    assert d["shot"] == 0.004 and d["read"] > 0
    residual = decode(out) - 0.1
    assert residual.std() == pytest.approx(np.sqrt(0.004 * 0.1 + d["read"] ** 2), rel=0.05)
    assert abs(residual.mean()) < 0.002
    assert _capture(flat, -1.0)[0].std() == 0


def test_realistic_effects_draw_independently():
    """Switching one effect off leaves every other draw as it was; scenes and indices draw differently."""
    on = dict(OFF, camera_curve=True, shot_noise=[1e-4, 0.012], read_noise=True, white_balance=0.15,
              rolloff=[0.5, 1.0], jpeg_quality=[70, 95])
    full = synthesis.draw(on, 0, "coffee", 2, 1.5)
    assert set(full) == {"ev", *synthesis.COLUMNS}
    for key, off, dropped in (("camera_curve", False, {"crf_n", "crf_sigma"}), ("white_balance", 0.0, {"wb_r", "wb_b"}),
                              ("rolloff", None, {"rolloff"}), ("jpeg_quality", None, {"jpeg_quality"}),
                              ("read_noise", False, {"read"})):
        assert synthesis.draw(dict(on, **{key: off}), 0, "coffee", 2, 1.5) == \
            {k: v for k, v in full.items() if k not in dropped}, key
    assert synthesis.draw(on, 0, "coffee", 3, 1.5) != full != synthesis.draw(on, 0, "chelsea", 2, 1.5)


@pytest.mark.parametrize("edit, message", [
    ({"per_scene": 14}, r"render\.realistic\.per_scene: 14 .* 13 multiples"),
    ({"ev_range": [2.0, -2.0]}, r"render\.realistic\.ev_range: \[2\.0, -2\.0\]"),
    ({"rolloff": [0.9, 0.5]}, r"render\.realistic\.rolloff"),
    ({"shot_noise": None}, r"render\.realistic\.read_noise"),
])
def test_realistic_bad_params_name_the_key(tmp_path, p, edit, message):
    p["render"]["realistic"].update(enabled=True, **edit)
    run_stages(tmp_path, p, download)
    with pytest.raises(render.RenderError, match=message):
        run_stages(tmp_path, p, render)
    assert not (tmp_path / render.MANIFEST).exists()


def test_realistic_schema_bounds(base):
    p = copy.deepcopy(base)
    p["render"]["realistic"]["ev_step"] = 0.0
    with pytest.raises(UserError, match=r"render\.realistic\.ev_step"):
        params.validate(p)


def test_realistic_raw_files_use_their_ev0_development(tmp_path, p, dng_folder):
    q = _raw_params(p, dng_folder, max_side=64)
    (tmp_path / "plain").mkdir(), (tmp_path / "real").mkdir()
    plain = {r["scene"]: r["reference"] for r in run_stages(tmp_path / "plain", q, download, render)}
    q["render"]["realistic"].update(enabled=True, ev_range=[-4.0, 4.0])  # beyond LibRaw's exp_shift: fine here
    for scene, rows in by_scene(run_stages(tmp_path / "real", q, download, render)).items():
        assert rows[0]["reference"].read_bytes() == plain[scene].read_bytes()
        assert len(rows) == 5 and {r["source"] for r in rows} == {"raw"} and float(rows[0]["ev"]) < -2

"""Classical exposure-correction baselines: the registry contract, and each baseline on real photos
(scikit-image's sample photos) with exposure errors synthesised by `render.render_evs`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage
from skimage.color import rgb2gray

from expocorr.stages import render
from expocorr.baselines import BASELINES, Baseline, BaselineError, fusion, register, registry
from expocorr.baselines.classical import GAMMA_RANGE, auto_gamma
from expocorr.errors import UserError
from expocorr.imaging.images import read_rgb, to_uint8
from expocorr.metrics import psnr

FROBISHER = Path(__file__).resolve().parents[2] / "shared/data/stacks/frobisher"
# The render section of params.yaml, pinned here so the assertions below do not move with its defaults.
RENDER = {"evs": [-1.5, -1.0, 0.0, 1.0, 1.5], "tau": 1.0, "curve": "srgb", "gamma": 2.2,
          "noise": {"shot": 0.0, "read": 0.0}, "seed": 0}
STACK_TIMES = (1 / 30, 1 / 15, 1 / 8, 1 / 4, 1 / 2)  # seconds; 1/8 s renders the photo as it is


# --- helpers -------------------------------------------------------------------------------------


def photo(name: str, side: int | None = None) -> np.ndarray:
    """A scikit-image sample photo as float32 RGB in [0, 1] (8-bit values), optionally downscaled."""
    rgb = getattr(skimage.data, name)()
    if side:
        rgb = cv2.resize(rgb, (side, round(side * rgb.shape[0] / rgb.shape[1])), interpolation=cv2.INTER_AREA)
    return rgb.astype(np.float32) / 255.0


def quantise(rgb: np.ndarray) -> np.ndarray:
    """As saved to and read back from an 8-bit PNG by the render stage."""
    return to_uint8(rgb).astype(np.float32) / 255.0


def renders(reference: np.ndarray, scene: str, r: dict = RENDER) -> dict[float, np.ndarray]:
    return {ev: quantise(x) for ev, x in render.render_evs(reference, scene, r).items()}


def luma(rgb: np.ndarray) -> float:
    return float(rgb2gray(rgb).mean())


def score(output: np.ndarray, reference: np.ndarray) -> float:
    return psnr(to_uint8(output), to_uint8(reference))


def masked_psnr(output: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (8-bit, peak 255) over the pixels where `mask` (H×W) is true."""
    err = to_uint8(output).astype(np.float64)[mask] - to_uint8(reference).astype(np.float64)[mask]
    mse = np.mean(err**2)
    return float(10 * np.log10(255.0**2 / mse)) if mse else np.inf


def ctx(ev: float | None = None, r: dict = RENDER, **extra) -> dict:
    return {"ev": ev, "render": r, **extra}


def synthetic_stack(radiance: np.ndarray, times=STACK_TIMES, gain: float = 8.0) -> list[tuple[np.ndarray, float]]:
    """8-bit sRGB exposures of linear `radiance` at `times`: a camera with the sRGB curve that clips at white."""
    return [(quantise(render.linear_to_srgb(np.clip(radiance * t * gain, 0.0, 1.0))), t) for t in times]


def call(name: str, rgb: np.ndarray, context: dict) -> np.ndarray:
    return BASELINES[name].fn(rgb, context)


# --- the registry --------------------------------------------------------------------------------


def test_registry():
    assert set(BASELINES) == {"identity", "he", "clahe", "gamma_auto", "ev_auto", "inverse_synthesis", "mertens",
                              "debevec_reinhard"}
    for name, baseline in BASELINES.items():
        assert isinstance(baseline, Baseline) and baseline.name == name and callable(baseline.fn)
    assert {n for n, b in BASELINES.items() if b.oracle} == {"inverse_synthesis"}
    assert {n for n, b in BASELINES.items() if b.needs_stack} == {"debevec_reinhard"}


def test_register_twice_raises():
    with pytest.raises(ValueError, match="registered twice"):
        register("identity")(lambda rgb, ctx: rgb)


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("image", ["astronaut", "odd", "black", "white"])
def test_contract(name, image):
    """Every baseline: same shape, float32, in [0, 1], input left untouched; odd sizes and flat images too."""
    if image == "astronaut":
        rgb = renders(photo("astronaut", 96), "astronaut")[-1.0]
    elif image == "odd":
        rgb = quantise(photo("chelsea")[101:138, 57:110] * 0.6)  # 37×53
    else:
        rgb = np.full((24, 31, 3), 0.0 if image == "black" else 1.0, np.float32)
    stack = synthetic_stack(render.srgb_to_linear(rgb.astype(np.float64)) + 1e-3)
    before = rgb.copy()
    out = call(name, rgb, ctx(-1.0, stack=stack))
    assert out.shape == rgb.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(rgb, before)


@pytest.mark.parametrize("bad", [
    np.zeros((8, 8, 3), np.uint8),  # 8-bit, not float in [0, 1]
    np.zeros((8, 8), np.float32),  # not RGB
    np.zeros((8, 8, 4), np.float32),
    np.full((8, 8, 3), 2.0, np.float32),  # outside [0, 1]
    np.full((8, 8, 3), np.nan, np.float32),
])
def test_contract_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="baseline 'identity': input"):
        call("identity", bad, ctx())


def test_contract_rejects_bad_output():
    fn = registry._checked("broken", lambda rgb, ctx: rgb[:-1] * 2)
    with pytest.raises(ValueError, match="baseline 'broken': output has shape"):
        fn(np.zeros((4, 4, 3), np.float32), ctx())


def test_ctx_without_render_is_a_clear_error():
    with pytest.raises(BaselineError, match="render"):
        call("ev_auto", photo("chelsea", 32), {"ev": None})


# --- classical -----------------------------------------------------------------------------------


def test_identity_is_exact():
    rgb = photo("coffee", 64)
    out = call("identity", rgb, ctx())
    np.testing.assert_array_equal(out, rgb)
    assert out is not rgb


@pytest.mark.parametrize("name", ["he", "clahe"])
@pytest.mark.parametrize("scene", ["astronaut", "coffee"])
def test_equalisation_increases_contrast(name, scene):
    dull = quantise(0.05 + 0.2 * photo(scene, 128))  # dark and low-contrast
    out = call(name, dull, ctx())
    assert rgb2gray(out).std() > 1.5 * rgb2gray(dull).std()
    assert luma(out) > luma(dull)


@pytest.mark.parametrize("name", ["gamma_auto", "ev_auto"])
@pytest.mark.parametrize("scene", ["chelsea", "coffee"])
@pytest.mark.parametrize("ev", [-1.5, 1.5])
def test_auto_exposure_moves_luma_toward_reference(name, scene, ev):
    reference = photo(scene, 192)
    rgb = renders(reference, scene)[ev]
    out = call(name, rgb, ctx())  # no ev: a real method does not know it
    assert abs(luma(out) - luma(reference)) < abs(luma(rgb) - luma(reference))
    assert score(out, reference) > score(rgb, reference)


def test_ev_auto_is_exposure_invariant():
    """Unclipped inputs of one scene at any EV get the same linear scale to key 0.18: the same output."""
    evs = renders(photo("chelsea", 192), "chelsea")
    a, b = call("ev_auto", evs[-1.5], ctx()), call("ev_auto", evs[-1.0], ctx())
    assert score(a, b) > 35.0


def test_auto_gamma_is_clipped():
    assert auto_gamma(np.zeros((4, 4, 3), np.float32)) == GAMMA_RANGE[0]
    assert auto_gamma(np.ones((4, 4, 3), np.float32)) == GAMMA_RANGE[1]
    assert auto_gamma(np.full((4, 4, 3), 0.5, np.float32)) == pytest.approx(1.0)


# --- the oracle ----------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", ["srgb", "gamma"])
@pytest.mark.parametrize("scene", ["astronaut", "chelsea"])
def test_inverse_synthesis(curve, scene):
    r = dict(RENDER, curve=curve)
    reference = photo(scene, 192)
    evs = renders(reference, scene, r)
    under = call("inverse_synthesis", evs[-1.5], ctx(-1.5, r))
    over = call("inverse_synthesis", evs[1.5], ctx(1.5, r))
    # Under-exposure clips nothing: only 8-bit quantisation of the darkened input is lost.
    assert score(under, reference) > 35.0
    # Over-exposure: the pixels left unclipped come back as well; the clipped highlights cannot.
    unclipped = (to_uint8(evs[1.5]) < 255).all(axis=-1)
    assert 0.05 < 1 - unclipped.mean() < 0.9, "the +1.5 EV render should clip some but not all pixels"
    assert masked_psnr(over, reference, unclipped) > 35.0
    assert score(evs[1.5], reference) < score(over, reference) < score(under, reference)


def test_inverse_synthesis_undoes_tau():
    """With tau < 1, highlights clip at tau and the rest is rescaled by 1/tau: the oracle undoes both."""
    r = dict(RENDER, tau=0.8)
    reference = photo("chelsea", 192)
    over = renders(reference, "chelsea", r)[1.5]
    unclipped = (to_uint8(over) < 255).all(axis=-1)
    right = call("inverse_synthesis", over, ctx(1.5, r))
    wrong = call("inverse_synthesis", over, ctx(1.5, RENDER))  # tau ignored
    assert masked_psnr(right, reference, unclipped) > 35.0
    assert masked_psnr(right, reference, unclipped) > masked_psnr(wrong, reference, unclipped) + 5.0


def test_inverse_synthesis_at_ev0_is_identity():
    rgb = photo("coffee", 64)
    assert score(call("inverse_synthesis", rgb, ctx(0.0)), rgb) == np.inf


def test_inverse_synthesis_needs_ev():
    with pytest.raises(BaselineError, match=r"known EV.*ctx\['ev'\]"):
        call("inverse_synthesis", photo("chelsea", 32), ctx(None))


# --- fusion --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scene", ["astronaut", "chelsea", "coffee"])
def test_mertens_fuses_an_under_exposed_photo(scene):
    reference = photo(scene, 192)
    dark = renders(reference, scene)[-1.5]
    out = call("mertens", dark, ctx())
    assert score(out, reference) > score(dark, reference) + 3.0
    assert abs(luma(out) - 0.5) < abs(luma(dark) - 0.5)  # toward mid-grey


def test_mertens_is_deterministic_and_keeps_the_opencv_thread_setting():
    """MergeMertens on several OpenCV threads varied in the last bits between calls (some 8-bit pixels
    flipped, so metrics differed between identical pipeline runs); fusion runs it on one thread."""
    bright = renders(photo("astronaut", 384), "astronaut")[1.0]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        outputs = [call("mertens", bright, ctx()) for _ in range(6)]
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(threads)
    assert all(np.array_equal(out, outputs[0]) for out in outputs[1:])


@pytest.mark.parametrize("scene", ["astronaut", "coffee"])
def test_debevec_reinhard_on_a_known_radiance(scene):
    """A stack rendered from a known radiance (a real photo decoded to linear light, ~10 stops) through a
    known camera (sRGB curve, clipping, 8 bits) at 1/30 .. 1/2 s: the response Debevec recovers is
    monotonic and has the sRGB shape, and the tone-mapped result follows the radiance."""
    radiance = render.srgb_to_linear(photo(scene, 192).astype(np.float64)) + 1e-3
    stack = synthetic_stack(radiance)
    _, response = fusion.merge_debevec(stack)
    assert response.shape == (256, 1, 3)
    assert (np.diff(response[:, 0, :], axis=0) > 0).all(), "camera response not monotonic"
    # OpenCV normalises the response to 1 at code 128; compare with the true curve normalised likewise.
    codes = np.arange(10, 246)
    true = render.srgb_to_linear(codes / 255.0) / render.srgb_to_linear(128 / 255.0)
    assert np.abs(np.log(response[codes, 0, :]) - np.log(true)[:, None]).max() < 0.1

    outs = [call("debevec_reinhard", image, ctx(None, stack=stack)) for image, _ in stack]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])  # the stack decides, not which input of it
    r = np.corrcoef(np.log(rgb2gray(radiance)).ravel(), np.log(rgb2gray(outs[0]) + 1e-4).ravel())[0, 1]
    assert r > 0.9, r


def test_baseline_error_is_a_user_error_and_a_value_error():
    assert issubclass(BaselineError, UserError) and issubclass(BaselineError, ValueError)


def test_debevec_reinhard_without_stack():
    rgb = photo("chelsea", 32)
    for context in (ctx(), ctx(stack=None), ctx(stack=[])):
        with pytest.raises(BaselineError, match="this dataset has no exposure stacks"):
            call("debevec_reinhard", rgb, context)


def test_debevec_reinhard_rejects_bad_stacks():
    rgb = photo("chelsea", 32)
    with pytest.raises(BaselineError, match="two distinct positive exposure times"):
        call("debevec_reinhard", rgb, ctx(stack=[(rgb, 0.1)]))
    with pytest.raises(BaselineError, match="two distinct positive exposure times"):
        call("debevec_reinhard", rgb, ctx(stack=[(rgb, 0.1), (rgb, 0.1)]))
    with pytest.raises(BaselineError, match="shapes"):
        call("debevec_reinhard", rgb, ctx(stack=[(photo("chelsea", 40), 0.1), (photo("chelsea", 40), 0.2)]))


@pytest.mark.shared_data
def test_debevec_reinhard_on_a_real_stack():
    """frobisher: a real tripod bracket (EXIF 1/8 s, 1 s, 8 s): the HDR result neither clips nor crushes."""
    files = [FROBISHER / f"IMG_{n}.jpg" for n in (2600, 2601, 2602)]
    if not all(f.is_file() for f in files):
        pytest.skip(f"{FROBISHER} not available")
    stack = [(read_rgb(f), t) for f, t in zip(files, (1 / 8, 1.0, 8.0), strict=True)]
    _, response = fusion.merge_debevec(stack)
    # Codes near white are barely constrained in a JPEG bracket (the red response dips above ~240).
    assert (np.diff(response[:231, 0, :], axis=0) > 0).all()
    out = call("debevec_reinhard", stack[1][0], ctx(None, stack=stack))
    assert out.shape == stack[1][0].shape

    def lost(rgb: np.ndarray) -> float:  # fraction of pixels clipped at white or crushed to black
        return float(((rgb >= 1.0).any(axis=-1) | (rgb <= 0.02).all(axis=-1)).mean())

    assert lost(out) < 0.01 < min(lost(image) for image, _ in stack)

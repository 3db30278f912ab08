"""Metrics: known values, an independent SSIM, the CIEDE2000 test data, histogram similarity,
no-reference scores (BRISQUE, NIQE on a model fitted here from real photos, "not computed" with its
reason; the Inception Score is in tests/test_noref_scores.py)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import scipy.signal
import scipy.stats
from skimage import data
from skimage.color import deltaE_ciede2000

from expocorr.errors import UserError
from expocorr.metrics import HistogramSimilarity, NoReference, delta_e2000, psnr, ssim
from expocorr.metrics import niqe as niqe_module
from expocorr.metrics import noref as noref_module
from expocorr.metrics.histogram import (
    image_statistics,
    sample_patches,
    set_similarity,
)
from expocorr.metrics.ycbcr import rgb_to_y
from expocorr.sources.bundled import BUNDLED


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


@pytest.fixture(scope="module")
def darkened(astronaut):
    return np.round(astronaut * 0.6).astype(np.uint8)


def _blurred(image):
    return cv2.GaussianBlur(image, (0, 0), 3)


def _noisy(image):
    rng = np.random.default_rng(0)
    return np.clip(image + rng.normal(0, 25, image.shape), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------- PSNR


def test_psnr_from_hand_computed_mse():
    a = np.full((4, 4, 3), 100, np.uint8)
    b = a.copy()
    b[0] += 4  # 4 pixels x 3 channels = 12 of the 48 values differ by 4: MSE = 12 * 16 / 48 = 4
    assert psnr(b, a) == pytest.approx(10 * math.log10(255**2 / 4), abs=1e-9)  # 42.1102 dB
    assert psnr(b, a) == pytest.approx(42.1102, abs=1e-4)
    c = a.copy()
    c[0, 0, 0] += 20
    c[3, 3, 2] -= 10  # MSE = (20^2 + 10^2) / 48 = 500 / 48
    assert psnr(c, a) == pytest.approx(10 * math.log10(255**2 / (500 / 48)), abs=1e-9)  # 37.9533 dB
    assert psnr(c, a) == pytest.approx(psnr(a, c))


def test_psnr_identical_is_inf(astronaut):
    assert psnr(astronaut, astronaut.copy()) == float("inf")
    assert psnr(astronaut, astronaut.copy(), y_channel=True) == float("inf")


def test_psnr_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))


def test_y_channel_known_values():
    assert rgb_to_y(np.zeros((1, 1, 3), np.uint8))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.full((1, 1, 3), 255, np.uint8))[0, 0] == pytest.approx(235.0)
    grey100, grey110 = np.full((4, 4, 3), 100, np.uint8), np.full((4, 4, 3), 110, np.uint8)
    # a grey step of 10 is a luma step of 10 * (65.481 + 128.553 + 24.966) / 255 = 10 * 219 / 255
    assert psnr(grey110, grey100, y_channel=True) == pytest.approx(20 * math.log10(255 / (10 * 219 / 255)))
    red = grey100.copy()
    red[..., 0] += 51  # only R changes: luma step 51 * 65.481 / 255; RGB MSE = 51^2 / 3
    assert psnr(red, grey100, y_channel=True) == pytest.approx(20 * math.log10(255 / (51 * 65.481 / 255)))
    assert psnr(red, grey100) == pytest.approx(10 * math.log10(255**2 / (51**2 / 3)))


# ----------------------------------------------------------------------------------------- SSIM


def _ssim_wang(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 / ssim_index.m, written independently: 11x11 Gaussian (sigma 1.5), 'valid'."""
    r = np.arange(-5, 6)
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g)
    w /= w.sum()
    x, y = x.astype(np.float64), y.astype(np.float64)

    def filt(z):
        return scipy.signal.fftconvolve(z, w, mode="valid")

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(ssim_map.mean())


def test_ssim_of_image_with_itself_is_one(astronaut):
    assert ssim(astronaut, astronaut.copy()) == pytest.approx(1.0, abs=1e-12)
    assert ssim(astronaut, astronaut.copy(), y_channel=True) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_independent_implementation(astronaut, darkened):
    expected = np.mean([_ssim_wang(darkened[..., c], astronaut[..., c]) for c in range(3)])
    assert ssim(darkened, astronaut) == pytest.approx(expected, abs=1e-6)
    assert 0.3 < expected < 0.999  # a real, non-trivial pair
    y_expected = _ssim_wang(
        16 + darkened.astype(np.float64) @ (np.array([65.481, 128.553, 24.966]) / 255),
        16 + astronaut.astype(np.float64) @ (np.array([65.481, 128.553, 24.966]) / 255),
    )
    assert ssim(darkened, astronaut, y_channel=True) == pytest.approx(y_expected, abs=1e-6)


# --------------------------------------------------------------------------------- CIEDE2000

# Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula: implementation notes,
# supplementary test data, and mathematical observations", Table 1 (L*, a*, b* pairs, ΔE00).
SHARMA_ROWS = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0009), 7.1792),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
]


@pytest.mark.parametrize("lab1, lab2, expected", SHARMA_ROWS)
def test_ciede2000_against_sharma_table(lab1, lab2, expected):
    assert deltaE_ciede2000(np.array(lab1), np.array(lab2)) == pytest.approx(expected, abs=5e-5)
    assert deltaE_ciede2000(np.array(lab2), np.array(lab1)) == pytest.approx(expected, abs=5e-5)


def test_delta_e2000_known_images(astronaut, darkened):
    assert delta_e2000(astronaut, astronaut.copy()) == 0.0
    white, black = np.full((2, 2, 3), 255, np.uint8), np.zeros((2, 2, 3), np.uint8)
    assert delta_e2000(white, black) == pytest.approx(100.0, abs=1e-5)  # L* 100 vs 0, S_L = 1 at mean L* 50
    half = white.copy()
    half[0] = 0  # half the pixels black vs white (ΔE 100), half identical (ΔE 0)
    assert delta_e2000(half, white) == pytest.approx(50.0, abs=1e-5)
    assert delta_e2000(darkened, astronaut) == pytest.approx(delta_e2000(astronaut, darkened))
    assert delta_e2000(darkened, astronaut) > 5


def test_delta_e2000_bands_do_not_change_the_mean(astronaut, darkened, monkeypatch):
    whole = delta_e2000(darkened, astronaut)
    monkeypatch.setattr("expocorr.metrics.delta_e._BAND_PIXELS", 1000)
    assert delta_e2000(darkened, astronaut) == pytest.approx(whole, rel=1e-12)


def test_delta_e2000_rejects_non_rgb():
    with pytest.raises(ValueError, match="uint8"):
        delta_e2000(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8))


# ----------------------------------------------------------------------- histogram similarity


def test_statistics_of_synthetic_images():
    grey = np.full((32, 32, 3), 128, np.uint8)
    assert image_statistics(grey) == pytest.approx((128 / 255, 0.0, 0.0), abs=1e-6)
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    assert image_statistics(red) == pytest.approx((0.27, 0.0, 1.0), abs=1e-6)  # HLS saturation of pure red is 1
    checker = (np.indices((32, 32)).sum(axis=0) % 2 * 255).astype(np.uint8)
    checker = np.repeat(checker[..., None], 3, axis=2)
    assert image_statistics(checker) == pytest.approx((0.5, 1.0, 0.0), abs=1e-6)  # 2 * std 0.5 = 1


def test_set_similarity_by_hand():
    outputs = [(0.1, 0.2, 0.3), (0.1, 0.2, 0.3)]
    references = [(0.1, 0.2, 0.9), (0.9, 0.2, 0.9)]
    # luminance: p = [1 in bin of 0.1], q = [1/2 there, 1/2 in bin of 0.9] -> 1/2;
    # contrast identical -> 1; saturation disjoint -> 0
    assert set_similarity(outputs, references) == pytest.approx(
        {"hist_luminance": 0.5, "hist_contrast": 1.0, "hist_saturation": 0.0})
    assert all(math.isnan(v) for v in set_similarity([], references).values())


@pytest.mark.parametrize("patches", [True, False])
def test_histogram_similarity_of_a_set_with_itself_is_one(patches):
    images = [data.astronaut(), data.coffee(), data.chelsea()]
    hist = HistogramSimilarity(patches=patches)
    for image in images:
        hist.add(image, image.copy())
    assert hist.result() == {"hist_luminance": 1.0, "hist_contrast": 1.0, "hist_saturation": 1.0}
    assert len(hist.output_stats) == len(images) * (16 if patches else 1)


@pytest.mark.parametrize("patches", [True, False])
def test_histogram_similarity_drops_for_a_darkened_set(patches):
    hist = HistogramSimilarity(patches=patches)
    for image in (data.astronaut(), data.coffee(), data.chelsea()):
        hist.add(np.round(image * 0.5).astype(np.uint8), image)
    result = hist.result()
    assert set(result) == {"hist_luminance", "hist_contrast", "hist_saturation"}
    assert all(0.0 <= v <= 1.0 for v in result.values())
    assert result["hist_luminance"] < 0.5


def test_histogram_similarity_is_reproducible_and_empty_is_nan(astronaut, darkened):
    runs = []
    for _ in range(2):
        hist = HistogramSimilarity(seed=7)
        hist.add(darkened, astronaut)
        runs.append((hist.output_stats, hist.reference_stats))
    assert runs[0] == runs[1]
    assert all(math.isnan(v) for v in HistogramSimilarity().result().values())
    patches = sample_patches(astronaut, np.random.default_rng(0))
    assert len(patches) == 16 and all(p.shape == (64, 64, 3) and p.dtype == np.float32 for p in patches)


# --------------------------------------------------------------------------- no-reference


def test_noref_defaults_are_not_computed(astronaut):
    noref = NoReference(None)
    assert noref.names == ()
    assert noref.score(astronaut) == {name: "not computed" for name in noref.per_image_names}
    assert noref.result() == {"inception_score": "not computed"}
    status = noref.status()
    assert set(status) == set(noref.all_names) == {"brisque", "niqe", "lpips", "pi", "inception_score"}
    assert status["brisque"].startswith("not computed") and "disabled" in status["brisque"]
    assert status["niqe"] == "not computed: no niqe_params file given (evaluate.noref.niqe_params is null)"
    assert status["inception_score"] == ("not computed: no inception_weights file given "
                                         "(evaluate.noref.inception_weights is null)")
    assert status["lpips"].startswith("not computed: LPIPS is not implemented in expocorr")
    assert status["pi"].startswith("not computed: the perceptual index (PI) is not implemented in expocorr")
    assert "Ma et al." in status["pi"]


def test_noref_missing_files_are_not_computed(tmp_path, astronaut):
    missing = tmp_path / "modelparameters.mat"
    noref = NoReference({"brisque": False, "niqe_params": str(missing), "lpips_weights": str(tmp_path / "x.pth"),
                         "pi_weights": None, "inception_weights": str(tmp_path / "inception_v3.pth")})
    assert noref.score(astronaut)["niqe"] == "not computed"
    assert f"file {missing} not found" in noref.status()["niqe"]
    assert noref.status()["inception_score"] == (f"not computed: file {tmp_path / 'inception_v3.pth'} not found "
                                                 "(evaluate.noref.inception_weights)")
    assert "LPIPS is not implemented" in noref.status()["lpips"]


def test_noref_unimplemented_weights_raise(tmp_path):
    weights = tmp_path / "lpips_alex.pth"
    weights.write_bytes(b"weights")
    with pytest.raises(NotImplementedError, match="LPIPS is not implemented"):
        NoReference({"lpips_weights": str(weights)})
    with pytest.raises(NotImplementedError, match=r"evaluate\.noref\.pi_weights: .* perceptual index \(PI\) is not"):
        NoReference({"pi_weights": str(weights)})
    with pytest.raises(UserError, match="unknown key"):
        NoReference({"brisque": True, "musiq": True})


def test_noref_brisque_unavailable_is_not_computed(monkeypatch, astronaut):
    def broken():
        raise ImportError("No module named 'libsvm'")

    monkeypatch.setattr(noref_module, "_make_brisque", broken)
    noref = NoReference({"brisque": True})
    assert noref.score(astronaut)["brisque"] == "not computed"
    assert "cannot be used" in noref.status()["brisque"] and "libsvm" in noref.status()["brisque"]


def test_brisque_finite_and_worse_when_degraded(astronaut):
    pytest.importorskip("brisque", reason="the PyPI brisque package is not installed")
    noref = NoReference({"brisque": True})
    assert noref.names == ("brisque",)
    assert noref.status()["brisque"].startswith("computed")
    clean = noref.score(astronaut)["brisque"]
    assert isinstance(clean, float) and math.isfinite(clean)
    assert noref.score(_blurred(astronaut))["brisque"] > clean + 10
    assert noref.score(_noisy(astronaut))["brisque"] > clean + 10


# ------------------------------------------------------------------------------------ NIQE


@pytest.fixture(scope="module")
def niqe_params_file(tmp_path_factory):
    """A pristine model fitted here on scikit-image's bundled photos (astronaut held out)."""
    photos = [data.chelsea(), data.coffee(), data.rocket(), data.stereo_motorcycle()[0], data.camera(),
              data.brick(), data.grass(), data.gravel()]
    mu, cov = niqe_module.fit_params(photos, sharpness_threshold=0.0)
    path = tmp_path_factory.mktemp("niqe") / "modelparameters.mat"
    niqe_module.save_params(path, mu, cov)
    return path


def test_niqe_lower_for_clean_than_degraded(niqe_params_file, astronaut):
    noref = NoReference({"niqe_params": str(niqe_params_file)})
    assert noref.names == ("niqe",)
    clean = noref.score(astronaut)["niqe"]
    assert math.isfinite(clean)
    assert noref.score(_blurred(astronaut))["niqe"] > clean + 2
    assert noref.score(_noisy(astronaut))["niqe"] > clean + 2


def test_niqe_params_round_trip_and_bad_files(niqe_params_file, tmp_path):
    mu, cov = niqe_module.load_params(niqe_params_file)
    assert mu.shape == (36,) and cov.shape == (36, 36) and np.allclose(cov, cov.T)
    np.savez(tmp_path / "basicsr.npz", mu_pris_param=mu, cov_pris_param=cov)
    mu2, cov2 = niqe_module.load_params(tmp_path / "basicsr.npz")
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(cov, cov2)
    (tmp_path / "junk.mat").write_bytes(b"not a mat file")
    with pytest.raises(UserError, match="junk.mat"):
        niqe_module.load_params(tmp_path / "junk.mat")
    np.savez(tmp_path / "wrong.npz", mu=mu)
    with pytest.raises(UserError, match="no mu_prisparam"):
        niqe_module.load_params(tmp_path / "wrong.npz")


def test_niqe_edge_cases(niqe_params_file):
    mu, cov = niqe_module.load_params(niqe_params_file)
    assert math.isnan(niqe_module.niqe(np.full((192, 192, 3), 90, np.uint8), mu, cov))  # no finite feature
    with pytest.raises(ValueError, match="smaller than one 96×96 block"):
        niqe_module.niqe(np.zeros((95, 300, 3), np.uint8), mu, cov)


def test_bundled_niqe_model_is_its_refit(tmp_path, astronaut, capsys):
    """niqe_bundled.npz is what `python -m expocorr.metrics fit-niqe-bundled` fits on the bundled photos; with
    `niqe_params: bundled` NIQE is computed from it, and an image smaller than one block has no value."""
    assert niqe_module.main(["fit-niqe-bundled", str(tmp_path / "refit.npz")], BUNDLED) == 0
    assert "fitted on 8 bundled photos" in capsys.readouterr().out
    for shipped, refit in zip(niqe_module.load_params(niqe_module.BUNDLED_PARAMS),
                              niqe_module.load_params(tmp_path / "refit.npz")):
        np.testing.assert_allclose(refit, shipped, rtol=1e-7, atol=1e-12)
    assert niqe_module.main(["fit-niqe-bundled"], BUNDLED) == 2
    noref = NoReference({"niqe_params": "bundled"})
    assert noref.names == ("niqe",) and "not the MATLAB release's model" in noref.status()["niqe"]
    clean = noref.score(astronaut)["niqe"]
    assert math.isfinite(clean) and noref.score(_blurred(astronaut))["niqe"] > clean + 2
    assert math.isnan(noref.score(astronaut[:95])["niqe"])


def test_aggd_fit_recovers_generalised_gaussian_parameters():
    # A symmetric GGD of shape a and scale s has beta_l = beta_r = s in NIQE's parametrisation.
    for shape, scale, seed in ((0.8, 0.5, 1), (2.0, 1.3, 2)):
        samples = scipy.stats.gennorm.rvs(shape, scale=scale, size=(1, 200_000), random_state=seed)
        alpha, beta_l, beta_r = niqe_module.aggd_fit(samples)
        assert alpha[0] == pytest.approx(shape, rel=0.02)
        assert beta_l[0] == pytest.approx(scale, rel=0.02) and beta_r[0] == pytest.approx(scale, rel=0.02)


def test_matlab_imresize_half():
    ramp = np.tile(np.arange(40.0), (8, 1))
    half = niqe_module.imresize_matlab(ramp, 0.5)
    assert half.shape == (4, 20)
    # output sample j (0-based) sits at input position 2j + 0.5; bicubic reproduces a ramp away from borders
    np.testing.assert_allclose(half[:, 3:-3], np.tile(2 * np.arange(3, 17) + 0.5, (4, 1)), atol=1e-9)
    np.testing.assert_allclose(niqe_module.imresize_matlab(np.full((9, 7), 3.0), 0.5), 3.0)
    assert niqe_module.imresize_matlab(np.zeros((9, 7)), 0.5).shape == (5, 4)

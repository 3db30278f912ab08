"""MSEC: the official Laplacian pyramid and wiring, the model contract, parameter counts, the paper's
training settings, the three loss terms, GAN steps, the official patch extraction and large-photo
inference."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import yaml
from scipy.ndimage import correlate
from skimage import data as skdata

from expocorr import inference, params, sampling
from expocorr.stages import render
from expocorr.models import MODELS, build, msec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """The shared 2-core machine runs far faster with one intra-op thread; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(arch: dict | None = None, seed: int = 0) -> msec.MSEC:
    torch.manual_seed(seed)
    return build("msec", arch or {})


def train_cfg(path: Path) -> dict:
    """`train.msec` of a params file, validated against its part of the schema."""
    cfg = yaml.safe_load(path.read_text())["train"]["msec"]
    full = params.schema()
    jsonschema.validate(cfg, {"$defs": full["$defs"], **full["properties"]["train"]["properties"]["msec"]})
    return cfg


def generator_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("discriminator."))


def rand(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def paired_batch(h: int, w: int, seed: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input": torch.rand(2, 3, h, w, generator=g), "target": torch.rand(2, 3, h, w, generator=g)}


# --- Laplacian pyramid ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 64), (33, 47), (5, 7), (1, 9)])
@pytest.mark.parametrize("levels", [1, 2, 4])
def test_pyramid_round_trip(size, levels):
    x = rand(2, 3, *size)
    pyramid = msec.laplacian_pyramid(x, levels)
    assert len(pyramid) == levels
    h, w = size
    for level, band in enumerate(pyramid):
        assert band.shape == (2, 3, h, w)
        h, w = -(-h // 2), -(-w // 2)
    assert torch.equal(pyramid[-1], msec.gaussian_pyramid(x, levels)[-1])
    assert torch.allclose(msec.reconstruct(pyramid), x, atol=1e-5, rtol=0)


def test_pyramid_bands_of_a_constant_image_are_zero_inside():
    """The filter is normalised and balanced between even and odd taps: a flat image has no detail
    away from the border. At the border the official upsample_.m leaves a trace (its 1-px replicate
    pad is narrower than the twice-applied filter): at most 2 px deep and under 6 % of the level."""
    x = torch.full((1, 3, 37, 50), 0.3)
    pyramid = msec.laplacian_pyramid(x, 4)
    for band in pyramid[:-1]:
        assert band[..., 2:-2, 2:-2].abs().max() < 1e-6
        assert band.abs().max() < 0.06 * 0.3
    assert torch.allclose(pyramid[-1], torch.full_like(pyramid[-1], 0.3))


def matlab_laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """The authors' laplacian_pyramid_.m / downsample_.m / upsample_.m / pyramid_filter_.m, line by line
    (H×W×3 float64): imfilter with the 2-D 5×5 filter and then with its transpose, 'symmetric'
    (scipy's 'reflect') going down, zero borders going up."""
    f = np.array([0.05, 0.25, 0.4, 0.25, 0.05])
    filt = np.outer(f, f)[:, :, None]

    def down(im):
        return correlate(correlate(im, filt, mode="reflect"), filt.transpose(1, 0, 2), mode="reflect")[::2, ::2]

    def up(im, odd):
        im = np.pad(im, ((1, 1), (1, 1), (0, 0)), mode="edge")
        r, c = 2 * im.shape[0], 2 * im.shape[1]
        out = np.zeros((r, c, im.shape[2]))
        out[::2, ::2] = 4 * im
        out = correlate(correlate(out, filt, mode="constant"), filt.transpose(1, 0, 2), mode="constant")
        return out[2 : r - 2 - odd[0], 2 : c - 2 - odd[1]]

    pyramid, j = [], image
    for _ in range(levels - 1):
        low = down(j)
        pyramid.append(j - up(low, (2 * low.shape[0] - j.shape[0], 2 * low.shape[1] - j.shape[1])))
        j = low
    return pyramid + [j]


@pytest.mark.parametrize("size", [(37, 50), (64, 64), (5, 7), (1, 9), (3, 2)])
def test_pyramid_matches_the_official_matlab_code(size):
    image = np.random.default_rng(0).random(size + (3,))
    ours = msec.laplacian_pyramid(torch.from_numpy(image).permute(2, 0, 1)[None], 4)
    for band, ref in zip(ours, matlab_laplacian_pyramid(image, 4), strict=True):
        np.testing.assert_allclose(band[0].permute(1, 2, 0).numpy(), ref, atol=1e-12, rtol=0)


def test_pyramid_residual_is_a_blurred_copy():
    x = rand(1, 3, 64, 64)
    detail = msec.laplacian_pyramid(x, 2)[0]
    coarse = msec.gaussian_pyramid(x, 2)[1]
    assert coarse.shape == (1, 3, 32, 32)
    assert detail.abs().mean() > 0.1  # white noise is mostly high frequency
    assert coarse.std() < 0.5 * x.std()  # and the low-pass level has much less of it


def test_pyramid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="B×C×H×W"):
        msec.laplacian_pyramid(torch.rand(3, 8, 8), 2)
    with pytest.raises(ValueError, match="pyr_up"):
        msec.pyr_up(torch.rand(1, 3, 4, 4), (10, 8))


# --- contract ---------------------------------------------------------------------------------


def test_registered_and_paired():
    assert MODELS["msec"] is msec.MSEC and msec.MSEC.paired


@pytest.mark.parametrize("size", [(33, 47), (65, 31), (5, 7)])
def test_forward_any_size_in_range(size):
    model = make()
    x = rand(2, 3, *size)
    for mode in (True, False):
        with torch.no_grad():
            y = model.train(mode)(x)
        assert y.shape == x.shape
        assert torch.isfinite(y).all()
        assert y.min() >= 0 and y.max() <= 1


def test_same_seed_same_output():
    x = rand(2, 3, 30, 50, seed=3)
    outs = [make(seed=7)(x) for _ in range(2)]
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], make(seed=8)(x))


def test_paper_parameter_counts():
    """The authors' MATLAB architecture (paper: "~7M parameters"), counted layer by layer."""
    model = msec.MSEC(**msec.PAPER_ARCH)

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    # finest (3 stages, 16 filters), two middle (3 stages, 24), coarsest (4 stages, 24)
    assert [count(s) for s in model.subnets] == [482_067, 1_083_675, 1_083_675, 4_365_915]
    assert [count(u) for u in model.upsamplers] == [39, 39, 39]  # 2×2 transposed conv, 3 -> 3
    generator = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("discriminator."))
    assert generator == 7_015_449
    assert count(model.discriminator) == 962_585  # 7 blocks (8 .. 128, 256 filters) + 2×2 conv
    assert model.multiple == 128
    with torch.no_grad():
        assert model.discriminator(rand(2, 3, 100, 70)).shape == (2,)


def test_parameter_counts_of_the_params_files():
    """params-paper.yaml is the official network (7,015,449, as the PyTorch port); params.yaml the CPU one."""
    paper = train_cfg(REPO / "params-paper.yaml")["arch"]
    assert paper == msec.PAPER_ARCH
    assert generator_count(build("msec", paper)) == 7_015_449
    assert generator_count(build("msec", train_cfg(REPO / "params.yaml")["arch"])) == 433_037


def test_paper_params_are_the_official_training_settings():
    """params-paper.yaml against main_training.m, train_network.m and get_trainingOptions.m."""
    cfg = train_cfg(REPO / "params-paper.yaml")
    stages = [(128, 40, 32, 20), (256, 30, 8, 10), (512, 20, 4, 5)]  # patch, epochs, mini-batch, dropRate
    starts = np.cumsum([0] + [epochs for _, epochs, _, _ in stages[:-1]]).tolist()
    assert cfg["patch_curriculum"] == [[start, size, batch] for start, (size, _, batch, _) in zip(starts, stages)]
    assert cfg["epochs"] == sum(epochs for _, epochs, _, _ in stages) == 90
    assert cfg["schedule"] == {"policy": "step", "every": [d for *_, d in stages], "gamma": 0.5, "restart": True}
    assert (cfg["lr"], cfg["d_lr"], cfg["betas"], cfg["weight_decay"]) == (1e-4, 1e-5, [0.9, 0.999], 0.0)
    assert (cfg["sampling"], cfg["select"], cfg["grad_clip"]) == ("patches", "last", None)
    # train_network(..., T) turns D on for 1-based epochs i > T of a stage: none / 15 / 5 per stage.
    on = [start + i for start, t, (_, epochs, _, _) in zip(starts, [None, 15, 5], stages) if t is not None
          for i in range(t, epochs)]
    model = msec.MSEC(**msec.PAPER_ARCH)
    assert [e for e in range(90) if model.adversarial_on(e)] == on
    assert on[0] == 55 and on[-1] == 89 and 70 not in on and 74 not in on and 75 in on


def test_default_parameter_counts():
    model = make()
    generator = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("discriminator."))
    assert generator == 433_037 and sum(p.numel() for p in model.discriminator.parameters()) == 175_257
    assert model.multiple == 64


@pytest.mark.parametrize(
    ("arch", "arg"),
    [
        ({"levels": 1}, "levels"),
        ({"channels": [8, 8, 8]}, "channels"),
        ({"depths": [2, 2, 0, 3]}, "depths"),
        ({"d_size": 48}, "d_size"),
        ({"d_channels": 0}, "d_channels"),
        ({"adv_weight": -1.0}, "adv_weight"),
        ({"adv_epochs": [[1.5, None]]}, "adv_epochs"),
        ({"adv_epochs": [[3, 3]]}, "adv_epochs"),
        ({"adv_epochs": 4}, "adv_epochs"),
        ({"wiring": "paper"}, "wiring"),
        ({"variant": "keras"}, "variant"),
        ({"band_scale": [1.5, 1.5, 1.05]}, "band_scale"),
        ({"band_scale": [1.5, 1.5, 1.5, 0]}, "band_scale"),
    ],
)
def test_invalid_arguments_name_the_argument(arch, arg):
    with pytest.raises(ValueError, match=arg):
        msec.MSEC(**arch)


# --- wiring -----------------------------------------------------------------------------------


@pytest.mark.parametrize("wiring", msec.WIRINGS)
def test_wiring_by_hand(wiring):
    """official: Y_n = S_n(G_n), Y_l = S_l(L_l + U_{l+1}) + U_{l+1}; residual: each level adds its input."""
    model = make({"wiring": wiring})
    x = rand(2, 3, 64, 64)  # a multiple of 64: no padding
    with torch.no_grad():
        pyramid = msec.laplacian_pyramid(x, 4)
        y = model.subnets[3](pyramid[3]) + (pyramid[3] if wiring == "residual" else 0)
        ups = []
        for k in (2, 1, 0):
            u = model.upsamplers[k](y)
            ups.append(u)
            y = model.subnets[k](pyramid[k] + u) + (pyramid[k] + u if wiring == "residual" else u)
        got, got_ups = model.generate(x)
    assert torch.allclose(got, y, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got_ups, ups[::-1], strict=True))


def test_only_the_residual_wiring_starts_from_nearest_neighbour_upsamplers():
    nearest = torch.eye(3).view(3, 3, 1, 1).expand(3, 3, 2, 2)
    assert all(torch.equal(u.weight, nearest) for u in make({"wiring": "residual"}).upsamplers)
    assert not any(torch.equal(u.weight, nearest) for u in make({"wiring": "official"}).upsamplers)


def test_band_scale_multiplies_the_input_pyramid_only_when_asked():
    x = rand(1, 3, 64, 64)
    scale = [1.5, 1.5, 1.5, 1.05]
    model = make({"wiring": "official", "band_scale": scale}).eval()
    with torch.no_grad():
        plain, scaled = model(x), model(x, scale_bands=True)
        pyramid = [b * s for b, s in zip(msec.laplacian_pyramid(x, 4), scale)]
        expected = model(msec.reconstruct(pyramid))  # the pyramid of the reconstruction is the scaled one
        unscaled_model = make({"wiring": "official"}).eval()(x, scale_bands=True)
    assert not torch.allclose(plain, scaled)
    assert torch.allclose(scaled, expected, atol=1e-4)
    assert torch.equal(plain, unscaled_model)  # band_scale null: scale_bands changes nothing


def test_large_photos_run_as_the_official_demo(monkeypatch):
    """Above 512 px: the network at 512 px with the band scale, BGU fitted at 200×200 on a 22×22×8 grid."""
    model = make({"band_scale": [1.5, 1.5, 1.5, 1.05]}).eval()
    calls, fits = [], []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda x, scale_bands=False: calls.append((tuple(x.shape), scale_bands))
                        or forward(x, scale_bands))
    inner = inference.guided_upsample
    monkeypatch.setattr(inference, "guided_upsample", lambda full, low_in, low_out, **kw: fits.append(
        (low_in.shape, low_out.shape, kw)) or inner(full, low_in, low_out, **kw))
    rgb = np.random.default_rng(0).random((600, 900, 3), dtype=np.float32)
    out = inference.run_model(model, rgb, torch.device("cpu"))
    assert out.shape == rgb.shape and out.dtype == np.float32
    assert calls == [((1, 3, 341, 512), True)]
    assert fits == [((200, 200, 3), (200, 200, 3), {"cell": 200 / 21, "bins": 7, "device": torch.device("cpu")})]
    with torch.no_grad():
        small = inference.run_model(model, rgb[:300, :400], torch.device("cpu"))  # up to 512 px: as it is
    assert calls[-1] == ((1, 3, 300, 400), False) and small.shape == (300, 400, 3)


# --- loss -------------------------------------------------------------------------------------


def test_loss_terms_and_adversarial_switch():
    model = make({"adv_epochs": [[3, None]]}).train()
    batch = paired_batch(40, 36)
    out = model(batch["input"])
    before = model.loss(batch, out, epoch=2)
    assert set(before) == {"rec", "pyr", "adv", "total"}
    assert before["adv"].item() == 0 and model.d_loss(batch, out.detach(), epoch=2) is None
    after = model.loss(batch, model(batch["input"]), epoch=3)
    assert after["adv"].item() > 0
    assert torch.allclose(after["total"], after["rec"] + after["pyr"] + after["adv"])
    assert torch.allclose(after["rec"], before["rec"]) and torch.allclose(after["pyr"], before["pyr"])
    d = model.d_loss(batch, out.detach(), epoch=3)
    assert set(d) == {"real", "fake", "total"} and torch.isfinite(d["total"])
    assert msec.MSEC(adv_weight=0.0).d_loss(batch, out.detach(), epoch=99) is None


def test_loss_matches_the_paper_formula():
    """rec: mean L1 of the unclamped output; pyr: Σ_l 2^(l-2)·Σ|U_l − expand(G_l(T))| / (3HWB)."""
    model = make().train()
    batch = paired_batch(64, 64)  # a multiple of 64: no padding, so the reference is simple
    target = batch["target"]
    with torch.no_grad():
        terms = model.loss(batch, model(batch["input"]), epoch=0)
        y, ups = model.generate(batch["input"])
    assert terms["rec"].item() == pytest.approx((y - target).abs().mean().item(), rel=1e-5)
    gauss = msec.gaussian_pyramid(target, 4)
    assert [u.shape[-1] for u in ups] == [64, 32, 16]  # U_2, U_3, U_4 at levels 1, 2, 3
    expected = sum(
        weight * (u - msec.pyr_up(g, u.shape[-2:])).abs().sum() / target.numel()
        for weight, u, g in zip([1, 2, 4], ups, gauss[1:])
    )
    assert terms["pyr"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_without_cached_forward_recomputes_the_same_values():
    model = make().train()
    batch = paired_batch(33, 47)
    out = model(batch["input"])
    assert model._last is not None and model._last[0] is out
    cached = model.loss(batch, out, epoch=0)
    assert model._last is None
    fresh = model.loss(batch, out.detach().clone(), epoch=0)  # not the cached output: recomputed
    with torch.no_grad():
        model.eval()(batch["input"])
    assert model._last is None  # nothing kept outside training
    for key in ("rec", "pyr", "total"):
        assert torch.allclose(cached[key], fresh[key])


def test_gradient_reaches_every_parameter():
    model = make({"adv_epochs": [[0, None]]}).train()
    batch = paired_batch(40, 36)
    out = model(batch["input"])
    model.loss(batch, out, epoch=0)["total"].backward()
    generator = {n: p for n, p in model.named_parameters() if not n.startswith("discriminator.")}
    missing = [n for n, p in generator.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"
    assert all(torch.isfinite(p.grad).all() for p in generator.values())
    # the generator's adversarial term runs through the discriminator without filling its grads
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.requires_grad for p in model.discriminator.parameters())
    model.d_loss(batch, out.detach(), epoch=0)["total"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.discriminator.parameters())


def test_one_generator_step_and_one_discriminator_step():
    """The trainer's loop: a G step moves only the generator, a D step only the discriminator."""
    model = make({"adv_epochs": [[1, None]]}).train()
    g_params = [p for n, p in model.named_parameters() if not n.startswith("discriminator.")]
    opt_g = torch.optim.Adam(g_params, lr=1e-3)
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=1e-3)

    def snapshot() -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    def changed(a: dict, b: dict, d: bool) -> set[str]:
        """Names that differ between snapshots a and b, among D's (d) or G's (not d) parameters."""
        return {n for n in a if n.startswith("discriminator.") == d and not torch.equal(a[n], b[n])}

    batch = paired_batch(32, 32)

    start = snapshot()
    out = model(batch["input"])
    g = model.loss(batch, out, epoch=1)
    opt_g.zero_grad()
    g["total"].backward()
    opt_g.step()
    after_g = snapshot()
    assert changed(start, after_g, d=False) == {n for n in start if not n.startswith("discriminator.")}
    assert not changed(start, after_g, d=True)

    d = model.d_loss(batch, out.detach(), epoch=1)
    opt_d.zero_grad()
    d["total"].backward()
    opt_d.step()
    after_d = snapshot()
    assert not changed(after_g, after_d, d=False)
    d_weights = {n for n, p in model.discriminator.named_parameters()}
    assert changed(after_g, after_d, d=True) == {f"discriminator.{n}" for n in d_weights}


# --- training patches (sampling.msec_patches) -------------------------------------------------


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.8, (h, w, 3)).astype(np.float32)


def matlab_mean_gradient(patch: np.ndarray) -> float:
    """mean(imgradient(rgb2gray(patch))): MATLAB's Sobel masks (fspecial), 'replicate' border."""
    gray = patch.astype(np.float64) @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
    sobel = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)
    gy, gx = correlate(gray, -sobel, mode="nearest"), correlate(gray, -sobel.T, mode="nearest")
    return float(np.hypot(gx, gy).mean())


def test_msec_patches_follow_the_official_counts_and_filters():
    h, w = 300, 420
    ref = textured(h, w)
    ref[:, :150] = 0.004  # a dark strip (R+G+B per pixel 0.012 < 0.02): patches inside it are rejected
    ref[:150, 300:] = 0.5  # a flat block: patches inside it are rejected for their gradient
    inp = (ref * 0.3).astype(np.float32)
    for size, kept in [(128, 10), (64, 18)]:  # patches_extraction.m: 2^(10 - i) + 2
        corners = sampling.msec_patches(inp, ref, size, np.random.default_rng(1))
        assert len(corners) == kept == sampling.MSEC_PATCHES_BASE // size + sampling.MSEC_EXTRA_PATCHES
        for y, x in corners:
            assert 0 <= y < h - size and 0 <= x < w - size
            patch = ref[y : y + size, x : x + size]
            assert patch.sum() / size**2 >= 0.02 and patch.mean() <= 0.98
            assert matlab_mean_gradient(patch) >= 0.06
            assert sampling.msec_mean_gradient(patch) == pytest.approx(matlab_mean_gradient(patch), rel=1e-9)
        assert all(x + size > 150 for _, x in corners)  # none wholly inside the dark strip


def test_msec_patches_are_deterministic_per_seed_and_ignore_the_input():
    ref = textured(200, 260)
    a = sampling.msec_patches(ref, ref, 64, np.random.default_rng(5))
    assert a == sampling.msec_patches(ref * 0.1, ref, 64, np.random.default_rng(5))  # same scene, other EV
    assert a != sampling.msec_patches(ref, ref, 64, np.random.default_rng(6))


@pytest.mark.parametrize("image", ["flat", "white", "small"])
def test_msec_patches_none_from_flat_saturated_or_small_images(image):
    ref = {"flat": np.full((200, 200, 3), 0.5, np.float32), "white": np.ones((200, 200, 3), np.float32),
           "small": textured(128, 300)}[image]  # "small": not larger than 128 px in height
    assert sampling.msec_patches(ref, ref, 128, np.random.default_rng(0)) == []


def test_msec_patches_give_up_after_200_rejections():
    """A flat image: 200 draws (two integers each), then nothing kept."""
    rng = np.random.default_rng(3)
    flat = np.full((200, 200, 3), 0.5, np.float32)
    assert sampling.msec_patches(flat, flat, 64, rng) == []
    reference = np.random.default_rng(3)
    for _ in range(2 * sampling.MSEC_MAX_REJECTIONS):
        reference.integers(0, 136)
    assert rng.integers(0, 1 << 30) == reference.integers(0, 1 << 30)


# --- overfitting ------------------------------------------------------------------------------


def photo_pair(size: int = 64, ev: float = -1.5) -> dict[str, torch.Tensor]:
    """Real photo crops as targets; inputs re-exposed by `ev` stops in linear light."""
    crops = [skdata.astronaut()[80 : 80 + size, 180 : 180 + size], skdata.chelsea()[100 : 100 + size, 150 : 150 + size]]
    target = np.stack(crops).astype(np.float64) / 255
    inputs = render.linear_to_srgb(render.expose(render.srgb_to_linear(target), ev, 1.0))
    return {
        "input": torch.from_numpy(inputs).permute(0, 3, 1, 2).float().contiguous(),
        "target": torch.from_numpy(target).permute(0, 3, 1, 2).float().contiguous(),
    }


@pytest.mark.slow
@pytest.mark.parametrize("wiring", msec.WIRINGS)
def test_overfits_one_batch(wiring):
    batch = photo_pair()
    model = make({"wiring": wiring}).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def l1() -> float:
        with torch.no_grad():
            return (model(batch["input"]) - batch["target"]).abs().mean().item()

    first = l1()
    for _ in range(150):
        out = model(batch["input"])
        loss = model.loss(batch, out, epoch=0)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = l1()
    baseline = (batch["input"] - batch["target"]).abs().mean().item()
    assert last <= 0.5 * first, (first, last)
    assert last <= 0.5 * baseline, (baseline, last)  # better than leaving the photo as it is

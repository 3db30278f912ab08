"""Zero-DCE and Zero-DCE++: official layouts and parameter counts, the contract, the official losses,
and unpaired training that brightens a real photo darkened by 2 EV."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from expocorr.models import MODELS, build, zerodce, zerodce_pp
from expocorr.render import linear_to_srgb, srgb_to_linear

NAMES = ["zerodce", "zerodce_pp"]
ODD_SIZES = [(33, 47), (17, 64), (65, 31)]


@pytest.fixture(autouse=True)
def one_thread():
    """The shared 2-core machine runs far faster with one intra-op thread; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(name: str, seed: int = 0, **arch) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build(name, arch)


def dark_astronaut(size: int = 64) -> torch.Tensor:
    """A 1×3×size×size crop of skimage's astronaut, exposed −2 EV in linear light."""
    rgb = data.astronaut()[100:100 + size, 180:180 + size] / 255.0
    dark = linear_to_srgb(srgb_to_linear(rgb) * 2.0**-2)
    return torch.tensor(dark, dtype=torch.float32).permute(2, 0, 1)[None]


def test_registered_and_unpaired():
    for name in NAMES:
        assert MODELS[name].paired is False


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_are_the_papers():
    assert count(make("zerodce")) == zerodce.PAPER_PARAMS == 79_416
    assert count(make("zerodce_pp")) == zerodce_pp.PAPER_PARAMS == 10_561
    assert count(make("zerodce", **zerodce.PAPER_ARCH)) == 79_416
    assert count(make("zerodce_pp", **zerodce_pp.PAPER_ARCH)) == 10_561


def test_state_dict_layout_is_the_official_one():
    """Key names and shapes of the official enhance_net_nopool (Zero-DCE) and its ++ version."""
    dce = {k: tuple(v.shape) for k, v in make("zerodce").state_dict().items()}
    cin = [3, 32, 32, 32, 64, 64, 64]
    cout = [32] * 6 + [24]
    expected = {}
    for i, (ci, co) in enumerate(zip(cin, cout), 1):
        expected[f"e_conv{i}.weight"] = (co, ci, 3, 3)
        expected[f"e_conv{i}.bias"] = (co,)
    assert dce == expected

    pp = {k: tuple(v.shape) for k, v in make("zerodce_pp").state_dict().items()}
    cout[-1] = 3
    expected = {}
    for i, (ci, co) in enumerate(zip(cin, cout), 1):
        expected[f"e_conv{i}.depth_conv.weight"] = (ci, 1, 3, 3)
        expected[f"e_conv{i}.depth_conv.bias"] = (ci,)
        expected[f"e_conv{i}.point_conv.weight"] = (co, ci, 1, 1)
        expected[f"e_conv{i}.point_conv.bias"] = (co,)
    assert pp == expected


@pytest.mark.parametrize("name,arch", [("zerodce", {}), ("zerodce_pp", {}), ("zerodce_pp", {"scale_factor": 4})])
def test_forward_odd_sizes(name, arch):
    model = make(name, **arch)
    torch.manual_seed(1)
    for h, w in ODD_SIZES:
        x = torch.rand(2, 3, h, w)
        with torch.no_grad():
            y = model(x)
        assert y.shape == x.shape
        assert torch.isfinite(y).all()
        assert y.min() >= 0 and y.max() <= 1


def test_zerodce_pp_scale_factor_returns_full_size():
    x = torch.rand(1, 3, 101, 75)
    for s in (2, 12, 7.5):
        model = make("zerodce_pp", scale_factor=s)
        out = model(x)
        assert out.shape == x.shape
        a = model.curves(x)
        assert a.shape == (1, 3, 101, 75)
        assert model.loss({"input": x}, out, 0)["total"].isfinite()
    # Larger than the image: the curve map comes from a 1×1 image, i.e. one global curve.
    a = make("zerodce_pp", scale_factor=200).curves(x)
    assert torch.allclose(a, a[..., :1, :1].expand_as(a))


@pytest.mark.parametrize("name", NAMES)
def test_zero_curve_maps_are_the_identity(name):
    model = make(name)
    last = model.e_conv7 if name == "zerodce" else model.e_conv7.point_conv
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        x = torch.rand(2, 3, 21, 30)
        assert torch.equal(model(x), x)


def test_curve_is_the_official_quadratic():
    x = torch.linspace(0, 1, 11).view(1, 1, 1, 11).expand(1, 3, 1, 11)
    a = torch.full_like(x, -1.0)  # official sign: A = −1 brightens, x -> 2x − x²
    assert torch.allclose(zerodce.apply_curves(x, [a]), 2 * x - x * x)
    a = torch.full_like(x, 1.0)  # A = 1 darkens, x -> x²
    assert torch.allclose(zerodce.apply_curves(x, [a, a]), x**4)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_every_parameter(name):
    model = make(name)
    x = dark_astronaut(32)
    out = model(x)
    terms = model.loss({"input": x}, out, 0)
    assert set(terms) == {"spa", "exp", "col", "tv", "total"}
    terms["total"].backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name):
    x = torch.rand(1, 3, 29, 37, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y1 = make(name, seed=5)(x)
        y2 = make(name, seed=5)(x)
        y3 = make(name, seed=6)(x)
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, y3)


@pytest.mark.parametrize("name", NAMES)
def test_loss_uses_only_the_input_and_recomputes_curves_when_needed(name):
    model = make(name)
    x = dark_astronaut(32)
    out = model(x)
    kept = model.loss({"input": x}, out, 0)  # curve maps kept by forward
    fresh = model.loss({"input": x}, out, 0)  # nothing kept any more: recomputed from the input
    for key in kept:
        assert torch.allclose(kept[key], fresh[key]), key
    assert torch.allclose(kept["total"], kept["spa"] + kept["exp"] + kept["col"] + kept["tv"])


@pytest.mark.parametrize("name", NAMES)
def test_bad_arch_raises_naming_the_argument(name):
    for bad, arg in [({"width": 0}, "width"), ({"iterations": 2.5}, "iterations"), ({"w_tv": -1}, "w_tv"),
                     ({"exposure_level": 1.5}, "exposure_level"), ({"exposure_patch": 0}, "exposure_patch"),
                     ({"tv_weight": 1}, "tv_weight")]:
        with pytest.raises(ValueError, match=arg):
            build(name, bad)
    if name == "zerodce_pp":
        with pytest.raises(ValueError, match="scale_factor"):
            build(name, {"scale_factor": 0.5})
    with pytest.raises(ValueError, match="B×3×H×W"):
        make(name)(torch.rand(1, 1, 8, 8))


# ----------------------------------------------- the losses against a transcription of Myloss.py


def official_losses(org: torch.Tensor, enhanced: torch.Tensor, curves: torch.Tensor) -> dict:
    """Li-Chongyi/Zero-DCE Myloss.py (L_spa, L_exp(16, 0.6), L_color, L_TV) on CPU, unweighted."""
    # L_spa(enhanced, org)
    kernels = {
        "left": [[0, 0, 0], [-1, 1, 0], [0, 0, 0]], "right": [[0, 0, 0], [0, 1, -1], [0, 0, 0]],
        "up": [[0, -1, 0], [0, 1, 0], [0, 0, 0]], "down": [[0, 0, 0], [0, 1, 0], [0, -1, 0]],
    }
    a = F.avg_pool2d(torch.mean(enhanced, 1, keepdim=True), 4)
    b = F.avg_pool2d(torch.mean(org, 1, keepdim=True), 4)
    spa = 0
    for k in kernels.values():
        k = torch.tensor(k, dtype=torch.float32)[None, None]
        spa = spa + torch.pow(F.conv2d(a, k, padding=1) - F.conv2d(b, k, padding=1), 2)
    spa = torch.mean(spa)
    # L_exp
    exp = torch.mean(torch.pow(F.avg_pool2d(torch.mean(enhanced, 1, keepdim=True), 16) - 0.6, 2))
    # L_color
    mr, mg, mb = torch.split(torch.mean(enhanced, [2, 3], keepdim=True), 1, dim=1)
    col = torch.mean(torch.pow(torch.pow(mr - mg, 2) ** 2 + torch.pow(mr - mb, 2) ** 2 + torch.pow(mb - mg, 2) ** 2, 0.5))
    # L_TV
    bs, _, h, w = curves.shape
    h_tv = torch.pow(curves[:, :, 1:, :] - curves[:, :, :h - 1, :], 2).sum()
    w_tv = torch.pow(curves[:, :, :, 1:] - curves[:, :, :, :w - 1], 2).sum()
    tv = 2 * (h_tv / ((h - 1) * w) + w_tv / (h * (w - 1))) / bs
    return {"spa": spa, "exp": exp, "col": col, "tv": tv}


def test_losses_match_the_official_code():
    g = torch.Generator().manual_seed(0)
    org = torch.rand(2, 3, 37, 50, generator=g)
    enhanced = torch.rand(2, 3, 37, 50, generator=g)
    curves = torch.rand(2, 24, 37, 50, generator=g) * 2 - 1
    ours = zerodce.zero_reference_loss(org, enhanced, curves, zerodce.loss_weights())
    ref = official_losses(org, enhanced, curves)
    weights = {"spa": 1, "exp": 10, "col": 5, "tv": 200}
    for key, w in weights.items():
        assert torch.allclose(ours[key], w * ref[key], rtol=1e-5, atol=1e-8), key
    assert torch.allclose(ours["total"], sum(w * ref[k] for k, w in weights.items()), rtol=1e-5)


def test_color_loss_has_finite_gradient_on_a_gray_image():
    gray = torch.full((1, 3, 16, 16), 0.4, requires_grad=True)
    loss = zerodce.color_constancy_loss(gray)
    loss.backward()
    assert loss.item() < 1e-11 and torch.isfinite(gray.grad).all()


def test_losses_vanish_where_they_should():
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert zerodce.spatial_consistency_loss(x, x) == 0
    assert zerodce.exposure_control_loss(torch.full_like(x, 0.6)) < 1e-12
    assert zerodce.illumination_smoothness_loss(torch.full((1, 24, 8, 8), 0.3)) == 0


# ----------------------------------------------- unpaired training brightens a dark photo


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_training_on_a_dark_photo_raises_exposure(name):
    """Zero-reference training on one photo darkened by 2 EV: exposure loss drops, brightness rises."""
    x = dark_astronaut(64)
    model = make(name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(40):
        out = model(x)
        terms = model.loss({"input": x}, out, 0)
        if step == 0:
            exp0, bright0 = terms["exp"].item(), out.mean().item()
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
    with torch.no_grad():
        out = model(x)
    exp1 = zerodce.exposure_control_loss(out).item() * 10
    assert exp1 < 0.25 * exp0, (exp0, exp1)
    assert out.mean().item() > max(bright0, x.mean().item()) + 0.15, (bright0, out.mean().item())
    assert np.isclose(out.mean().item(), 0.6, atol=0.05)  # close to the exposure level E

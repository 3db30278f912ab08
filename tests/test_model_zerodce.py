"""Zero-DCE and Zero-DCE++: official layouts and parameter counts, the contract, the official losses,
the official checkpoints against an independent transcription of the official forward passes, and
unpaired training that brightens a real photo darkened by 2 EV."""

from __future__ import annotations

from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from skimage import data

from expocorr import inference, params
from expocorr.models import MODELS, build, zerodce, zerodce_pp
from expocorr.imaging.colour import linear_to_srgb, srgb_to_linear

NAMES = ["zerodce", "zerodce_pp"]
ODD_SIZES = [(33, 47), (17, 64), (65, 31)]
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = SHARED / "weights"  # official checkpoints (README there): zerodce/Epoch99.pth, zerodce_pp/Epoch99.pth
PHOTO = SHARED / "photos" / "camera_jpegs" / "Canon PowerShot A20.jpg"  # a real 1600×1200 camera JPEG
CPU = torch.device("cpu")


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


def train_cfg(path: Path, name: str) -> dict:
    """`train.NAME` of a params file, validated against its part of the schema."""
    cfg = yaml.safe_load(path.read_text())["train"][name]
    full = params.schema()
    jsonschema.validate(cfg, {"$defs": full["$defs"], **full["properties"]["train"]["properties"][name]})
    return cfg


def arch_of(path: Path, name: str) -> dict:
    return train_cfg(path, name)["arch"]


def test_parameter_counts_are_the_papers():
    assert count(make("zerodce")) == zerodce.PAPER_PARAMS == 79_416
    assert count(make("zerodce_pp")) == zerodce_pp.PAPER_PARAMS == 10_561
    assert count(make("zerodce", **zerodce.PAPER_ARCH)) == 79_416
    assert count(make("zerodce_pp", **zerodce_pp.PAPER_ARCH)) == 10_561
    # params-paper.yaml (the paper) and params.yaml (the CPU default keeps the paper's network).
    for path in (REPO / "params-paper.yaml", REPO / "params.yaml"):
        assert count(make("zerodce", **arch_of(path, "zerodce"))) == 79_416
        assert count(make("zerodce_pp", **arch_of(path, "zerodce_pp"))) == 10_561


def test_paper_params_are_the_official_training_settings():
    """params-paper.yaml against the two official lowlight_train.py / dataloader.py / lowlight_test.py."""
    assert yaml.safe_load((REPO / "params-paper.yaml").read_text())["train"]["common"]["batch_size"] == 8
    for name, epochs, size, w_tv in [("zerodce", 200, 256, 200.0), ("zerodce_pp", 100, 512, 1600.0)]:
        cfg = train_cfg(REPO / "params-paper.yaml", name)
        assert (cfg["lr"], cfg["weight_decay"], cfg["grad_clip"], cfg["epochs"]) == (1e-4, 1e-4, 0.1, epochs)
        assert cfg["schedule"] == {"policy": "none"} and cfg["select"] == "last"
        assert cfg["sampling"] == "resize" and cfg["patch_curriculum"] == [[0, size]]
        a = cfg["arch"]
        assert (a["w_spa"], a["w_exp"], a["w_col"], a["w_tv"]) == (1.0, 10.0, 5.0, w_tv)
        assert (a["exposure_level"], a["exposure_patch"]) == (0.6, 16)
    paper = arch_of(REPO / "params-paper.yaml", "zerodce_pp")
    assert {k: paper[k] for k in zerodce_pp.PAPER_ARCH} == zerodce_pp.PAPER_ARCH
    assert make("zerodce_pp").loss_params["w_tv"] == 1600.0  # the class defaults are the official ones too


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
    for s in (2, 12, 7.5):  # 7.5: the official resampling takes any scale (floor(H/s), floor(h·s))
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
        for bad, arg in [({"scale_factor": 0.5}, "scale_factor"), ({"inference_scale": 0}, "inference_scale"),
                         ({"inference_scale": "big"}, "inference_scale"), ({"align_corners": 1}, "align_corners")]:
            with pytest.raises(ValueError, match=arg):
                build(name, bad)
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


# ----------------------------------------------- the official checkpoints and forward passes


def official_zerodce(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """Li-Chongyi/Zero-DCE, Zero-DCE_code/model.py, enhance_net_nopool.forward, on the checkpoint tensors:
    seven 3×3 convs (conv5-7 fed [x3, x4], [x2, x5], [x1, x6]), ReLU, tanh, eight curves r1 … r8."""

    def conv(i, t):
        return F.conv2d(t, sd[f"e_conv{i}.weight"], sd[f"e_conv{i}.bias"], stride=1, padding=1)

    x1 = F.relu(conv(1, x))
    x2 = F.relu(conv(2, x1))
    x3 = F.relu(conv(3, x2))
    x4 = F.relu(conv(4, x3))
    x5 = F.relu(conv(5, torch.cat([x3, x4], 1)))
    x6 = F.relu(conv(6, torch.cat([x2, x5], 1)))
    x_r = torch.tanh(conv(7, torch.cat([x1, x6], 1)))
    for r in torch.split(x_r, 3, dim=1):
        x = x + r * (torch.pow(x, 2) - x)
    return x


def official_zerodce_pp(sd: dict, x: torch.Tensor, scale: int) -> torch.Tensor:
    """Li-Chongyi/Zero-DCE_extension, Zero-DCE++/model.py, enhance_net_nopool(scale).forward: bilinear
    downscale by 1/scale, CSDN_Tem (depthwise 3×3 + pointwise 1×1) layers, tanh, UpsamplingBilinear2d(scale),
    the one curve map applied eight times. `x` is already cropped to multiples of `scale` (lowlight_test.py)."""

    def conv(i, t):
        p = f"e_conv{i}."
        t = F.conv2d(t, sd[p + "depth_conv.weight"], sd[p + "depth_conv.bias"], 1, 1, groups=t.shape[1])
        return F.conv2d(t, sd[p + "point_conv.weight"], sd[p + "point_conv.bias"], 1, 0)

    x_down = x if scale == 1 else F.interpolate(x, scale_factor=1 / scale, mode="bilinear")
    x1 = F.relu(conv(1, x_down))
    x2 = F.relu(conv(2, x1))
    x3 = F.relu(conv(3, x2))
    x4 = F.relu(conv(4, x3))
    x5 = F.relu(conv(5, torch.cat([x3, x4], 1)))
    x6 = F.relu(conv(6, torch.cat([x2, x5], 1)))
    x_r = torch.tanh(conv(7, torch.cat([x1, x6], 1)))
    if scale != 1:
        x_r = torch.nn.UpsamplingBilinear2d(scale_factor=scale)(x_r)
    for _ in range(8):
        x = x + x_r * (torch.pow(x, 2) - x)
    return x


def official_checkpoint(name: str) -> dict:
    path = WEIGHTS / name / "Epoch99.pth"
    if not path.exists():
        pytest.skip(f"official checkpoint absent: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_official(name: str, tmp_path: Path, arch: dict) -> torch.nn.Module:
    """The official state_dict through the project's own loader (strict load_state_dict, subnormals flushed)."""
    path = tmp_path / f"{name}.pt"
    torch.save({"model": name, "arch": arch, "state_dict": official_checkpoint(name)}, path)
    model, _ = inference.load_model(path)
    return model


@pytest.fixture(scope="module")
def dark_photo() -> np.ndarray:
    """A 900×1200 (H×W) real photo, −2 EV in linear light, float32 in [0, 1] as lowlight_test.py reads it
    (uint8 / 255); skimage's astronaut upscaled when ../shared is absent."""
    if PHOTO.exists():
        rgb = np.asarray(Image.open(PHOTO).convert("RGB"))[150:1050, 200:1400]
    else:
        rgb = cv2.resize(data.astronaut(), (1200, 900), interpolation=cv2.INTER_CUBIC)
    return linear_to_srgb(srgb_to_linear(rgb / 255.0) * 2.0**-2).astype(np.float32)


def as_batch(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].contiguous()


def count_subnormal(sd: dict) -> int:
    return sum(int(inference.subnormal_mask(t).sum()) for t in sd.values())


@pytest.mark.shared_data
@pytest.mark.parametrize("name,params_count,subnormal", [("zerodce", 79_416, 19_266), ("zerodce_pp", 10_561, 685)])
def test_official_checkpoints_load_strictly_with_subnormals_flushed(name, params_count, subnormal, tmp_path):
    sd = official_checkpoint(name)
    assert list(sd) == list(make(name).state_dict())  # the same keys, in the same order
    assert sum(t.numel() for t in sd.values()) == params_count
    assert count_subnormal(sd) == subnormal  # WEIGHTS/README.md: about 19,000 in Zero-DCE's
    torch.set_flush_denormal(True)  # as a previous load_model leaves it: float compares see subnormals as 0
    model = load_official(name, tmp_path, {})
    assert count_subnormal(model.state_dict()) == 0
    changed = sum(int((a.view(torch.int32) != b.view(torch.int32)).sum())  # bits: float == sees subnormals as 0
                  for a, b in zip(model.state_dict().values(), sd.values()))
    assert changed == subnormal  # nothing else touched


@pytest.mark.shared_data
def test_zerodce_official_weights_give_the_official_forward_exactly(dark_photo, tmp_path):
    """Zero-DCE on the real photo (1/3 size: 300×400; DCE-Net at 1200×900 is 10 CPU-seconds): the project's
    model and its inference path equal the official forward bit for bit (its output clamped to [0, 1], as
    torchvision's save_image in lowlight_test.py does)."""
    model = load_official("zerodce", tmp_path, zerodce.PAPER_ARCH)
    rgb = np.ascontiguousarray(dark_photo[::3, ::3])
    x = as_batch(rgb)
    torch.set_flush_denormal(True)  # as load_model leaves it: the raw subnormal weights count as 0
    with torch.no_grad():
        ref = official_zerodce(official_checkpoint("zerodce"), x).clamp(0, 1)
        assert (model(x) - ref).abs().max().item() == 0
    out = inference.run_model(model, rgb, CPU)
    assert np.abs(out - ref[0].permute(1, 2, 0).numpy()).max() == 0
    assert out.mean() > rgb.mean() + 0.1  # it does brighten the dark photo


@pytest.mark.shared_data
def test_zerodce_flushing_subnormals_changes_no_output():
    """Without flush-to-zero arithmetic the raw subnormal weights give the flushed weights' output."""
    sd = official_checkpoint("zerodce")
    model = make("zerodce")
    model.load_state_dict(sd, strict=True)
    inference.flush_denormals(model)
    x = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0))
    torch.set_flush_denormal(False)
    try:
        with torch.no_grad():
            assert torch.equal(official_zerodce(sd, x), official_zerodce(model.state_dict(), x))
    finally:
        torch.set_flush_denormal(True)


@pytest.mark.shared_data
def test_zerodce_pp_official_weights_give_the_official_forward_at_scale_12(dark_photo, tmp_path):
    """Zero-DCE++ at the official test scale 12 on the real 1200×900 photo: the model's forward at
    scale_factor 12 and the full-resolution inference path (`run_model`, inference_scale 12 from
    params-paper.yaml) both give the official forward (≤ 1e-6; 0 measured)."""
    arch = arch_of(REPO / "params-paper.yaml", "zerodce_pp")
    assert arch["inference_scale"] == 12 and arch["align_corners"] is True and arch["scale_factor"] == 1
    model = load_official("zerodce_pp", tmp_path, arch)
    x = as_batch(dark_photo)
    with torch.no_grad():
        ref = official_zerodce_pp(official_checkpoint("zerodce_pp"), x, 12).clamp(0, 1)
        model.scale_factor = 12
        assert (model(x) - ref).abs().max().item() <= 1e-6
        model.scale_factor = 1
    assert inference.strategy_for("zerodce_pp", 900, 1200) == "direct"
    out = inference.run_model(model, dark_photo, CPU)
    assert np.abs(out - ref[0].permute(1, 2, 0).numpy()).max() <= 1e-6
    # The half-pixel upsampling (align_corners: false) is the deviation this test guards against.
    model.align_corners = False
    assert np.abs(inference.run_model(model, dark_photo, CPU) - out).max() > 1e-3


def test_zerodce_pp_any_size_is_the_official_result_on_the_official_crop():
    """lowlight_test.py crops to multiples of the scale; here the whole image goes in, its crop gets exactly
    the official result and the dropped rows/columns (< scale) the curve values of their edge."""
    model = make("zerodce_pp", seed=2).eval()
    sd = model.state_dict()
    x = as_batch(dark_astronaut(120)[0].permute(1, 2, 0).numpy()[:107, :91])  # 107×91 -> crop 96×84
    with torch.no_grad():
        for s in (12, 5):
            hc, wc = (107 // s) * s, (91 // s) * s
            ref = official_zerodce_pp(sd, x[..., :hc, :wc], s)
            model.scale_factor = s
            assert (model(x)[..., :hc, :wc] - ref.clamp(0, 1)).abs().max().item() <= 1e-6
            a = model.curves(x)
            assert torch.equal(a[..., hc:, :], a[..., hc - 1:hc, :].expand(-1, -1, 107 - hc, -1))
            assert torch.equal(a[..., :, wc:], a[..., :, wc - 1:wc].expand(-1, -1, -1, 91 - wc))
            banded = inference.run_zerodce_pp(model, x[0].permute(1, 2, 0).numpy(), CPU, s, band_rows=16)
            assert np.abs(banded - model(x)[0].permute(1, 2, 0).numpy()).max() == 0


def test_zerodce_pp_inference_scale_fixed_or_auto():
    """inference_scale 12 (the paper) runs every image at 1/12, small ones too, as lowlight_test.py; auto
    keeps scale 1 up to 512 px and round(long side / 100) above, at most 12."""
    rgb = dark_astronaut(96)[0].permute(1, 2, 0).numpy()
    paper = make("zerodce_pp", inference_scale=12).eval()
    with torch.no_grad():
        out = inference.run_model(paper, rgb, CPU)
        paper.scale_factor = 12
        assert np.abs(out - paper(as_batch(rgb))[0].permute(1, 2, 0).numpy()).max() == 0
    auto = make("zerodce_pp", inference_scale="auto").eval()
    assert np.array_equal(inference.run_model(auto, rgb, CPU), inference._forward(auto, rgb, CPU))
    assert inference.zerodce_pp_scale(96, 96, 12) == 12 and inference.zerodce_pp_scale(96, 96, "auto") == 1
    assert inference.zerodce_pp_scale(900, 1200, "auto") == 12 and inference.zerodce_pp_scale(600, 800, "auto") == 8


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

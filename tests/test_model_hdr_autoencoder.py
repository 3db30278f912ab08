"""hdr_autoencoder: shapes and range at odd sizes, gradients, VGG16 keys and weight loading,
frozen layers, the report's parameter counts and layers, its loss, determinism, overfitting one batch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
import yaml

import expocorr.models.hdr_autoencoder as hdr
from expocorr.models.registry import build
from expocorr.models.vgg import vgg_features
from expocorr.imaging.colour import encode_curve, decode_curve, expose

# torchvision's vgg16().features state_dict keys, in order.
TORCHVISION_VGG16_FEATURE_KEYS = [
    "0.weight", "0.bias", "2.weight", "2.bias", "5.weight", "5.bias", "7.weight", "7.bias",
    "10.weight", "10.bias", "12.weight", "12.bias", "14.weight", "14.bias", "17.weight", "17.bias",
    "19.weight", "19.bias", "21.weight", "21.bias", "24.weight", "24.bias", "26.weight", "26.bias",
    "28.weight", "28.bias",
]
VGG16_FEATURES_PARAMS = 14_714_688  # torchvision vgg16().features
# Parameters of the decoder layers in the official final models' summary.txt (BayBenj/cs230-proj,
# src/saved_models/model_20190318-225737_*): conv2d_1, then conv2d_transpose_k / conv2d_(k+1) per
# stage, conv2d_7, conv2d_8.
OFFICIAL_DECODER_LAYER_PARAMS = [262_656, 2_359_808, 524_800, 2_359_808, 524_800, 1_179_904, 131_328,
                                 295_040, 32_896, 73_792, 8_256, 195, 21]
REPO = Path(__file__).resolve().parents[1]


def count(model: torch.nn.Module, trainable: bool | None = None) -> int:
    return sum(p.numel() for p in model.parameters() if trainable is None or p.requires_grad == trainable)


def yaml_arch(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())["train"]["hdr_autoencoder"]["arch"]


def photo_pair(ev: float = -1.5, size: int = 64) -> dict:
    """A 64×64 crop of a real photo as target and its re-exposure (linear light, `ev` stops) as input."""
    rgb = skimage.data.astronaut()[80:80 + 2 * size:2, 180:180 + 2 * size:2].astype(np.float32) / 255
    bad = encode_curve(expose(decode_curve(rgb, "srgb", 2.2), ev, 1.0), "srgb", 2.2)
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None]
    return {"input": as_tensor(bad), "target": as_tensor(rgb)}


@pytest.fixture(scope="module")
def model() -> hdr.HDRAutoencoder:
    torch.manual_seed(0)
    return build("hdr_autoencoder", {})


@pytest.mark.parametrize("size", [(33, 47), (5, 7), (65, 31)])
def test_forward_odd_sizes_keep_shape_and_range(model, size):
    torch.manual_seed(1)
    x = torch.rand(2, 3, *size)
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert y.min() >= 0 and y.max() <= 1


def test_gradient_reaches_every_trainable_parameter(model):
    model.train()
    batch = photo_pair(size=32)
    model.zero_grad()
    terms = model.loss(batch, model(batch["input"]), epoch=0)
    assert set(terms) == {"l1", "tv", "l2", "total"}
    terms["total"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_encoder_keys_are_torchvision_vgg16_features(model):
    assert list(model.encoder.state_dict()) == TORCHVISION_VGG16_FEATURE_KEYS
    assert sum(p.numel() for p in model.encoder.parameters()) == VGG16_FEATURES_PARAMS
    # No stray persistent buffers: the whole state_dict is encoder.* plus the decoder's layers.
    assert "mean" not in model.state_dict() and "std" not in model.state_dict()


def test_random_init_warns_and_is_not_pretrained(caplog):
    with caplog.at_level(logging.WARNING, logger="expocorr.models.hdr_autoencoder"):
        m = hdr.HDRAutoencoder()
    assert m.pretrained is False
    assert "randomly initialised" in caplog.text


def test_torchvision_file_loads_into_encoder(tmp_path):
    torch.manual_seed(2)
    source = vgg_features("vgg16")
    state = {f"features.{k}": v for k, v in source.state_dict().items()}
    state |= {"classifier.0.weight": torch.randn(8, 4), "classifier.0.bias": torch.randn(8)}
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    torch.manual_seed(3)
    m = hdr.HDRAutoencoder(vgg_weights=str(path))
    assert m.pretrained is True
    for k, v in source.state_dict().items():
        assert torch.equal(m.encoder.state_dict()[k], v), k


def test_missing_weights_file_and_bad_args_raise_naming_the_arg(tmp_path):
    with pytest.raises(ValueError, match="vgg_weights"):
        hdr.HDRAutoencoder(vgg_weights=str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match="trainable"):
        hdr.HDRAutoencoder(trainable="some")
    with pytest.raises(ValueError, match="trainable"):
        hdr.HDRAutoencoder(trainable=[1])  # a ReLU, not a conv
    with pytest.raises(ValueError, match="width"):
        hdr.HDRAutoencoder(width=0)
    with pytest.raises(ValueError, match="beta"):
        hdr.HDRAutoencoder(beta=0)
    for key in ("slope", "tv_weight", "l2"):
        with pytest.raises(ValueError, match=key):
            hdr.HDRAutoencoder(**{key: -0.1})
    for key in ("batch_norm", "imagenet_norm"):
        with pytest.raises(ValueError, match=key):
            hdr.HDRAutoencoder(**{key: 1})


@pytest.mark.parametrize("trainable, expected", [
    ("skips", {2, 7, 14, 21, 28}),
    ("none", set()),
    ("all", {0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28}),
    ([0, 28], {0, 28}),
])
def test_trainable_freezes_the_right_encoder_layers(trainable, expected):
    m = hdr.HDRAutoencoder(trainable=trainable)
    trained = {int(n.split(".")[1]) for n, p in m.named_parameters() if n.startswith("encoder.") and p.requires_grad}
    assert trained == expected
    # The decoder always learns.
    assert all(p.requires_grad for n, p in m.named_parameters() if not n.startswith("encoder."))


def test_frozen_layers_get_no_gradient():
    m = hdr.HDRAutoencoder(trainable="skips")
    batch = photo_pair(size=32)
    m.loss(batch, m(batch["input"]), 0)["total"].backward()
    assert m.encoder[0].weight.grad is None and m.encoder[26].weight.grad is None
    assert m.encoder[2].weight.grad is not None and m.encoder[28].weight.grad.abs().sum() > 0


def test_same_seed_same_outputs():
    x = torch.rand(1, 3, 33, 47, generator=torch.Generator().manual_seed(4))
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        m = hdr.HDRAutoencoder().eval()
        with torch.no_grad():
            outs.append(m(x))
    assert torch.equal(outs[0], outs[1])


def test_paper_arch_matches_the_reports_parameter_counts():
    """Fig. 2: 22,467,992 parameters, 41.04 % (summary.txt: 9,220,480) non-trainable with the skip layers trained."""
    arch = yaml_arch("params-paper.yaml")
    assert {k: v for k, v in arch.items() if k != "vgg_weights"} == {
        k: v for k, v in hdr.PAPER_ARCH.items() if k != "vgg_weights"}
    m = hdr.HDRAutoencoder(**dict(arch, vgg_weights=None))
    assert count(m) == hdr.PAPER_PARAMS == 22_467_992
    assert count(m, trainable=False) == hdr.PAPER_FROZEN == 9_220_480
    assert round(100 * hdr.PAPER_FROZEN / hdr.PAPER_PARAMS, 2) == 41.04


def test_paper_decoder_is_the_official_layer_list():
    m = hdr.HDRAutoencoder(**hdr.PAPER_ARCH)
    stages = [layer for up, fuse in zip(m.up, m.fuse) for layer in (up[0], fuse[0])]
    convs = [m.latent[0], *stages, m.head[0], m.out[0]]
    assert [count(c) for c in convs] == OFFICIAL_DECODER_LAYER_PARAMS
    assert [c.kernel_size for c in convs] == [(1, 1)] + [(3, 3), (1, 1)] * 5 + [(1, 1), (1, 1)]
    assert all(isinstance(c, hdr.SameDeconv) for c in convs[1:11:2])
    # LeakyReLU 0.4 after every decoder conv but the output's sigmoid; no BN in the final models.
    slopes = [mod.negative_slope for mod in m.modules() if isinstance(mod, torch.nn.LeakyReLU)]
    assert slopes == [0.4] * 12
    assert isinstance(m.out[-1], torch.nn.Sigmoid)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())
    # Glorot-uniform weights, zero biases (Keras defaults).
    for c in convs:
        fan = c.weight[0].numel() * (c.in_channels + c.out_channels) / c.in_channels
        assert c.weight.abs().max() <= (6 / fan) ** 0.5 and not c.bias.any()


def test_batch_norm_follows_every_decoder_conv():
    m = hdr.HDRAutoencoder(batch_norm=True)
    for part in [m.latent, *m.up, *m.fuse, m.head, m.out]:
        assert isinstance(part[1], torch.nn.BatchNorm2d) and part[1].eps == 1e-3


def test_cpu_default_builds_and_counts():
    m = build("hdr_autoencoder", yaml_arch("params.yaml"))
    assert count(m) == 14_931_680 and count(m, trainable=False) == 0


def test_deconv_has_keras_same_alignment():
    """A 'same' stride-2 transposed conv is the adjoint of TensorFlow's 'same' stride-2 conv, which pads
    an even-sized input by one row and column at the bottom and right only."""
    torch.manual_seed(6)
    deconv = hdr.SameDeconv(2, 3)
    torch.nn.init.zeros_(deconv.bias)
    y, x = torch.randn(1, 2, 5, 7), torch.randn(1, 3, 10, 14)
    tf_conv = F.conv2d(F.pad(x, (0, 1, 0, 1)), deconv.weight, stride=2)
    assert deconv(y).shape == x.shape
    assert torch.allclose((deconv(y) * x).sum(), (tf_conv * y).sum(), atol=1e-4)


@pytest.mark.parametrize("imagenet_norm", [False, True])
def test_encoder_sees_the_raw_image_unless_imagenet_norm(imagenet_norm):
    m = hdr.HDRAutoencoder(imagenet_norm=imagenet_norm).eval()
    seen = []
    m.encoder[0].register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        m(x)
    expected = (x - m.mean) / m.std if imagenet_norm else x
    assert torch.allclose(seen[0], expected)


def test_tv_is_the_reports_power_of_the_gradient_norm():
    """TV = mean ((Δx)² + (Δy)²)^(β/2): on a ramp with slopes a, b it is (a² + b²)^(β/2)."""
    i, j = torch.meshgrid(torch.arange(9.0), torch.arange(11.0), indexing="ij")
    ramp = (0.03 * j + 0.04 * i).expand(2, 3, 9, 11)
    for beta in (2.5, 1.0, 2.0):
        assert hdr.total_variation(ramp, beta).item() == pytest.approx(0.05 ** beta, rel=1e-4)
    # Flat image: zero, and a finite (zero) gradient also for beta < 2.
    flat = torch.full((1, 3, 8, 8), 0.5, requires_grad=True)
    hdr.total_variation(flat, 1.0).backward()
    assert torch.isfinite(flat.grad).all() and not flat.grad.any()


def test_loss_is_l1_plus_weighted_tv_of_output_plus_l2():
    m = hdr.HDRAutoencoder(tv_weight=0.5, l2=1e-3)
    batch = photo_pair(size=32)
    out = m(batch["input"])
    terms = m.loss(batch, out, 0)
    assert terms["l1"].item() == pytest.approx(F.l1_loss(out, batch["target"]).item())
    assert terms["tv"].item() == pytest.approx(hdr.total_variation(out, 2.5).item())
    # The TV term is the output's: the target does not change it.
    assert m.loss({"target": batch["input"]}, out, 0)["tv"].item() == pytest.approx(terms["tv"].item())
    convs = m.decoder_convs(output=False)
    assert len(convs) == 12 and m.out[0] not in convs
    assert terms["l2"].item() == pytest.approx(sum((c.weight ** 2).sum() + (c.bias ** 2).sum() for c in convs).item())
    total = terms["l1"] + 0.5 * terms["tv"] + 1e-3 * terms["l2"]
    assert terms["total"].item() == pytest.approx(total.item())


@pytest.mark.slow
def test_overfits_one_batch():
    torch.manual_seed(0)
    m = hdr.HDRAutoencoder().train()
    batch = photo_pair()
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    first = None
    for step in range(150):
        terms = m.loss(batch, m(batch["input"]), step)
        first = terms["l1"].item() if first is None else first
        if terms["l1"].item() <= 0.5 * first:
            break
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
    assert terms["l1"].item() <= 0.5 * first, (first, terms["l1"].item(), step)

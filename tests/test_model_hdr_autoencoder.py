"""hdr_autoencoder: shapes and range at odd sizes, gradients, VGG16 keys and weight loading,
frozen layers, determinism, overfitting one batch."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import skimage.data
import torch

import expocorr.models.hdr_autoencoder as hdr
from expocorr.models.registry import build
from expocorr.models.vgg import vgg_features
from expocorr.render import encode_curve, decode_curve, expose

# torchvision's vgg16().features state_dict keys, in order.
TORCHVISION_VGG16_FEATURE_KEYS = [
    "0.weight", "0.bias", "2.weight", "2.bias", "5.weight", "5.bias", "7.weight", "7.bias",
    "10.weight", "10.bias", "12.weight", "12.bias", "14.weight", "14.bias", "17.weight", "17.bias",
    "19.weight", "19.bias", "21.weight", "21.bias", "24.weight", "24.bias", "26.weight", "26.bias",
    "28.weight", "28.bias",
]
VGG16_FEATURES_PARAMS = 14_714_688  # torchvision vgg16().features


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
    assert set(terms) == {"l1", "tv", "total"}
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
        hdr.HDRAutoencoder(beta=-1)


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


def test_paper_arch_builds_paper_decoder_widths():
    m = hdr.HDRAutoencoder(**hdr.PAPER_ARCH)
    assert [blk[0].out_channels for blk in m.up] == [512, 512, 256, 128, 64]
    assert m.bottleneck[0].out_channels == 512


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

"""exposure_gan: shapes and range at odd sizes, gradients, pix2pix parameter counts, PatchGAN
receptive fields, G/D steps, noise injection, perceptual term, determinism, overfitting one batch."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import skimage.data
import torch
from torch import nn

import expocorr.models.exposure_gan as gan
from expocorr.models.registry import build
from expocorr.models.vgg import vgg_features
from expocorr.render import decode_curve, encode_curve, expose

# Printed by the pix2pix code (pytorch-CycleGAN-and-pix2pix) as 54.414 M and 2.769 M: unet_256
# generator and the basic (n_layers=3, 70×70) PatchGAN on 6 channels, both with BatchNorm.
PIX2PIX_UNET256_PARAMS = 54_413_955
PIX2PIX_PATCHGAN70_PARAMS = 2_768_705
PIX2PIX_PATCHGAN_NLAYERS4_PARAMS = 6_964_033  # fov 140


def photo_pair(ev: float = -1.5, size: int = 64) -> dict:
    """A crop of a real photo as target and its re-exposure (linear light, `ev` stops) as input."""
    rgb = skimage.data.astronaut()[80:80 + 2 * size:2, 180:180 + 2 * size:2].astype(np.float32) / 255
    bad = encode_curve(expose(decode_curve(rgb, "srgb", 2.2), ev, 1.0), "srgb", 2.2)
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None]
    return {"input": as_tensor(bad), "target": as_tensor(rgb)}


def g_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if not n.startswith("discriminator.")}


def d_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if n.startswith("discriminator.")}


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory):
    """A torchvision-format VGG19 checkpoint ('features.*' plus a classifier key), random weights."""
    torch.manual_seed(10)
    state = {f"features.{k}": v for k, v in vgg_features("vgg19").state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(10)
    path = tmp_path_factory.mktemp("weights") / "vgg19.pth"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("size", [(33, 47), (5, 7), (65, 31)])
def test_forward_odd_sizes_keep_shape_and_range(size):
    torch.manual_seed(0)
    model = build("exposure_gan", {})
    x = torch.rand(2, 3, *size)
    for mode in (model.train, model.eval):
        mode()
        with torch.no_grad():
            y = model(x)
        assert y.shape == x.shape
        assert torch.isfinite(y).all()
        assert y.min() >= 0 and y.max() <= 1


def test_generator_loss_reaches_every_g_parameter_and_no_d_parameter():
    torch.manual_seed(0)
    model = gan.ExposureGAN().train()
    batch = photo_pair(size=32)
    terms = model.loss(batch, model(batch["input"]), epoch=0)
    assert set(terms) == {"l1", "adv", "total"}
    terms["total"].backward()
    for name, p in g_params(model).items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in d_params(model).values())
    assert all(p.requires_grad for p in d_params(model).values())  # restored after the G loss


def test_discriminator_loss_reaches_every_d_parameter():
    torch.manual_seed(0)
    model = gan.ExposureGAN(d_spectral_norm=False).train()  # BN variant: every parameter kind
    batch = photo_pair(size=32)
    out = model(batch["input"])
    d = model.d_loss(batch, out.detach(), epoch=0)
    assert set(d) == {"real", "fake", "total"}
    d["total"].backward()
    for name, p in d_params(model).items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in g_params(model).values())


def test_paper_scale_parameter_counts_match_pix2pix():
    arch = dict(gan.PAPER_ARCH, spectral_norm=False, noise_encoder=False, noise_decoder=False,
                d_spectral_norm=False)
    with torch.device("meta"):
        m70 = gan.ExposureGAN(**arch)
        m140 = gan.ExposureGAN(**dict(arch, fov=140))
    assert sum(p.numel() for p in m70.generator.parameters()) == PIX2PIX_UNET256_PARAMS
    assert sum(p.numel() for p in m70.discriminator.parameters()) == PIX2PIX_PATCHGAN70_PARAMS
    assert sum(p.numel() for p in m140.discriminator.parameters()) == PIX2PIX_PATCHGAN_NLAYERS4_PARAMS
    # Spectral norm adds buffers, not parameters; noise injection adds one scale per channel.
    with torch.device("meta"):
        full = gan.ExposureGAN(**gan.PAPER_ARCH)
    noise = sum(p.numel() for n, p in full.named_parameters() if n.endswith(".scale"))
    assert noise == (64 + 128 + 256 + 5 * 512) + (4 * 512 + 256 + 128 + 64)  # 8 encoder + 7 decoder blocks
    assert sum(p.numel() for p in full.generator.parameters()) == PIX2PIX_UNET256_PARAMS + noise


def receptive_field(net: nn.Sequential) -> int:
    """Receptive field of the conv stack: r <- r + (k - 1) · jump, jump <- jump · stride."""
    r, jump = 1, 1
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            r += (m.kernel_size[0] - 1) * jump
            jump *= m.stride[0]
    return r


@pytest.mark.parametrize("fov, exact", [(70, 70), (140, 142)])
def test_patchgan_receptive_field(fov, exact):
    torch.manual_seed(0)
    d = gan.PatchDiscriminator(width=4, fov=fov, snorm=True).eval()
    assert receptive_field(d.net) == exact
    # Empirically: the input pixels that a central output score depends on span exactly `exact`.
    x = torch.randn(1, 3, 256, 256, requires_grad=True)
    scores = d(x, torch.zeros(1, 3, 256, 256))
    scores[0, 0, scores.shape[2] // 2, scores.shape[3] // 2].backward()
    rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3)))
    cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 2)))
    assert 0 < rows.min() and rows.max() < 255  # the field lies inside the image
    assert rows.max() - rows.min() + 1 == exact and cols.max() - cols.min() + 1 == exact


def test_one_d_step_changes_d_only_and_one_g_step_changes_g_only():
    torch.manual_seed(0)
    model = gan.ExposureGAN().train()
    opt_g = torch.optim.Adam(list(g_params(model).values()), lr=1e-3)
    opt_d = torch.optim.Adam(list(d_params(model).values()), lr=1e-3)
    batch = photo_pair(size=32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    out = model(batch["input"])
    opt_g.zero_grad()
    model.loss(batch, out, 0)["total"].backward()
    opt_g.step()
    after_g = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert all(not torch.equal(before[n], after_g[n]) for n in g_params(model))
    assert all(torch.equal(before[n], after_g[n]) for n in d_params(model))

    opt_d.zero_grad()
    model.d_loss(batch, out.detach(), 0)["total"].backward()
    opt_d.step()
    assert all(not torch.equal(after_g[n], p) for n, p in d_params(model).items())
    assert all(torch.equal(after_g[n], p) for n, p in g_params(model).items())


def test_noise_on_in_training_off_in_eval():
    torch.manual_seed(0)
    x = photo_pair(size=32)["input"]
    noisy = gan.ExposureGAN(dropout=0.0, spectral_norm=False)
    for name, p in noisy.named_parameters():
        if name.endswith(".scale"):
            nn.init.constant_(p, 0.5)  # learned scales start at 0: make the noise visible
    clean = gan.ExposureGAN(dropout=0.0, spectral_norm=False, noise_encoder=False, noise_decoder=False)
    with torch.no_grad():
        noisy.eval()
        assert torch.equal(noisy(x), noisy(x))
        noisy.train()
        assert not torch.allclose(noisy(x), noisy(x))
        clean.train()
        assert torch.equal(clean(x), clean(x))  # so the difference above is the noise


def test_without_vgg_weights_the_perceptual_term_is_off(caplog):
    with caplog.at_level(logging.WARNING, logger="expocorr.models.exposure_gan"):
        model = gan.ExposureGAN()
    assert model.perceptual is False
    assert "perceptual term is OFF" in caplog.text
    batch = photo_pair(size=32)
    assert "perceptual" not in model.loss(batch, model(batch["input"]), 0)


def test_with_vgg19_weights_the_perceptual_term_is_on(vgg19_file, caplog):
    with caplog.at_level(logging.WARNING, logger="expocorr.models.exposure_gan"):
        model = gan.ExposureGAN(vgg_weights=str(vgg19_file))
    assert model.perceptual is True and "OFF" not in caplog.text
    # The VGG19 is frozen and not part of the model's parameters or state_dict.
    assert not any("vgg" in n for n in model.state_dict())
    assert all(not p.requires_grad for p in model._vgg[0].parameters())
    expected = torch.load(vgg19_file, weights_only=True)["features.28.weight"]
    assert torch.equal(model._vgg[0][28].weight, expected)
    batch = photo_pair(size=32)
    out = model(batch["input"])
    terms = model.loss(batch, out, 0)
    assert terms["perceptual"] > 0
    l1_adv = model.lambda_l1 * terms["l1"] + model.lambda_adv * terms["adv"]
    assert torch.isclose(terms["total"], l1_adv + model.lambda_perceptual * terms["perceptual"])
    terms["total"].backward()
    assert all(p.grad is None for p in model._vgg[0].parameters())


def test_adversarial_term_waits_for_adv_start_epoch():
    model = gan.ExposureGAN(adv_start_epoch=2)
    batch = photo_pair(size=32)
    out = model(batch["input"])
    assert "adv" not in model.loss(batch, out, 1) and model.d_loss(batch, out.detach(), 1) is None
    assert "adv" in model.loss(batch, out, 2) and model.d_loss(batch, out.detach(), 2) is not None


def test_bad_args_raise_naming_the_arg(tmp_path):
    for kwargs, arg in [({"depth": 1}, "depth"), ({"width": 0}, "width"), ({"fov": 100}, "fov"),
                        ({"dropout": 1.0}, "dropout"), ({"spectral_norm": "yes"}, "spectral_norm"),
                        ({"lambda_l1": -1}, "lambda_l1"), ({"adv_start_epoch": -1}, "adv_start_epoch"),
                        ({"vgg_weights": str(tmp_path / "absent.pth")}, "vgg_weights")]:
        with pytest.raises(ValueError, match=arg):
            gan.ExposureGAN(**kwargs)


def test_same_seed_same_outputs():
    x = torch.rand(1, 3, 33, 47, generator=torch.Generator().manual_seed(4))
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        m = gan.ExposureGAN()
        with torch.no_grad():
            outs.append((m.train()(x), m.eval()(x)))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


@pytest.mark.slow
def test_overfits_one_batch_with_the_full_gan_objective():
    """The trainer's loop (G step on loss(), then D step on d_loss()): the L1 term halves."""
    torch.manual_seed(0)
    model = gan.ExposureGAN().train()
    opt_g = torch.optim.Adam(list(g_params(model).values()), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(list(d_params(model).values()), lr=2e-4, betas=(0.5, 0.999))
    batch = photo_pair()
    first = None
    for step in range(150):
        out = model(batch["input"])
        terms = model.loss(batch, out, step)
        first = terms["l1"].item() if first is None else first
        if terms["l1"].item() <= 0.5 * first:
            break
        opt_g.zero_grad()
        terms["total"].backward()
        opt_g.step()
        opt_d.zero_grad()
        model.d_loss(batch, out.detach(), step)["total"].backward()
        opt_d.step()
    assert terms["l1"].item() <= 0.5 * first, (first, terms["l1"].item(), step)

"""exposure_gan: shapes and range at odd sizes, gradients, parameter counts (the report's generator,
pix2pix's U-Net and PatchGANs), receptive fields of G and D, the report's LSGAN and perceptual terms,
G/D steps, noise injection, determinism, overfitting one batch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import yaml
import torch.nn.functional as F
from torch import nn

import expocorr.models.exposure_gan as gan
from expocorr.models.registry import build
from expocorr.models.vgg import vgg_features
from expocorr.imaging.colour import decode_curve, encode_curve, expose

# Printed by the pix2pix code (pytorch-CycleGAN-and-pix2pix) as 54.414 M and 2.769 M: unet_256
# generator and the basic (n_layers=3, 70×70) PatchGAN on 6 channels, both with BatchNorm.
PIX2PIX_UNET256_PARAMS = 54_413_955
PIX2PIX_PATCHGAN70_PARAMS = 2_768_705
PIX2PIX_PATCHGAN_NLAYERS4_PARAMS = 6_964_033  # fov 140
# The report's generator at paper settings (PAPER_ARCH: width 64, 3×3 convs, field of view 140), noise
# scales included (4,800 of them); see test_paper_scale_parameter_counts_of_the_seed_generator.
SEED_G_PAPER_PARAMS = 15_834_947
SEED_G_NOISE_PARAMS = 4_800
GENERATORS = ("seed", "unet")


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


@pytest.mark.parametrize("generator", GENERATORS)
@pytest.mark.parametrize("size", [(33, 47), (5, 7), (65, 31)])
def test_forward_odd_sizes_keep_shape_and_range(size, generator):
    torch.manual_seed(0)
    model = build("exposure_gan", {"generator": generator, "width": 4, "noise_eval": True})
    x = torch.rand(2, 3, *size)
    for mode in (model.train, model.eval):
        mode()
        with torch.no_grad():
            y = model(x)
        assert y.shape == x.shape
        assert torch.isfinite(y).all()
        assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("generator", GENERATORS)
def test_generator_loss_reaches_every_g_parameter_and_no_d_parameter(generator):
    torch.manual_seed(0)
    model = gan.ExposureGAN(generator=generator).train()
    batch = photo_pair(size=32)
    terms = model.loss(batch, model(batch["input"]), epoch=0)
    assert set(terms) == {"l1", "adv", "total"}
    terms["total"].backward()
    for name, p in g_params(model).items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in d_params(model).values())
    assert all(p.requires_grad for p in d_params(model).values())  # restored after the G loss


@pytest.mark.parametrize("d_arch", [{"d_spectral_norm": False}, {"d_batch_norm": True, "fov": 94}])
def test_discriminator_loss_reaches_every_d_parameter(d_arch):
    torch.manual_seed(0)
    model = gan.ExposureGAN(**d_arch).train()  # BN variants: every parameter kind
    batch = photo_pair(size=32)
    out = model(batch["input"])
    d = model.d_loss(batch, out.detach(), epoch=0)
    assert set(d) == {"real", "fake", "total"}
    d["total"].backward()
    for name, p in d_params(model).items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in g_params(model).values())


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_scale_parameter_counts_match_pix2pix():
    """The `unet` option at depth 8 is pix2pix's unet_256; the PatchGANs (with BN) are pix2pix's."""
    arch = dict(gan.PAPER_ARCH, generator="unet", spectral_norm=False, noise_encoder=False, noise_decoder=False,
                d_spectral_norm=False)
    with torch.device("meta"):
        m70 = gan.ExposureGAN(**arch)
        m140 = gan.ExposureGAN(**dict(arch, fov=140))
    assert count(m70.generator) == PIX2PIX_UNET256_PARAMS
    assert count(m70.discriminator) == PIX2PIX_PATCHGAN70_PARAMS
    assert count(m140.discriminator) == PIX2PIX_PATCHGAN_NLAYERS4_PARAMS
    # Spectral norm adds buffers, not parameters; noise injection adds one scale per channel.
    with torch.device("meta"):
        full = gan.ExposureGAN(**dict(gan.PAPER_ARCH, generator="unet"))
    noise = sum(p.numel() for n, p in full.named_parameters() if n.endswith(".scale"))
    assert noise == (64 + 128 + 256 + 5 * 512) + (4 * 512 + 256 + 128 + 64)  # 8 encoder + 7 decoder blocks
    assert count(full.generator) == PIX2PIX_UNET256_PARAMS + noise


def test_paper_scale_parameter_counts_of_the_seed_generator():
    """PAPER_ARCH (params-paper.yaml): the report's generator and pix2pix's 70×70 PatchGAN, with BN and
    spectral norm (which adds no parameters)."""
    with torch.device("meta"):
        model = gan.ExposureGAN(**gan.PAPER_ARCH)
    ch = [64, 128, 256, 512]
    expected = 0
    for level, c in enumerate(ch):
        cin = 3 if level == 0 else ch[level - 1]
        expected += (cin * c + c * c) * 9 + 2 * c * (1 if level == 0 else 2)  # encoder: 2 convs, BN but first
        expected += ch[min(level + 1, 3)] * c * 4 + 2 * c  # transposed 2×2 conv + BN
        expected += (2 * c * c + c * c) * 9 + 2 * 2 * c  # decoder: 2 convs + BN
        expected += 5 * c  # noise scales: after 2 + 1 + 2 convs
    expected += ch[0] * 3 + 3  # output conv 1×1 with bias
    assert count(model.generator) == expected == SEED_G_PAPER_PARAMS
    assert sum(p.numel() for n, p in model.named_parameters() if n.endswith(".scale")) == SEED_G_NOISE_PARAMS
    assert count(model.discriminator) == PIX2PIX_PATCHGAN70_PARAMS
    with torch.device("meta"):
        d94 = gan.ExposureGAN(**dict(gan.PAPER_ARCH, fov=94)).discriminator
    assert count(d94) == PIX2PIX_PATCHGAN70_PARAMS + 512 * 512 * 16 + 2 * 512  # one more C512 conv + BN


def test_params_paper_yaml_is_the_paper_arch():
    """The counts above are those of params-paper.yaml's exposure_gan (VGG weights aside)."""
    paper = yaml.safe_load((Path(__file__).resolve().parents[1] / "params-paper.yaml").read_text())
    assert dict(paper["train"]["exposure_gan"]["arch"], vgg_weights=None) == gan.PAPER_ARCH


def receptive_field(net: nn.Sequential) -> int:
    """Receptive field of the conv stack: r <- r + (k - 1) · jump, jump <- jump · stride."""
    r, jump = 1, 1
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            r += (m.kernel_size[0] - 1) * jump
            jump *= m.stride[0]
    return r


@pytest.mark.parametrize("fov, exact", [(70, 70), (94, 94), (140, 142)])
def test_patchgan_receptive_field(fov, exact):
    torch.manual_seed(0)
    d = gan.PatchDiscriminator(width=4, fov=fov, snorm=True, batch_norm=False).eval()
    assert receptive_field(d.net) == exact
    # Empirically: the input pixels that a central output score depends on span exactly `exact`.
    x = torch.randn(1, 3, 256, 256, requires_grad=True)
    scores = d(x, torch.zeros(1, 3, 256, 256))
    scores[0, 0, scores.shape[2] // 2, scores.shape[3] // 2].backward()
    rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3)))
    cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 2)))
    assert 0 < rows.min() and rows.max() < 255  # the field lies inside the image
    assert rows.max() - rows.min() + 1 == exact and cols.max() - cols.min() + 1 == exact


def linearised(net: nn.Module) -> nn.Module:
    """`net` with every ReLU / LeakyReLU replaced by the identity (no dead paths hide part of the field)."""
    for m in net.modules():
        for name, child in m.named_children():
            if isinstance(child, (nn.ReLU, nn.LeakyReLU)):
                setattr(m, name, nn.Identity())
    return net


@pytest.mark.parametrize("g_fov, exact", [(47, 48), (70, 72), (140, 140)])
def test_seed_generator_receptive_field(g_fov, exact, monkeypatch):
    """The input rows one output pixel depends on span at most `exact`, over the 16 row positions modulo
    the pooling; on average 16 + 4 · Σ (k_l − 1) · 2**l (the pools add 1 + 2 + 4 + 8)."""
    kernels = gan.G_FOV_KERNELS[g_fov]
    torch.manual_seed(0)
    g = linearised(gan.SeedGenerator(2, g_fov, 0.0, False, False, snorm=True, eval_noise=False)).eval()
    # Average pooling: max pooling passes the gradient to one pixel per window, hiding the rest of the field.
    monkeypatch.setattr(gan.F, "max_pool2d", F.avg_pool2d)
    spans = []
    for y0 in range(128, 144):
        x = torch.randn(1, 3, 256, 16, requires_grad=True)
        g(x)[0, 0, y0, 8].backward()
        rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3)))
        assert 0 < rows.min() and rows.max() < 255
        spans.append(int(rows.max() - rows.min() + 1))
    assert max(spans) == exact
    assert sum(spans) / len(spans) == 16 + 4 * sum((k - 1) * 2**level for level, k in enumerate(kernels))


def test_seed_generator_layout():
    """Report §3.1: 4 blocks of two stride-1 convs + pooling; transposed convs up; BN but first and last."""
    g = gan.SeedGenerator(8, 140, 0.0, True, True, snorm=False, eval_noise=False)
    convs = [m for m in g.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 + 8 + 1 and all(m.stride == (1, 1) for m in convs)
    ups = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(ups) == 4 and all(m.kernel_size == (2, 2) and m.stride == (2, 2) for m in ups)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g.modules()) == 8 + 8 + 4 - 1
    assert sum(isinstance(m, gan.NoiseInjection) for m in g.modules()) == 8 + 4 + 8
    assert [c.out_channels for c in convs[:8:2]] == [8, 16, 32, 64]


def test_lsgan_terms_follow_the_report():
    """Eq. 7: D = ½·E[D(x, y)²] + ½·E[(1 − D(x, G(x)))²]; eq. 8: G's term ½·E[D(x, G(x))²]."""
    torch.manual_seed(0)
    model = gan.ExposureGAN().eval()  # eval: spectral norm's power iteration does not move between calls
    batch = photo_pair(size=32)
    out = model(batch["input"])
    terms = model.loss(batch, out, 0)
    with torch.no_grad():
        fake = model._score(batch["input"], out)
    assert torch.allclose(terms["adv"], 0.5 * fake.pow(2).mean())
    assert torch.allclose(terms["total"], model.lambda_l1 * terms["l1"] + terms["adv"])
    d = model.d_loss(batch, out.detach(), 0)
    with torch.no_grad():
        real, fake = model._score(batch["input"], batch["target"]), model._score(batch["input"], out)
    assert torch.allclose(d["real"], real.pow(2).mean()) and torch.allclose(d["fake"], (1 - fake).pow(2).mean())
    assert torch.allclose(d["total"], 0.5 * (d["real"] + d["fake"]))


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


@pytest.mark.parametrize("generator", GENERATORS)
def test_noise_eval_is_fixed_per_layer_and_independent_of_the_batch(generator):
    """noise_eval: in eval mode each layer adds one seeded map, the same on every call and for every
    image of a batch (an image's output does not depend on its batch neighbours)."""
    torch.manual_seed(0)
    model = gan.ExposureGAN(generator=generator, noise_eval=True, spectral_norm=False)
    for name, p in model.named_parameters():
        if name.endswith(".scale"):
            nn.init.constant_(p, 0.5)
    plain = gan.ExposureGAN(generator=generator, noise_eval=False, spectral_norm=False)
    plain.load_state_dict(model.state_dict())
    seeds = [m.seed for m in model.modules() if isinstance(m, gan.NoiseInjection)]
    assert seeds == list(range(gan.EVAL_NOISE_SEED, gan.EVAL_NOISE_SEED + len(seeds)))
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model.eval(), plain.eval()
    with torch.no_grad():
        y = model(x)
        assert torch.equal(y, model(x))
        assert torch.allclose(y[1:2], model(x[1:2]), atol=1e-6)
        assert not torch.allclose(y, plain(x), atol=1e-3)


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
    expected = torch.load(vgg19_file, weights_only=True)["features.34.weight"]
    assert torch.equal(model._vgg[0][34].weight, expected)
    assert len(model._vgg[0]) == 36  # up to relu5_4, the deepest of the five layers
    batch = photo_pair(size=32)
    out = model(batch["input"])
    terms = model.loss(batch, out, 0)
    assert terms["perceptual"] > 0
    l1_adv = model.lambda_l1 * terms["l1"] + model.lambda_adv * terms["adv"]
    assert torch.isclose(terms["total"], l1_adv + model.lambda_perceptual * terms["perceptual"])
    terms["total"].backward()
    assert all(p.grad is None for p in model._vgg[0].parameters())


def test_perceptual_term_is_the_reports_eq5(vgg19_file):
    """Eq. 5 over 5 regularly spaced of VGG19's 16 convs: Σ_i ‖φ_i(y) − φ_i(G(x))‖₁ / (W_i·H_i), averaged
    over the batch."""
    assert gan.PERCEPTUAL_CONVS == tuple(round(i * 15 / 4) for i in range(5))
    model = gan.ExposureGAN(vgg_weights=str(vgg19_file))
    vgg = model._vgg[0]
    assert model.vgg_layers == [1, 11, 20, 26, 35]  # relu1_1, relu3_1, relu4_1, relu4_4, relu5_4
    assert all(isinstance(vgg[i], nn.ReLU) and isinstance(vgg[i - 1], nn.Conv2d) for i in model.vgg_layers)
    torch.manual_seed(0)
    out, target = torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48)
    expected = 0.0
    norm = lambda t: (t - model.mean) / model.std
    a, b = norm(out), norm(target)
    with torch.no_grad():
        for i, layer in enumerate(vgg):
            a, b = layer(a), layer(b)
            if i in model.vgg_layers:
                n, _, h, w = a.shape
                expected += float((a - b).abs().sum()) / (n * h * w)
        assert model.perceptual_loss(out, target).item() == pytest.approx(expected, rel=1e-5)


def test_adversarial_term_waits_for_adv_start_epoch():
    model = gan.ExposureGAN(adv_start_epoch=2)
    batch = photo_pair(size=32)
    out = model(batch["input"])
    assert "adv" not in model.loss(batch, out, 1) and model.d_loss(batch, out.detach(), 1) is None
    assert "adv" in model.loss(batch, out, 2) and model.d_loss(batch, out.detach(), 2) is not None


def test_bad_args_raise_naming_the_arg(tmp_path):
    for kwargs, arg in [({"depth": 1}, "depth"), ({"width": 0}, "width"), ({"fov": 100}, "fov"),
                        ({"generator": "resnet"}, "generator"), ({"g_fov": 94}, "g_fov"),
                        ({"noise_eval": 1}, "noise_eval"), ({"d_batch_norm": "yes"}, "d_batch_norm"),
                        ({"dropout": 1.0}, "dropout"), ({"spectral_norm": "yes"}, "spectral_norm"),
                        ({"lambda_l1": -1}, "lambda_l1"), ({"adv_start_epoch": -1}, "adv_start_epoch"),
                        ({"vgg_weights": str(tmp_path / "absent.pth")}, "vgg_weights")]:
        with pytest.raises(ValueError, match=arg):
            gan.ExposureGAN(**kwargs)


@pytest.mark.parametrize("generator", GENERATORS)
def test_same_seed_same_outputs(generator):
    x = torch.rand(1, 3, 33, 47, generator=torch.Generator().manual_seed(4))
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        m = gan.ExposureGAN(generator=generator, noise_eval=True)
        with torch.no_grad():
            outs.append((m.train()(x), m.eval()(x)))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


@pytest.mark.slow
@pytest.mark.parametrize("generator", GENERATORS)
def test_overfits_one_batch_with_the_full_gan_objective(generator):
    """The trainer's loop (G step on loss(), then D step on d_loss()): the L1 term halves."""
    torch.manual_seed(0)
    model = gan.ExposureGAN(generator=generator, width=8 if generator == "seed" else 16).train()
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

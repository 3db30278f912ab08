"""MSEC: Laplacian pyramid, the model contract, parameter counts, the three loss terms, GAN steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data as skdata

from expocorr import render
from expocorr.models import MODELS, build, msec


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


def test_pyramid_bands_of_a_constant_image_are_zero():
    """The filters are normalised and the borders handled: a flat image has no detail anywhere."""
    x = torch.full((1, 3, 37, 50), 0.3)
    pyramid = msec.laplacian_pyramid(x, 4)
    assert all(band.abs().max() < 1e-6 for band in pyramid[:-1])
    assert torch.allclose(pyramid[-1], torch.full_like(pyramid[-1], 0.3))


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
        ({"adv_start_epoch": 1.5}, "adv_start_epoch"),
    ],
)
def test_invalid_arguments_name_the_argument(arch, arg):
    with pytest.raises(ValueError, match=arg):
        msec.MSEC(**arch)


# --- loss -------------------------------------------------------------------------------------


def test_loss_terms_and_adversarial_switch():
    model = make({"adv_start_epoch": 3}).train()
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
    model = make({"adv_start_epoch": 0}).train()
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
    model = make({"adv_start_epoch": 1}).train()
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
def test_overfits_one_batch():
    batch = photo_pair()
    model = make().train()
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

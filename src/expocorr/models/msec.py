"""MSEC: multi-scale photo exposure correction (Afifi, Derpanis, Ommer, Brown, CVPR 2021).

The input is split into an n-level Laplacian pyramid; level 1 is the finest detail band and level n
the coarse Gaussian residual. The pyramid is the authors' (``src/laplacian_pyramid_.m``): Burt and
Adelson's 5-tap filter [.05 .25 .4 .25 .05] (``pyramid_filter_.m``), whose 2-D 5×5 form
``downsample_.m`` and ``upsample_.m`` apply twice (their "horizontal" and "vertical" passes), with
MATLAB's 'symmetric' border going down and zeros going up (their 1-px replicate pad before
expanding is narrower than the twice-applied filter, so even a flat image leaves a trace, under 6 %,
in the outer 2 px of the bands; reproduced). One U-Net per level works coarse to fine. With ``up_l`` a learned 2×2 stride-2 transposed convolution (3 -> 3 channels, one per level
l = 2..n), ``S_l`` the U-Net of level l, ``L_l`` the detail bands and ``G_n`` the residual:

    wiring: official (create_generator.m, addSubNet.m; params-paper.yaml)
    Y_n = S_n(G_n)                         coarsest level: colour/brightness, no skip
    U_l = up_l(Y_l)                        l = n..2, at the resolution of level l-1
    X_l = L_l + U_{l+1}                    the detail band plus the upsampled coarser result
    Y_l = S_l(X_l) + U_{l+1}               l = n-1..1 ('reconstructLayer': only U_{l+1} skips)
    output = Y_1                           clamped to [0, 1] only in ``forward``'s return

    wiring: residual (params.yaml)
    Y_n = G_n + S_n(G_n),  Y_l = X_l + S_l(X_l): every level refines its whole input, and the
    upsamplers start as nearest-neighbour upsampling, so the untrained network is close to the
    identity (the pyramid reconstructs the input). On the CPU budget it trains far faster: on the
    bundled data with the default params (8 epochs) the official wiring's best val PSNR was 14.2 dB,
    below the identity's 15.35 dB; this one's was 18.1 dB (18.5 dB with seed 1).

(The reviewed paper's text, seed section 3, adds the residual to Y_n + X_{n-1} as the residual wiring
does, but gives the coarsest level no skip; where text and code differ the code is the default.)
Each U-Net is MATLAB's ``unetLayers`` as the authors edit it: per encoder stage two 3×3
conv + LeakyReLU(0.2) then 2×2 max-pool, filters doubling per stage; a bridge of two convs; per
decoder stage a 2×2 stride-2 transposed conv + ReLU, concatenation with the encoder skip and two
3×3 conv + LeakyReLU(0.2); a final 1×1 conv to 3 channels; no dropout, no normalisation.
Paper scale (``PAPER_ARCH``): the coarsest U-Net has 4 encoder stages and 24 first-stage
filters, levels 3 and 2 have 3 stages and 24 filters, the finest level 3 stages and 16 filters:
7,015,449 generator parameters (the paper: "~7M").

Loss (``loss``), images in [0, 1], every sum normalised by the element count 3·H·W·B of the
output so the paper's relative weights are kept exactly:

    rec = Σ |Y_1 − T| / (3HWB)                               (= mean L1)
    pyr = Σ_{l=2..n} 2^(l−2) · Σ |U_l − T_l| / (3HWB)        T_l = expand(G_l(T)): the target's
                                                             Gaussian level l, upsampled by the
                                                             pyramid filter to level l−1's size
    adv = adv_weight · mean(−log σ(D(clamp(Y_1))))           non-saturating GAN term, only in the
                                                             epochs of ``adv_epochs`` (else 0)
    total = rec + pyr + adv

Levels count from the finest (l = 1) to the coarsest (l = n); in sums, the coarsest level
weighs most (2^(n−2)); per pixel of its own resolution, level l weighs 2^(l−2)/4^(l−2) = 2^−(l−2)
(1, 1/2, 1/4 for n = 4), since its band has 4^(l−2) times fewer pixels than U_2.
The authors' code sums absolute errors of 0–255 images and scales the adversarial term by
W = 3·h·w·n (``final_Loss.m``); in the units above that is ``adv_weight = n / 255``.
``adv_epochs`` lists half-open [first, stop) ranges of 0-based epochs (stop null: to the end).
The authors' ``main_training.m`` trains 40 epochs at 128 px without a discriminator, 30 at 256 px
with it after the stage's 15th (``train_network(..., 15)``: ``i > T``) and 20 at 512 px with it
after the stage's 5th: [[55, 70], [75, 90]].

Discriminator (``createDiscriminator.m``): the image is resized to ``d_size``² (bilinear,
antialiased; the authors resize to 256²), then log2(d_size) − 1 blocks of 4×4 stride-2 conv +
LeakyReLU(0.01) (batch norm in the second block only), filters 8·2^(i−1) capped at 128 (256 in the
last block), and a 2×2 stride-2 conv to one logit. Its loss (``d_loss``) is the BCE
−log σ(D(T)) − log σ(−D(Y)) on the target and the detached, clamped output. Two departures from
the authors' code: there the generated image reaches D through ``extractdata`` and a uint8 cast,
so their adversarial term sends no gradient to the generator; here it does (the paper's loss).
And their random flips of D's inputs are left out (no hidden randomness in the loss).

Photos larger than 512 px: the official demo (``demo_single_image.m``) multiplies the input
pyramid's levels by S = [1.5, 1.5, 1.5, 1.05] (finest first) before the network; ``band_scale``
holds those factors and ``forward(x, scale_bands=True)`` applies them (`expocorr.inference` does,
for such photos only). Training never scales.

Any H×W: reflect-padded (bottom/right) to a multiple of max_l 2^(l−1+depth_l) (128 at paper scale,
64 for the defaults) and cropped back; the pyramid loss is taken on the un-padded region.

``variant`` (VARIANTS): ``matlab``, all of the above (the authors' code), or ``pytorch_port``, the network
of the PyTorch port LZ-CH/Exposure_Correction-pytorch (``model.py``, ``tools/decomposition.py``), whose
published snapshot (``MSPECnet_woadv.pth``) `expocorr.stages.pretrained` converts (PORT_ARCH): LeakyReLU(0.01)
(``nn.LeakyReLU()``'s default) in the U-Nets and after every transposed convolution, the decoder's and the
inter-level upsamplers' alike, and OpenCV's pyramid (``cv2.pyrDown`` / ``cv2.pyrUp``: the 5-tap filter
[1 4 6 4 1]/16 once, reflect-101 borders; `cv_pyr_down`, `cv_pyr_up`). Same wiring as ``official``.
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from expocorr.models.registry import register

WIRINGS = ("official", "residual")
VARIANTS = ("matlab", "pytorch_port")
# Paper scale: create_generator.m (depths, filters), createDiscriminator.m (D), final_Loss.m (W),
# main_training.m (the adversarial epochs), demo_single_image.m (band_scale).
PAPER_ARCH = {
    "levels": 4,
    "channels": [16, 24, 24, 24],  # first-stage filters per U-Net, finest level first
    "depths": [3, 3, 3, 4],  # encoder stages per U-Net, finest level first
    "wiring": "official",
    "d_size": 256,
    "d_channels": 8,
    "adv_weight": 4 / 255,
    "adv_epochs": [[55, 70], [75, 90]],
    "band_scale": [1.5, 1.5, 1.5, 1.05],
}
# LZ-CH/Exposure_Correction-pytorch (model.py: MSPEC_Net's SubNet_4layers(24), SubNet_3layers(24, 24, 16);
# mspec_test.py: no band scaling).
PORT_ARCH = {**PAPER_ARCH, "variant": "pytorch_port", "band_scale": None}
PORT_SLOPE = 0.01  # nn.LeakyReLU()'s default negative slope, every activation of the port's generator
MATLAB_SLOPE = 0.2  # create_generator.m: leakyReluLayer(0.2) after every U-Net convolution

PYRAMID_TAPS = (0.05, 0.25, 0.4, 0.25, 0.05)  # pyramid_filter_.m: "original [Burt and Adelson, 1983]"
PYRAMID_PASSES = 2  # downsample_.m / upsample_.m: imfilter with the 2-D filter, then with its transpose
# The passes folded into one 9-tap filter (exact for both borders: see pyr_down, pyr_up).
_FOLDED_TAPS = tuple(functools.reduce(np.convolve, [PYRAMID_TAPS] * PYRAMID_PASSES))


# --- Laplacian pyramid ------------------------------------------------------------------------


def _check_image(x: Tensor, name: str = "x") -> None:
    if x.dim() != 4:
        raise ValueError(f"{name}: expected a B×C×H×W tensor, got shape {tuple(x.shape)}")


def _symmetric_pad(x: Tensor, p: int) -> Tensor:
    """MATLAB's 'symmetric' border (x1 x0 | x0 x1 ... xn-1 | xn-1 xn-2), repeated while p exceeds the size."""
    for dim in (-1, -2):
        left = right = p
        while left > 0:
            n = x.shape[dim]
            k, m = min(left, n), min(right, n)
            x = torch.cat([x.narrow(dim, 0, k).flip(dim), x, x.narrow(dim, n - m, m).flip(dim)], dim=dim)
            left, right = left - k, right - m
    return x


def _kernel(x: Tensor) -> Tensor:
    """The folded 2-D filter, one per channel of `x` (C×1×k×k)."""
    k = torch.tensor(_FOLDED_TAPS, dtype=x.dtype, device=x.device)
    return (k[:, None] * k[None, :]).expand(x.shape[1], 1, k.numel(), k.numel())


def pyr_down(x: Tensor) -> Tensor:
    """Blur with MATLAB's 'symmetric' border and keep every other pixel (downsample_.m):
    H×W -> ceil(H/2)×ceil(W/2). A symmetric filter keeps a symmetric border symmetric, so the two
    passes fold into one; it runs at the kept pixels only (stride 2)."""
    r = len(_FOLDED_TAPS) // 2
    return F.conv2d(_symmetric_pad(x, r), _kernel(x), stride=2, groups=x.shape[1])


def pyr_up(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Expand to `size` (at most twice x's size) as upsample_.m: replicate-pad 1, insert zeros between
    the pixels of 4·x, blur with zero borders, crop. Run as one stride-2 transposed convolution: the
    crop never reaches the band the second pass's zero border would have changed, so the folded filter
    gives the two passes' result exactly."""
    h, w = size
    if not (2 * x.shape[-2] - 1 <= h <= 2 * x.shape[-2] and 2 * x.shape[-1] - 1 <= w <= 2 * x.shape[-1]):
        raise ValueError(f"pyr_up: cannot expand {tuple(x.shape[-2:])} to {size}")
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    r = len(_FOLDED_TAPS) // 2
    up = F.conv_transpose2d(x, 4 * _kernel(x), stride=2, padding=r, groups=x.shape[1])
    return up[..., 2 : 2 + h, 2 : 2 + w]


_CV_TAPS = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)  # OpenCV's pyrDown / pyrUp kernel, per dimension


def _cv_kernel(x: Tensor) -> Tensor:
    k = torch.tensor(_CV_TAPS, dtype=x.dtype, device=x.device)
    return (k[:, None] * k[None, :]).expand(x.shape[1], 1, 5, 5)


def cv_pyr_down(x: Tensor) -> Tensor:
    """``cv2.pyrDown``: blur with reflect-101 borders, keep every other pixel: H×W -> ceil(H/2)×ceil(W/2)."""
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), _cv_kernel(x), stride=2, groups=x.shape[1])


def cv_pyr_up(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``cv2.pyrUp(x, dstsize=size)``: zeros inserted between the pixels (2H×2W), blurred by 4× the kernel with
    reflect-101 borders at that size, cropped to `size`."""
    h, w = size
    if not (2 * x.shape[-2] - 1 <= h <= 2 * x.shape[-2] and 2 * x.shape[-1] - 1 <= w <= 2 * x.shape[-1]):
        raise ValueError(f"cv_pyr_up: cannot expand {tuple(x.shape[-2:])} to {size}")
    z = x.new_zeros(*x.shape[:-2], 2 * x.shape[-2], 2 * x.shape[-1])
    z[..., ::2, ::2] = x
    return F.conv2d(F.pad(z, (2, 2, 2, 2), mode="reflect"), 4 * _cv_kernel(x), groups=x.shape[1])[..., :h, :w]


_PYRAMIDS = {"matlab": (pyr_down, pyr_up), "pytorch_port": (cv_pyr_down, cv_pyr_up)}


def gaussian_pyramid(x: Tensor, levels: int, variant: str = "matlab") -> list[Tensor]:
    """[G_1 = x, G_2, ..., G_levels], each half the size of the one before (rounded up)."""
    _check_image(x)
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    down = _PYRAMIDS[variant][0]
    pyramid = [x]
    for _ in range(levels - 1):
        pyramid.append(down(pyramid[-1]))
    return pyramid


def laplacian_pyramid(x: Tensor, levels: int, variant: str = "matlab") -> list[Tensor]:
    """[L_1, ..., L_{levels-1}, G_levels]: detail bands finest first, then the Gaussian residual."""
    g = gaussian_pyramid(x, levels, variant)
    up = _PYRAMIDS[variant][1]
    return [g[i] - up(g[i + 1], g[i].shape[-2:]) for i in range(levels - 1)] + [g[-1]]


def reconstruct(pyramid: list[Tensor], variant: str = "matlab") -> Tensor:
    """Inverse of `laplacian_pyramid`: expand the residual and add the bands, coarse to fine."""
    up = _PYRAMIDS[variant][1]
    x = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        x = band + up(x, band.shape[-2:])
    return x


# --- networks ---------------------------------------------------------------------------------


def _conv_pair(c_in: int, c_out: int, slope: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.LeakyReLU(slope),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.LeakyReLU(slope),
    )


def _up_activation(x: Tensor, variant: str) -> Tensor:
    """After a U-Net's transposed convolution: ReLU (matlab), LeakyReLU(0.01) (pytorch_port)."""
    return F.relu(x) if variant == "matlab" else F.leaky_relu(x, PORT_SLOPE)


class UNet(nn.Module):
    """MATLAB ``unetLayers`` as the authors edit it (see the module docstring); 3 -> 3 channels."""

    def __init__(self, channels: int, depth: int, variant: str = "matlab"):
        super().__init__()
        self.variant = variant
        slope = MATLAB_SLOPE if variant == "matlab" else PORT_SLOPE
        widths = [channels * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(_conv_pair(3 if i == 0 else widths[i - 1], widths[i], slope)
                                     for i in range(depth))
        self.bridge = _conv_pair(widths[depth - 1], widths[depth], slope)
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth))
        self.decoder = nn.ModuleList(_conv_pair(2 * widths[i], widths[i], slope) for i in range(depth))
        self.final = nn.Conv2d(widths[0], 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bridge(x)
        for i in reversed(range(len(self.decoder))):
            x = self.decoder[i](torch.cat([_up_activation(self.up[i](x), self.variant), skips[i]], dim=1))
        return self.final(x)


class Discriminator(nn.Module):
    """Global image discriminator: resize to size², stride-2 4×4 convs down to 2×2, one logit."""

    def __init__(self, size: int, channels: int):
        super().__init__()
        self.size = size
        blocks = int(math.log2(size)) - 1
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(1, blocks + 1):
            c_out = min(channels * 2 ** (i - 1), channels * (32 if i == blocks else 16))
            layers.append(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1))
            if i == 2:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.01))
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 1, 2, stride=2))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return self.layers(x).flatten()


@contextmanager
def _frozen(module: nn.Module):
    """Build graph through `module` without its parameters collecting gradients."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def _pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Reflect-pad bottom and right up to a multiple (repeatedly when the pad exceeds the image)."""
    for dim in (-2, -1):
        missing = -x.shape[dim] % multiple
        while missing > 0:
            step = missing if x.shape[dim] == 1 else min(missing, x.shape[dim] - 1)
            pad = (0, step, 0, 0) if dim == -1 else (0, 0, 0, step)
            x = F.pad(x, pad, mode="replicate" if x.shape[dim] == 1 else "reflect")
            missing -= step
    return x


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_ints(name: str, value, n: int) -> list[int]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ValueError(f"{name} must be a list of {n} integers (one per level), got {value!r}")
    if not all(_is_int(v) and v >= 1 for v in value):
        raise ValueError(f"{name} must hold integers >= 1, got {value!r}")
    return list(value)


def _epoch_ranges(value) -> list[tuple[int, int | None]]:
    """`adv_epochs` as (first, stop) pairs: 0-based, stop excluded, None for 'to the end'."""
    ranges = []
    for r in value if isinstance(value, (list, tuple)) else [None]:
        ok = isinstance(r, (list, tuple)) and len(r) == 2 and _is_int(r[0]) and r[0] >= 0
        if not ok or not (r[1] is None or (_is_int(r[1]) and r[1] > r[0])):
            raise ValueError(f"adv_epochs must be a list of [first, stop] epoch ranges (0-based, stop > first "
                             f"or null), got {value!r}")
        ranges.append((r[0], r[1]))
    return ranges


@register("msec")
class MSEC(nn.Module):
    """Laplacian-pyramid coarse-to-fine exposure correction (see the module docstring)."""

    paired = True

    def __init__(
        self,
        levels: int = 4,
        channels: list[int] | tuple[int, ...] = (8, 12, 12, 12),
        depths: list[int] | tuple[int, ...] = (2, 2, 2, 3),
        wiring: str = "residual",
        d_size: int = 64,
        d_channels: int = 8,
        adv_weight: float = 4 / 255,
        adv_epochs: list | tuple = ((2, None),),
        band_scale: list[float] | tuple[float, ...] | None = None,
        variant: str = "matlab",
    ):
        super().__init__()
        if not _is_int(levels) or levels < 2:
            raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
        channels = _positive_ints("channels", channels, levels)
        depths = _positive_ints("depths", depths, levels)
        if wiring not in WIRINGS:
            raise ValueError(f"wiring must be one of {', '.join(WIRINGS)}, got {wiring!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if not _is_int(d_size) or d_size < 8 or d_size & (d_size - 1):
            raise ValueError(f"d_size must be a power of two >= 8, got {d_size!r}")
        if not _is_int(d_channels) or d_channels < 1:
            raise ValueError(f"d_channels must be an integer >= 1, got {d_channels!r}")
        if not isinstance(adv_weight, (int, float)) or isinstance(adv_weight, bool) or not adv_weight >= 0:
            raise ValueError(f"adv_weight must be a number >= 0, got {adv_weight!r}")
        if band_scale is not None and not (
            isinstance(band_scale, (list, tuple)) and len(band_scale) == levels
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in band_scale)
        ):
            raise ValueError(f"band_scale must be null or a list of {levels} numbers > 0, got {band_scale!r}")
        self.levels = levels
        self.wiring = wiring
        self.variant = variant
        self.adv_weight = float(adv_weight)
        self.adv_epochs = _epoch_ranges(adv_epochs)
        self.band_scale = None if band_scale is None else [float(v) for v in band_scale]
        # Level l (1-based) runs at 1/2^(l-1) scale through a U-Net that halves depth_l times.
        self.multiple = max(2 ** (level + depth) for level, depth in enumerate(depths))
        self.subnets = nn.ModuleList(UNet(c, d, variant) for c, d in zip(channels, depths))  # finest first
        # upsamplers[k] lifts the output of level k+2 to the resolution of level k+1.
        self.upsamplers = nn.ModuleList(nn.ConvTranspose2d(3, 3, 2, stride=2) for _ in range(levels - 1))
        if wiring == "residual":  # start as nearest-neighbour upsampling: the pyramid reconstructs at init
            with torch.no_grad():
                for up in self.upsamplers:
                    up.weight.copy_(torch.eye(3).view(3, 3, 1, 1).expand(3, 3, 2, 2))
                    up.bias.zero_()
        self.discriminator = Discriminator(d_size, d_channels)
        self._last: tuple[Tensor, Tensor, list[Tensor]] | None = None

    def generate(self, x: Tensor, scale_bands: bool = False) -> tuple[Tensor, list[Tensor]]:
        """Unclamped output Y_1 and the upsampled level outputs [U_2, ..., U_n], cropped to x's extent;
        `scale_bands`: the input pyramid's levels multiplied by `band_scale` first."""
        _check_image(x)
        if x.shape[1] != 3:
            raise ValueError(f"msec: expected 3 channels, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        pyramid = laplacian_pyramid(_pad_to_multiple(x, self.multiple), self.levels, self.variant)
        if scale_bands and self.band_scale is not None:
            pyramid = [band * s for band, s in zip(pyramid, self.band_scale)]
        residual = self.wiring == "residual"
        y = self.subnets[-1](pyramid[-1]) + (pyramid[-1] if residual else 0)
        ups = []
        for k in reversed(range(self.levels - 1)):
            u = self.upsamplers[k](y)
            if self.variant == "pytorch_port":
                u = F.leaky_relu(u, PORT_SLOPE)
            ups.append(u[..., : -(-h // 2**k), : -(-w // 2**k)])
            level_input = pyramid[k] + u
            y = self.subnets[k](level_input) + (level_input if residual else u)
        return y[..., :h, :w], ups[::-1]

    def forward(self, x: Tensor, scale_bands: bool = False) -> Tensor:
        y, ups = self.generate(x, scale_bands)
        out = y.clamp(0, 1)
        # In training, kept for `loss` on this very output (saves a second pass); `loss` drops it.
        self._last = (out, y, ups) if self.training and torch.is_grad_enabled() else None
        return out

    def adversarial_on(self, epoch: int) -> bool:
        """Whether the GAN terms are on at 0-based `epoch` (one of the `adv_epochs` ranges)."""
        return self.adv_weight > 0 and any(a <= epoch and (b is None or epoch < b) for a, b in self.adv_epochs)

    def loss(self, batch: dict, out: Tensor, epoch: int) -> dict[str, Tensor]:
        target = batch["target"]
        if self._last is not None and self._last[0] is out:
            _, y, ups = self._last
        else:
            y, ups = self.generate(batch["input"])
        self._last = None
        n_elements = target.numel()
        rec = (y - target).abs().sum() / n_elements
        gauss = gaussian_pyramid(_pad_to_multiple(target, self.multiple), self.levels, self.variant)
        up = _PYRAMIDS[self.variant][1]
        pyr = y.new_zeros(())
        for k, u in enumerate(ups):  # u = U_l with l = k + 2, at the resolution of level k + 1
            t = up(gauss[k + 1], gauss[k].shape[-2:])[..., : u.shape[-2], : u.shape[-1]]
            pyr = pyr + 2**k * (u - t).abs().sum() / n_elements
        adv = y.new_zeros(())
        if self.adversarial_on(epoch):
            with _frozen(self.discriminator) as d:
                adv = self.adv_weight * F.softplus(-d(y.clamp(0, 1))).mean()
        return {"rec": rec, "pyr": pyr, "adv": adv, "total": rec + pyr + adv}

    def d_loss(self, batch: dict, out: Tensor, epoch: int) -> dict[str, Tensor] | None:
        if not self.adversarial_on(epoch):
            return None
        real = F.softplus(-self.discriminator(batch["target"])).mean()
        fake = F.softplus(self.discriminator(out.detach())).mean()
        return {"real": real, "fake": fake, "total": real + fake}

"""Exposure GAN: pix2pix with spectral norm, noise injection and a perceptual loss.

P. Isola, J.-Y. Zhu, T. Zhou, A. A. Efros, "Image-to-Image Translation with Conditional
Adversarial Networks" (pix2pix), CVPR 2017 — as modified for exposure correction in a student
report: spectral normalisation (Miyato et al. 2018) on the convolutions, StyleGAN-style noise
injection (Karras et al. 2019), an LSGAN objective (Mao et al. 2017) and a VGG19 perceptual term.

Generator: the pix2pix U-Net, `depth` stride-2 levels (8 in pix2pix's unet_256), channels
C64-C128-C256-C512-C512… (× width/64, capped at 8·width).

* encoder block: conv 4×4 stride 2 → [noise] → BN → LeakyReLU(0.2); no BN in the first and the
  innermost block.
* decoder block: transposed conv 4×4 stride 2 → [noise] → BN → [dropout 0.5] → ReLU, then the
  mirrored encoder block's output is concatenated (skip); dropout in the 3 blocks after the
  innermost one (pix2pix), at most depth − 2 of them. Last block: transposed conv to 3 channels,
  tanh, mapped to [0, 1].
* convs have no bias except the output one (the pix2pix code with BatchNorm does the same).
* spectral norm (`spectral_norm`) on every conv and transposed conv, via
  ``torch.nn.utils.parametrizations.spectral_norm``.
* noise injection (`noise_encoder`, `noise_decoder`): add per-pixel N(0, 1) noise (one map shared
  by the channels) times a learned per-channel scale initialised at 0, after each conv of the
  encoder blocks and of the decoder blocks except the output one. Training mode only: in eval
  mode there is no noise (and no dropout), so inference is deterministic.

Discriminator: PatchGAN conditioned on the input (input and output concatenated, 6 channels),
C64-C128-C256-C512 with 4×4 kernels, strides 2, 2, 2, 1, then a 1-channel 4×4 conv: a 70×70
receptive field (`fov: 70`); `fov: 140` adds one stride-2 C512 layer (pix2pix's n_layers=4),
whose exact receptive field is 142×142. BN after every conv but the first and the last, or, with
`d_spectral_norm`, spectral norm on every conv and no BN.

Losses (LSGAN): D: ½·[(D(x, y) − 1)² + D(x, G(x))²]; G: (D(x, G(x)) − 1)²
+ λc·L1(G(x), y) + λp·perceptual, λc = 50, λp = 100. Perceptual: L1 between VGG19 features of
output and target (ImageNet-normalised) at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1, each
averaged over its C·H·W (and batch), summed. It needs ImageNet weights (`vgg_weights`, a
torchvision VGG19 file): without them the term is off and a warning says so. The VGG19 is frozen
and held in a plain list (``self._vgg``), so it is not a submodule: not trained, not in the
state_dict, not moved by ``.to()`` (it follows the images' device when used).
The adversarial term starts at epoch `adv_start_epoch` (0: from the start); before that
``d_loss`` returns None.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as sn

from expocorr.models.registry import register
from expocorr.models.vgg import IMAGENET_MEAN, IMAGENET_STD, load_features, vgg_features

log = logging.getLogger(__name__)

VGG19_LAYERS = (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 in vgg19().features
FOV_STRIDED = {70: 3, 140: 4}  # stride-2 layers of the PatchGAN per receptive field

# pix2pix scale (unet_256 generator, 70×70 PatchGAN, 64 base channels). Set vgg_weights to a
# torchvision VGG19 file (e.g. vgg19-dcbb9e9d.pth) for the perceptual term.
PAPER_ARCH = {"depth": 8, "width": 64, "dropout": 0.5, "spectral_norm": True, "noise_encoder": True,
              "noise_decoder": True, "fov": 70, "d_width": 64, "d_spectral_norm": True,
              "lambda_adv": 1.0, "lambda_l1": 50.0, "lambda_perceptual": 100.0, "vgg_weights": None,
              "adv_start_epoch": 0}


class NoiseInjection(nn.Module):
    """x + scale · N(0, 1): one noise map per image, a learned per-channel scale (init 0); training only."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        return x + self.scale * noise


def down_block(cin: int, cout: int, norm: bool, noise: bool, snorm: bool) -> nn.Sequential:
    """Encoder: conv 4×4 stride 2 → [noise] → [BN] → LeakyReLU(0.2)."""
    conv = nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False)
    return nn.Sequential(sn(conv) if snorm else conv, NoiseInjection(cout) if noise else nn.Identity(),
                         nn.BatchNorm2d(cout) if norm else nn.Identity(), nn.LeakyReLU(0.2, inplace=True))


def up_block(cin: int, cout: int, dropout: float, noise: bool, snorm: bool) -> nn.Sequential:
    """Decoder: transposed conv 4×4 stride 2 → [noise] → BN → [dropout] → ReLU."""
    conv = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False)
    return nn.Sequential(sn(conv) if snorm else conv, NoiseInjection(cout) if noise else nn.Identity(),
                         nn.BatchNorm2d(cout), nn.Dropout(dropout) if dropout else nn.Identity(),
                         nn.ReLU(inplace=True))


class UNetGenerator(nn.Module):
    """pix2pix U-Net on [-1, 1] images; the input is padded (replicate) to a multiple of 2**depth."""

    def __init__(self, depth: int, width: int, dropout: float, noise_encoder: bool, noise_decoder: bool,
                 snorm: bool):
        super().__init__()
        self.multiple = 2**depth
        ch = [width * min(2**i, 8) for i in range(depth)]
        self.down = nn.ModuleList(
            down_block(3 if i == 0 else ch[i - 1], ch[i], norm=0 < i < depth - 1, noise=noise_encoder, snorm=snorm)
            for i in range(depth))
        # up[i] mirrors down[i + 1]: from level i + 1 to level i; up[0] is the innermost.
        n_drop = min(3, depth - 2)
        self.up = nn.ModuleList(
            up_block(ch[-1] if i == 0 else 2 * ch[depth - 1 - i], ch[depth - 2 - i],
                     dropout=dropout if 1 <= i <= n_drop else 0.0, noise=noise_decoder, snorm=snorm)
            for i in range(depth - 1))
        out = nn.ConvTranspose2d(2 * ch[0], 3, 4, stride=2, padding=1)
        self.out = sn(out) if snorm else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = F.pad(x, (0, -w % self.multiple, 0, -h % self.multiple), mode="replicate")
        skips = []
        for block in self.down:
            y = block(y)
            skips.append(y)
        skips.pop()  # the innermost output is not a skip, it is what the decoder starts from
        for block in self.up:
            y = torch.cat([block(y), skips.pop()], dim=1)
        return torch.tanh(self.out(y))[..., :h, :w]


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN: (input, image) in [-1, 1], 6 channels -> a map of real/fake scores."""

    def __init__(self, width: int, fov: int, snorm: bool):
        super().__init__()
        strided = FOV_STRIDED[fov]
        wrap = sn if snorm else (lambda m: m)
        layers = [wrap(nn.Conv2d(6, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
        cin = width
        for i in range(1, strided + 1):  # the strided layers, then the stride-1 one
            cout = width * min(2**i, 8)
            layers += [wrap(nn.Conv2d(cin, cout, 4, stride=2 if i < strided else 1, padding=1, bias=snorm)),
                       nn.Identity() if snorm else nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        layers.append(wrap(nn.Conv2d(cin, 1, 4, stride=1, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, y], dim=1))


@register("exposure_gan")
class ExposureGAN(nn.Module):
    """pix2pix U-Net + conditional PatchGAN, spectral norm, noise injection, LSGAN + L1 + perceptual."""

    paired = True

    def __init__(self, depth: int = 5, width: int = 16, dropout: float = 0.5, spectral_norm: bool = True,
                 noise_encoder: bool = True, noise_decoder: bool = True, fov: int = 70, d_width: int = 16,
                 d_spectral_norm: bool = True, lambda_adv: float = 1.0, lambda_l1: float = 50.0,
                 lambda_perceptual: float = 100.0, vgg_weights: str | Path | None = None,
                 adv_start_epoch: int = 0):
        super().__init__()
        for arg, value in (("depth", depth), ("width", width), ("d_width", d_width)):
            if not isinstance(value, int) or isinstance(value, bool) or value < (2 if arg == "depth" else 1):
                raise ValueError(f"{arg}: expected an integer >= {2 if arg == 'depth' else 1}, got {value!r}")
        if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        for arg, value in (("spectral_norm", spectral_norm), ("noise_encoder", noise_encoder),
                           ("noise_decoder", noise_decoder), ("d_spectral_norm", d_spectral_norm)):
            if not isinstance(value, bool):
                raise ValueError(f"{arg}: expected true or false, got {value!r}")
        if fov not in FOV_STRIDED:
            raise ValueError(f"fov: expected one of {sorted(FOV_STRIDED)}, got {fov!r}")
        for arg, value in (("lambda_adv", lambda_adv), ("lambda_l1", lambda_l1),
                           ("lambda_perceptual", lambda_perceptual)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{arg}: expected a number >= 0, got {value!r}")
        if not isinstance(adv_start_epoch, int) or adv_start_epoch < 0:
            raise ValueError(f"adv_start_epoch: expected an integer >= 0, got {adv_start_epoch!r}")
        if vgg_weights is not None and not (isinstance(vgg_weights, (str, Path)) and Path(vgg_weights).is_file()):
            raise ValueError(f"vgg_weights: no such file {vgg_weights!r}")
        self.lambda_adv, self.lambda_l1, self.lambda_perceptual = float(lambda_adv), float(lambda_l1), \
            float(lambda_perceptual)
        self.adv_start_epoch = adv_start_epoch

        self.generator = UNetGenerator(depth, width, float(dropout), noise_encoder, noise_decoder, spectral_norm)
        self.discriminator = PatchDiscriminator(d_width, fov, d_spectral_norm)

        # Frozen VGG19 up to relu5_1, in a list so that it is not a submodule (see the module docstring).
        self.perceptual = vgg_weights is not None and self.lambda_perceptual > 0
        self._vgg: list[nn.Module] = []
        if self.perceptual:
            vgg = vgg_features("vgg19")
            load_features(vgg, vgg_weights)
            self._vgg.append(vgg[:VGG19_LAYERS[-1] + 1].requires_grad_(False).eval())
        elif self.lambda_perceptual > 0:
            log.warning("exposure_gan: no vgg_weights given, the VGG19 perceptual term is OFF "
                        "(lambda_perceptual=%g ignored)", self.lambda_perceptual)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.generator(2 * x - 1) + 1) / 2

    # --- losses -----------------------------------------------------------------------------

    def adversarial_on(self, epoch: int) -> bool:
        return self.lambda_adv > 0 and epoch >= self.adv_start_epoch

    def _score(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Discriminator scores of image `y` given input `x`, both in [0, 1]."""
        return self.discriminator(2 * x - 1, 2 * y - 1)

    def _score_frozen_d(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scores with D's parameters out of the graph: the G loss never leaves gradients in D."""
        params = [p for p in self.discriminator.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            return self._score(x, y)
        finally:
            for p in params:
                p.requires_grad_(True)

    def _vgg_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        vgg = self._vgg[0].to(x.device, x.dtype)
        h, feats = (x - self.mean) / self.std, []
        for i, layer in enumerate(vgg):
            h = layer(h)
            if i in VGG19_LAYERS:
                feats.append(h)
        return feats

    def perceptual_loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Sum over relu1_1..relu5_1 of the mean absolute VGG19 feature difference."""
        with torch.no_grad():
            ref = self._vgg_features(target)
        return sum(F.l1_loss(a, b) for a, b in zip(self._vgg_features(out), ref))

    def loss(self, batch: dict, out: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """Generator terms (unweighted) and their weighted "total"."""
        terms = {"l1": F.l1_loss(out, batch["target"])}
        total = self.lambda_l1 * terms["l1"]
        if self.perceptual:
            terms["perceptual"] = self.perceptual_loss(out, batch["target"])
            total = total + self.lambda_perceptual * terms["perceptual"]
        if self.adversarial_on(epoch):
            fake = self._score_frozen_d(batch["input"], out)
            terms["adv"] = F.mse_loss(fake, torch.ones_like(fake))
            total = total + self.lambda_adv * terms["adv"]
        terms["total"] = total
        return terms

    def d_loss(self, batch: dict, out: torch.Tensor, epoch: int) -> dict[str, torch.Tensor] | None:
        """LSGAN discriminator loss on (input, target) as real and (input, out) as fake."""
        if not self.adversarial_on(epoch):
            return None
        real = self._score(batch["input"], batch["target"])
        fake = self._score(batch["input"], out.detach())
        terms = {"real": F.mse_loss(real, torch.ones_like(real)), "fake": F.mse_loss(fake, torch.zeros_like(fake))}
        terms["total"] = 0.5 * (terms["real"] + terms["fake"])
        return terms

"""Exposure GAN: a conditional GAN for over-exposure correction, after pix2pix.

Seed: P. Le Jeune, "Image enhancement with generative adversarial networks" (a student report
building on P. Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks",
CVPR 2017). Where the report is silent: pix2pix's official code (junyanz/pytorch-CycleGAN-and-pix2pix,
models/networks.py, models/pix2pix_model.py, options/train_options.py).

Generator `seed` (report §3.1; the paper default): a U-Net of 4 down-sampling blocks, each two
stride-1 convolutions and a 2×2 max-pooling; the up-sampling part is the same with 2×2 stride-2
transposed convolutions instead of the pooling. The report names no kernel size, pooling type or
channel count: 3×3 convs, 2×2 max-pooling and 2×2 up-convolutions are the U-Net's (Ronneberger et
al. 2015), channels width·(1, 2, 4, 8) per level pix2pix's (ngf 64, doubled per level). No
convolution runs at 1/16 scale: the last pooled map goes straight to the first transposed conv.

* encoder level l: [conv k_l×k_l → [noise] → BN → LeakyReLU(0.2)] × 2, no BN on the very first
  conv; its output is the skip of level l, then max-pool 2×2.
* decoder level l (3 … 0): transposed conv 2×2 stride 2 → [noise] → BN → ReLU, concatenated with
  the level's skip, then [conv k_l×k_l → [noise] → BN → [dropout] → ReLU] × 2; dropout only at
  levels 1–3 (pix2pix: its 3 innermost decoder blocks).
* output: conv 1×1 to 3 channels (bias, no BN), tanh. Other convs have no bias (BN follows).
* the field of view (`g_fov`, report Tables 3–4: 47, 70, 140 px) is set by the kernels k_l of the
  stride-1 convs (``G_FOV_KERNELS``); the report says only that its field-of-view experiments
  "needed slight modifications in the convolutions", so the smaller ones are expocorr's (1×1 convs
  at some levels). The input span of one output pixel depends on its position modulo 16: 124–140 px
  for 140 (3×3 everywhere), 56–72 px for 70, 48 px at every position for 47.

Generator `unet` (an arch option): pix2pix's unet_256 layout, `depth` stride-2 levels (8 in
unet_256), channels C64-C128-C256-C512-C512… (× width/64, capped at 8·width); encoder conv 4×4
stride 2 → [noise] → BN → LeakyReLU(0.2) (no BN in the first and the innermost block); decoder
transposed conv 4×4 stride 2 → [noise] → BN → [dropout 0.5 in the 3 blocks after the innermost]
→ ReLU, concatenated with the mirrored encoder output; last: transposed conv to 3 channels, tanh.

Both: spectral norm (`spectral_norm`, report §3.1: "on all convolutional layers") via
``torch.nn.utils.parametrizations.spectral_norm``. Noise injection (report §3.3, after StyleGAN):
after each conv and transposed conv of the encoder (`noise_encoder`) and of the decoder
(`noise_decoder`), output conv excluded, add one N(0, 1) map per image (shared by the channels)
times a learned per-channel scale initialised at 0; a new sample per layer and forward pass. In
eval mode: with `noise_eval`, one fixed map per layer (a CPU generator seeded with
``EVAL_NOISE_SEED`` + the layer's index, the same for every image of a batch), so inference is
deterministic and does not depend on the device or the batch; without it, no noise.

Discriminator: pix2pix's PatchGAN conditioned on the input (input and output concatenated, 6
channels), 4×4 convs: C64 stride 2, then C128-C256… stride 2, then C512 stride 1, then a 1-channel
conv. `fov` (report Table 3: 70, 94, 140) picks ``FOV_LAYERS``: 70 is pix2pix's n_layers=3; 94
adds one more stride-1 C512 layer (exact field 94); 140 is n_layers=4 (exact field 142). BN after
every conv but the first and the last when `d_batch_norm` (null: only without `d_spectral_norm`,
the earlier layout); spectral norm on every conv with `d_spectral_norm`.

Losses (report eqs. 4–9): LSGAN with the report's labels, real → 0 and fake → 1 (eq. 7; the usual
labels with D negated, the same game): D: ½·E[D(x, y)²] + ½·E[(1 − D(x, G(x)))²];
G: ½·E[D(x, G(x))²] (eq. 8) · λadv + λc·L1(G(x), y) + λp·perceptual, λc = 50, λp = 100 (§4.2).
L1 is pix2pix's ``nn.L1Loss`` (mean). Perceptual (eq. 5): over 5 regularly spaced of VGG19's 16
convs (``PERCEPTUAL_CONVS``, outputs after ReLU), Σ_i ‖φ_i(y) − φ_i(G(x))‖₁ / (W_i·H_i), summed over
channels and averaged over the batch, on ImageNet-normalised images. It needs ImageNet weights
(`vgg_weights`, a torchvision VGG19 file): without them the term is off and a warning says so. The
VGG19 is frozen and held in a plain list (``self._vgg``), so it is not a submodule: not trained,
not in the state_dict, not moved by ``.to()`` (it follows the images' device when used). The
adversarial term starts at epoch `adv_start_epoch` (0: from the start); before that ``d_loss``
returns None.

The class defaults of `generator`, `noise_eval` and `d_batch_norm` rebuild checkpoints written before
those keys existed (pix2pix's U-Net, no noise in eval mode, BN in D only without spectral norm);
params-paper.yaml is ``PAPER_ARCH``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as sn

from expocorr.models.registry import register
from expocorr.models.vgg import IMAGENET_MEAN, IMAGENET_STD, conv_relu_indices, load_features, vgg_features

log = logging.getLogger(__name__)

SEED_LEVELS = 4  # report §3.1: "4 down-sampling blocks"
G_FOV_KERNELS = {47: (1, 1, 3, 1), 70: (1, 3, 3, 1), 140: (3, 3, 3, 3)}  # stride-1 conv kernel per level
FOV_LAYERS = {70: (3, 1), 94: (3, 2), 140: (4, 1)}  # PatchGAN: (pix2pix n_layers, stride-1 C512 layers)
# Report §2.3: "5 features maps, regularly spaced in the network, out of the 16 available in VGG-19":
# conv indices round(linspace(0, 15, 5)) = conv1_1, conv3_1, conv4_1, conv4_4, conv5_4.
PERCEPTUAL_CONVS = (0, 4, 8, 11, 15)
REAL_LABEL, FAKE_LABEL = 0.0, 1.0  # report eqs. 7–8: D(x) -> 0, D(G(z)) -> 1; G pushes D(G(z)) -> 0
EVAL_NOISE_SEED = 0

# Paper scale: the report's generator at its best field of view (140 px, Table 4), pix2pix's 70×70
# PatchGAN and 64 base channels. Set vgg_weights to a torchvision VGG19 file (e.g. vgg19-dcbb9e9d.pth)
# for the perceptual term.
PAPER_ARCH = {"generator": "seed", "g_fov": 140, "depth": 8, "width": 64, "dropout": 0.0, "spectral_norm": True,
              "noise_encoder": True, "noise_decoder": True, "noise_eval": True, "fov": 70, "d_width": 64,
              "d_spectral_norm": True, "d_batch_norm": True, "lambda_adv": 1.0, "lambda_l1": 50.0,
              "lambda_perceptual": 100.0, "vgg_weights": None, "adv_start_epoch": 0}


class NoiseInjection(nn.Module):
    """x + scale · N(0, 1): one noise map per image, a learned per-channel scale (init 0)."""

    def __init__(self, channels: int, eval_noise: bool):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.eval_noise = eval_noise
        self.seed = EVAL_NOISE_SEED  # + the layer's index, set by the generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        elif self.eval_noise:
            gen = torch.Generator().manual_seed(self.seed)
            noise = torch.randn(1, 1, *x.shape[2:], generator=gen).to(x.device, x.dtype)
        else:
            return x
        return x + self.scale * noise


def number_noise_layers(net: nn.Module) -> None:
    """Give each noise layer its own eval-mode seed, in module order."""
    for i, m in enumerate(m for m in net.modules() if isinstance(m, NoiseInjection)):
        m.seed = EVAL_NOISE_SEED + i


def unit(conv: nn.Module, cout: int, snorm: bool, noise: bool, eval_noise: bool, norm: bool, act: nn.Module,
         dropout: float = 0.0) -> nn.Sequential:
    """conv → [noise] → [BN] → [dropout] → activation."""
    return nn.Sequential(sn(conv) if snorm else conv, NoiseInjection(cout, eval_noise) if noise else nn.Identity(),
                         nn.BatchNorm2d(cout) if norm else nn.Identity(),
                         nn.Dropout(dropout) if dropout else nn.Identity(), act)


class SeedGenerator(nn.Module):
    """The report's U-Net (module docstring) on [-1, 1] images, padded (replicate) to a multiple of 16."""

    multiple = 2**SEED_LEVELS

    def __init__(self, width: int, g_fov: int, dropout: float, noise_encoder: bool, noise_decoder: bool,
                 snorm: bool, eval_noise: bool):
        super().__init__()
        kernels = G_FOV_KERNELS[g_fov]
        ch = [width * 2**level for level in range(SEED_LEVELS)]

        def conv(cin: int, cout: int, k: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)

        enc = lambda cin, cout, k, norm: unit(conv(cin, cout, k), cout, snorm, noise_encoder, eval_noise, norm,
                                              nn.LeakyReLU(0.2, inplace=True))
        dec = lambda cin, cout, k, p: unit(conv(cin, cout, k), cout, snorm, noise_decoder, eval_noise, True,
                                           nn.ReLU(inplace=True), p)
        self.down = nn.ModuleList(
            nn.Sequential(enc(3 if lv == 0 else ch[lv - 1], ch[lv], kernels[lv], lv > 0),
                          enc(ch[lv], ch[lv], kernels[lv], True))
            for lv in range(SEED_LEVELS))
        levels = range(SEED_LEVELS - 1, -1, -1)  # decoder order: innermost first
        self.up = nn.ModuleList(
            unit(nn.ConvTranspose2d(ch[min(lv + 1, SEED_LEVELS - 1)], ch[lv], 2, stride=2, bias=False), ch[lv],
                 snorm, noise_decoder, eval_noise, True, nn.ReLU(inplace=True))
            for lv in levels)
        self.dec = nn.ModuleList(
            nn.Sequential(dec(2 * ch[lv], ch[lv], kernels[lv], dropout if lv > 0 else 0.0),
                          dec(ch[lv], ch[lv], kernels[lv], dropout if lv > 0 else 0.0))
            for lv in levels)
        out = nn.Conv2d(ch[0], 3, 1)
        self.out = sn(out) if snorm else out
        number_noise_layers(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = F.pad(x, (0, -w % self.multiple, 0, -h % self.multiple), mode="replicate")
        skips = []
        for block in self.down:
            y = block(y)
            skips.append(y)
            y = F.max_pool2d(y, 2)
        for up, block in zip(self.up, self.dec):
            y = block(torch.cat([up(y), skips.pop()], dim=1))
        return torch.tanh(self.out(y))[..., :h, :w]


class UNetGenerator(nn.Module):
    """pix2pix U-Net on [-1, 1] images; the input is padded (replicate) to a multiple of 2**depth."""

    def __init__(self, depth: int, width: int, dropout: float, noise_encoder: bool, noise_decoder: bool,
                 snorm: bool, eval_noise: bool):
        super().__init__()
        self.multiple = 2**depth
        ch = [width * min(2**i, 8) for i in range(depth)]
        self.down = nn.ModuleList(
            unit(nn.Conv2d(3 if i == 0 else ch[i - 1], ch[i], 4, stride=2, padding=1, bias=False), ch[i], snorm,
                 noise_encoder, eval_noise, 0 < i < depth - 1, nn.LeakyReLU(0.2, inplace=True))
            for i in range(depth))
        # up[i] mirrors down[i + 1]: from level i + 1 to level i; up[0] is the innermost.
        n_drop = min(3, depth - 2)
        self.up = nn.ModuleList(
            unit(nn.ConvTranspose2d(ch[-1] if i == 0 else 2 * ch[depth - 1 - i], ch[depth - 2 - i], 4, stride=2,
                                    padding=1, bias=False), ch[depth - 2 - i], snorm, noise_decoder, eval_noise,
                 True, nn.ReLU(inplace=True), dropout if 1 <= i <= n_drop else 0.0)
            for i in range(depth - 1))
        out = nn.ConvTranspose2d(2 * ch[0], 3, 4, stride=2, padding=1)
        self.out = sn(out) if snorm else out
        number_noise_layers(self)

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
    """Conditional PatchGAN: (input, image) in [-1, 1], 6 channels -> a map of scores."""

    def __init__(self, width: int, fov: int, snorm: bool, batch_norm: bool):
        super().__init__()
        n_layers, stride_1 = FOV_LAYERS[fov]
        wrap = sn if snorm else (lambda m: m)
        layers = [wrap(nn.Conv2d(6, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
        cin = width
        for i in range(1, n_layers + stride_1):  # the strided layers, then the stride-1 ones
            cout = width * min(2 ** min(i, n_layers), 8)
            layers += [wrap(nn.Conv2d(cin, cout, 4, stride=2 if i < n_layers else 1, padding=1, bias=not batch_norm)),
                       nn.BatchNorm2d(cout) if batch_norm else nn.Identity(), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        layers.append(wrap(nn.Conv2d(cin, 1, 4, stride=1, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, y], dim=1))


@register("exposure_gan")
class ExposureGAN(nn.Module):
    """The report's U-Net (or pix2pix's) + conditional PatchGAN, spectral norm, noise injection,
    LSGAN + L1 + perceptual."""

    paired = True

    def __init__(self, depth: int = 5, width: int = 16, dropout: float = 0.5, spectral_norm: bool = True,
                 noise_encoder: bool = True, noise_decoder: bool = True, fov: int = 70, d_width: int = 16,
                 d_spectral_norm: bool = True, lambda_adv: float = 1.0, lambda_l1: float = 50.0,
                 lambda_perceptual: float = 100.0, vgg_weights: str | Path | None = None,
                 adv_start_epoch: int = 0, generator: str = "unet", g_fov: int = 140, noise_eval: bool = False,
                 d_batch_norm: bool | None = None):
        super().__init__()
        for arg, value in (("depth", depth), ("width", width), ("d_width", d_width)):
            if not isinstance(value, int) or isinstance(value, bool) or value < (2 if arg == "depth" else 1):
                raise ValueError(f"{arg}: expected an integer >= {2 if arg == 'depth' else 1}, got {value!r}")
        if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        for arg, value in (("spectral_norm", spectral_norm), ("noise_encoder", noise_encoder),
                           ("noise_decoder", noise_decoder), ("d_spectral_norm", d_spectral_norm),
                           ("noise_eval", noise_eval)):
            if not isinstance(value, bool):
                raise ValueError(f"{arg}: expected true or false, got {value!r}")
        if d_batch_norm is not None and not isinstance(d_batch_norm, bool):
            raise ValueError(f"d_batch_norm: expected true, false or null, got {d_batch_norm!r}")
        if generator not in ("seed", "unet"):
            raise ValueError(f"generator: expected 'seed' or 'unet', got {generator!r}")
        if g_fov not in G_FOV_KERNELS:
            raise ValueError(f"g_fov: expected one of {sorted(G_FOV_KERNELS)}, got {g_fov!r}")
        if fov not in FOV_LAYERS:
            raise ValueError(f"fov: expected one of {sorted(FOV_LAYERS)}, got {fov!r}")
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

        if generator == "seed":
            self.generator = SeedGenerator(width, g_fov, float(dropout), noise_encoder, noise_decoder, spectral_norm,
                                           noise_eval)
        else:
            self.generator = UNetGenerator(depth, width, float(dropout), noise_encoder, noise_decoder, spectral_norm,
                                           noise_eval)
        d_bn = not d_spectral_norm if d_batch_norm is None else d_batch_norm
        self.discriminator = PatchDiscriminator(d_width, fov, d_spectral_norm, d_bn)

        # Frozen VGG19 up to the deepest perceptual layer, in a list so that it is not a submodule
        # (see the module docstring).
        self.perceptual = vgg_weights is not None and self.lambda_perceptual > 0
        self._vgg: list[nn.Module] = []
        self.vgg_layers = [conv_relu_indices("vgg19")[i] for i in PERCEPTUAL_CONVS]
        if self.perceptual:
            vgg = vgg_features("vgg19")
            load_features(vgg, vgg_weights)
            self._vgg.append(vgg[:self.vgg_layers[-1] + 1].requires_grad_(False).eval())
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
            if i in self.vgg_layers:
                feats.append(h)
        return feats

    def perceptual_loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Report eq. 5: Σ_i ‖φ_i(target) − φ_i(out)‖₁ / (W_i·H_i), averaged over the batch."""
        with torch.no_grad():
            ref = self._vgg_features(target)
        return sum((a - b).abs().sum(dim=1).mean() for a, b in zip(self._vgg_features(out), ref))

    def loss(self, batch: dict, out: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """Generator terms (unweighted) and their weighted "total" (report eq. 9)."""
        terms = {"l1": F.l1_loss(out, batch["target"])}
        total = self.lambda_l1 * terms["l1"]
        if self.perceptual:
            terms["perceptual"] = self.perceptual_loss(out, batch["target"])
            total = total + self.lambda_perceptual * terms["perceptual"]
        if self.adversarial_on(epoch):
            fake = self._score_frozen_d(batch["input"], out)
            terms["adv"] = 0.5 * (fake - REAL_LABEL).pow(2).mean()  # eq. 8
            total = total + self.lambda_adv * terms["adv"]
        terms["total"] = total
        return terms

    def d_loss(self, batch: dict, out: torch.Tensor, epoch: int) -> dict[str, torch.Tensor] | None:
        """LSGAN discriminator loss (eq. 7) on (input, target) as real and (input, out) as fake."""
        if not self.adversarial_on(epoch):
            return None
        real = self._score(batch["input"], batch["target"])
        fake = self._score(batch["input"], out.detach())
        terms = {"real": (real - REAL_LABEL).pow(2).mean(), "fake": (fake - FAKE_LABEL).pow(2).mean()}
        terms["total"] = 0.5 * (terms["real"] + terms["fake"])
        return terms

"""HDR autoencoder: VGG16 encoder + skip-connected deconvolution decoder for exposure correction.

V. W. F. Chung, R. Aggarwal, B. Bay, "Deep Learning for Exposure Normalization on Regions of Interest
in Digital Images", Stanford CS230 report, 2019 (after Eilertsen et al., "HDR image reconstruction
from a single exposure using deep CNNs", TOG 2017). Official code: github.com/BayBenj/cs230-proj,
``src/model.py``; the layers below are those of its final models' ``summary.txt``
(``src/saved_models/model_20190318-*``): 22,467,992 parameters, 9,220,480 of them frozen — the
report's figures (Fig. 2: 22,467,992 in total, 41.04 % non-trainable).

Architecture (``width`` scales every decoder channel count; width 1 is the report's):

* encoder: the 13 conv layers of VGG16 (``self.encoder`` *is* ``vgg_features("vgg16")``: its
  state_dict keys are torchvision's ``vgg16().features`` keys, so ImageNet weights load from a
  torchvision file, ``vgg_weights``). The report feeds the [0, 1] image to VGG16 as it is (the
  official ``preprocess_input`` calls are commented out); ``imagenet_norm`` normalises it first.
  ``trainable`` picks the encoder conv layers that learn: "skips" (the report's, §4.3: the last conv
  of each block, whose output feeds a skip), "all", "none" or a list of layer indices.
* latent: conv 1×1 (512) on pool5's 1/32 map (the report's "7×7×512 convolution").
* decoder: 5 stages, each a 3×3 stride-2 transposed conv (512, 512, 256, 128, 64 channels) with
  Keras 'same' padding (output exactly 2×, aligned as TensorFlow aligns it), then the skip fusion:
  concatenate the pre-pool VGG map of the mirrored block (block5_conv3 … block1_conv2) and a conv 1×1
  back to the stage's channel count. Then a conv 1×1 to 3 channels, the 6th skip (concatenate the
  input image) and a conv 1×1 to 3 channels with a sigmoid (§4.2).
* every decoder conv but the output one is followed by LeakyReLU(``slope``): 0.4 in §4.2 and in the
  official ``activation_layer`` (Fig. 2's caption says 0.3, the value of an earlier commit).
  ``batch_norm`` adds BatchNorm after every decoder conv, before its activation, where the official
  ``--enable-bn`` puts it (off in the final models: their parameter count has no BN).
* decoder init: Glorot-uniform weights, zero biases (the Keras defaults, §4.3).

Loss (§4.1 eq. 1, official ``custom_loss``): L1(out, target) + ``tv_weight`` · TV(out) with
TV = mean over pixels of ((Δx)² + (Δy)²)^(β/2) of the *output* (the report's formula writes y, the
official code takes yPred), β = 2.5 (the official exponent 1.25 is β/2); both terms are averaged over
pixels, channels and batch, as the Keras code does. Plus ``l2`` · Σ(w² + b²) over every decoder conv
but the output one (the official Keras ``l2(1e-4)`` kernel and bias regularisers).

Not from the report: inputs of any size are padded (replicate) to a multiple of 32 and cropped back
(the report trains and predicts at 224×224).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from expocorr.models.registry import register
from expocorr.models.vgg import IMAGENET_MEAN, IMAGENET_STD, load_features, vgg_features

log = logging.getLogger(__name__)

MULTIPLE = 32  # five 2× poolings
LATENT_CHANNELS = 512  # conv2d_1 in summary.txt
DECODER_CHANNELS = (512, 512, 256, 128, 64)  # conv2d_transpose_1..5 = conv2d_2..6, deepest first
VGG16_SKIP_CHANNELS = (512, 512, 256, 128, 64)  # block5_conv3, block4_conv3, block3_conv3, block2_conv2, block1_conv2
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # conv layer indices in features
VGG16_SKIP_CONVS = (2, 7, 14, 21, 28)  # official vgg16_layers_trainable = [2, 5, 9, 13, 17] (Keras layer indices)
KERAS_BN = {"momentum": 0.01, "eps": 1e-3}  # Keras BatchNormalization defaults (momentum 0.99) in PyTorch terms
TV_FLOOR = 1e-12  # squared differences are floored here so that β < 2 has a finite gradient at 0

PAPER_ARCH = {"vgg_weights": None, "trainable": "skips", "width": 1.0, "slope": 0.4, "batch_norm": False,
              "imagenet_norm": False, "beta": 2.5, "tv_weight": 1.0, "l2": 1e-4}
PAPER_PARAMS = 22_467_992  # report Fig. 2; summary.txt "Total params"
PAPER_FROZEN = 9_220_480  # summary.txt "Non-trainable params" (Fig. 2: 41.04 %)


class SameDeconv(nn.ConvTranspose2d):
    """3×3 stride-2 transposed conv with Keras 'same' padding: output 2H×2W with TensorFlow's
    alignment (PyTorch's unpadded (2H+1)×(2W+1) output without its last row and column)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return super().forward(x)[..., : 2 * h, : 2 * w]


def decoder_layer(conv: nn.Module, batch_norm: bool, act: nn.Module) -> nn.Sequential:
    """A decoder layer as the official code builds it: conv, optional BatchNorm, activation."""
    norm = [nn.BatchNorm2d(conv.out_channels, **KERAS_BN)] if batch_norm else []
    return nn.Sequential(conv, *norm, act)


def total_variation(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean of ((x[i+1,j] − x[i,j])² + (x[i,j+1] − x[i,j])²)^(β/2) over the pixels that have both
    neighbours, channels and batch (the official total_variation_loss)."""
    corner = x[..., :-1, :-1]
    squared = (x[..., 1:, :-1] - corner).square() + (x[..., :-1, 1:] - corner).square()
    return squared.clamp_min(TV_FLOOR).pow(beta / 2).mean()


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@register("hdr_autoencoder")
class HDRAutoencoder(nn.Module):
    """VGG16 encoder + skip-fused transposed-conv decoder (Chung, Aggarwal & Bay 2019)."""

    paired = True

    def __init__(self, vgg_weights: str | Path | None = None, trainable: str | list[int] = "all",
                 width: float = 0.125, slope: float = 0.4, batch_norm: bool = False,
                 imagenet_norm: bool = True, beta: float = 2.5, tv_weight: float = 1.0, l2: float = 1e-4):
        super().__init__()
        if vgg_weights is not None and not isinstance(vgg_weights, (str, Path)):
            raise ValueError(f"vgg_weights: expected a file path or null, got {vgg_weights!r}")
        if isinstance(trainable, str):
            if trainable not in ("all", "skips", "none"):
                raise ValueError(f"trainable: expected 'all', 'skips', 'none' or a list of VGG16 conv "
                                 f"indices {list(VGG16_CONVS)}, got {trainable!r}")
        elif not (isinstance(trainable, (list, tuple)) and all(i in VGG16_CONVS for i in trainable)):
            raise ValueError(f"trainable: list entries must be VGG16 conv layer indices "
                             f"{list(VGG16_CONVS)}, got {trainable!r}")
        if not _is_number(width) or width <= 0:
            raise ValueError(f"width: expected a number > 0, got {width!r}")
        if not _is_number(beta) or beta <= 0:
            raise ValueError(f"beta: expected a number > 0 (the TV exponent), got {beta!r}")
        for key, value in (("slope", slope), ("tv_weight", tv_weight), ("l2", l2)):
            if not _is_number(value) or value < 0:
                raise ValueError(f"{key}: expected a number >= 0, got {value!r}")
        for key, value in (("batch_norm", batch_norm), ("imagenet_norm", imagenet_norm)):
            if not isinstance(value, bool):
                raise ValueError(f"{key}: expected true or false, got {value!r}")
        self.beta, self.tv_weight, self.l2 = float(beta), float(tv_weight), float(l2)
        self.imagenet_norm = imagenet_norm

        # Encoder: torchvision's VGG16 features, key for key.
        self.encoder = vgg_features("vgg16")
        self.pretrained = vgg_weights is not None
        if self.pretrained:
            if not Path(vgg_weights).is_file():
                raise ValueError(f"vgg_weights: no such file {vgg_weights}")
            load_features(self.encoder, vgg_weights)
        else:
            log.warning("hdr_autoencoder: no vgg_weights given, the VGG16 encoder is randomly "
                        "initialised (not ImageNet-pretrained)")
        presets = {"all": VGG16_CONVS, "skips": VGG16_SKIP_CONVS, "none": ()}
        train_convs = presets[trainable] if isinstance(trainable, str) else tuple(trainable)
        for i in VGG16_CONVS:
            self.encoder[i].requires_grad_(i in train_convs)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        # Decoder, in summary.txt's order.
        def scale(channels: int) -> int:
            return max(4, round(channels * width))

        def act() -> nn.Module:
            return nn.LeakyReLU(slope, inplace=True)

        cin = scale(LATENT_CHANNELS)
        self.latent = decoder_layer(nn.Conv2d(512, cin, 1), batch_norm, act())
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for cout, cskip in zip(map(scale, DECODER_CHANNELS), VGG16_SKIP_CHANNELS):
            self.up.append(decoder_layer(SameDeconv(cin, cout), batch_norm, act()))
            self.fuse.append(decoder_layer(nn.Conv2d(cout + cskip, cout, 1), batch_norm, act()))
            cin = cout
        self.head = decoder_layer(nn.Conv2d(cin, 3, 1), batch_norm, act())
        self.out = decoder_layer(nn.Conv2d(3 + 3, 3, 1), batch_norm, nn.Sigmoid())
        for conv in self.decoder_convs(output=True):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def decoder_convs(self, output: bool) -> list[nn.Module]:
        """The decoder's conv and transposed-conv layers, top to bottom, with the output conv or not."""
        parts = [self.latent, self.up, self.fuse, self.head] + ([self.out] if output else [])
        return [m for part in parts for m in part.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % MULTIPLE, 0, -h % MULTIPLE), mode="replicate")
        skips = []  # pre-pool maps of conv blocks 1..5
        f = (x - self.mean) / self.std if self.imagenet_norm else x
        for module in self.encoder:
            if isinstance(module, nn.MaxPool2d):
                skips.append(f)
            f = module(f)
        y = self.latent(f)
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips)):
            y = fuse(torch.cat([up(y), skip], dim=1))
        y = self.out(torch.cat([self.head(y), x], dim=1))
        return y[..., :h, :w]

    def loss(self, batch: dict, out: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        l1 = F.l1_loss(out, batch["target"])
        tv = total_variation(out, self.beta)
        # The Keras l2 regularisers: kernel and bias of every decoder conv but the output one.
        l2 = sum(c.weight.square().sum() + c.bias.square().sum() for c in self.decoder_convs(output=False))
        return {"l1": l1, "tv": tv, "l2": l2, "total": l1 + self.tv_weight * tv + self.l2 * l2}

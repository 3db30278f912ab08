"""HDR autoencoder (Eilertsen et al. 2017) adapted to exposure correction.

G. Eilertsen, J. Kronander, G. Denes, R. K. Mantiuk, J. Unger, "HDR image reconstruction from a
single exposure using deep CNNs", ACM TOG (SIGGRAPH Asia) 2017 — as adapted to exposure
correction in a student report: the same U-shaped autoencoder maps a badly exposed sRGB image to
the well-exposed one.

Architecture (`width` scales the decoder; width 1 gives the paper's channel counts):

* encoder: the 13 conv layers of VGG16 (``self.encoder`` *is* ``vgg_features("vgg16")``, so its
  state_dict keys are torchvision's ``vgg16().features`` keys and ImageNet weights load from a
  torchvision file, ``vgg_weights``); the input is ImageNet-normalised first. ``trainable`` picks
  which encoder conv layers learn: "all", "none", "skips" (only the last conv of each block, the
  one whose output feeds a skip connection, as in the report) or a list of layer indices.
* bottleneck at 1/32: conv 3×3 (512·width) + LeakyReLU on pool5's output (no BN there: a
  one-image batch of a 32-px patch is 1×1 at 1/32, where training-mode BN is undefined).
* decoder: 5 stages mirroring the VGG blocks, each bilinear ×2 upsampling, conv 3×3, BN,
  LeakyReLU(0.2); channels 512, 512, 256, 128, 64 (× width).
* skip connections, each fused like Eilertsen's: concatenate, then a 1×1 conv back to the
  decoder's channel count. Six from the encoder — pool5's output into the bottleneck's output, and
  the 5 pre-pool VGG feature maps (end of conv blocks 5..1) into decoder stages 1..5 — plus the
  input image itself into the 3-channel output conv. A sigmoid gives the image in [0, 1].

Loss: L1(out, target) + beta · TV(out) (anisotropic total variation, mean |∇| per pixel);
beta = 0.01 by default: small, it only discourages noise.

Deviations from Eilertsen et al. (what the exposure-correction task changes): no log/HDR domain
transform and no highlight-mask blending of the output with the input (the output is a display
sRGB image, not HDR radiance); bilinear upsampling + 3×3 conv instead of 4×4 transposed convs
(no checkerboard artefacts); no BN in the bottleneck (see above); the bottleneck's fusion with
pool5 is the report's sixth skip.
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
DECODER_CHANNELS = (512, 512, 256, 128, 64)  # Eilertsen's decoder, deepest stage first (width 1)
VGG16_SKIP_CHANNELS = (512, 512, 256, 128, 64)  # pre-pool VGG16 maps, conv block 5 first
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # conv layer indices in features
VGG16_SKIP_CONVS = (2, 7, 14, 21, 28)  # the last conv of each block: its output is a skip

# Paper scale: full-width decoder on ImageNet VGG16 weights. Eilertsen fine-tune the whole network;
# set vgg_weights to a torchvision VGG16 file (e.g. vgg16-397923af.pth) to use them.
PAPER_ARCH = {"vgg_weights": None, "trainable": "all", "width": 1.0, "beta": 0.01}


class ConvBNAct(nn.Sequential):
    """Conv 3×3 + BatchNorm + LeakyReLU(0.2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2, inplace=True))


class SkipFusion(nn.Module):
    """Eilertsen's skip connection: concatenate the skip, then a 1×1 conv back to `channels`."""

    def __init__(self, channels: int, skip_channels: int):
        super().__init__()
        self.fuse = nn.Conv2d(channels + skip_channels, channels, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([x, skip], dim=1))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV: mean absolute horizontal plus vertical neighbour difference."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


@register("hdr_autoencoder")
class HDRAutoencoder(nn.Module):
    """VGG16 encoder + skip-fused decoder (Eilertsen et al. 2017) for exposure correction."""

    paired = True

    def __init__(self, vgg_weights: str | Path | None = None, trainable: str | list[int] = "all",
                 width: float = 0.125, beta: float = 0.01):
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
        if not isinstance(width, (int, float)) or isinstance(width, bool) or width <= 0:
            raise ValueError(f"width: expected a number > 0, got {width!r}")
        if not isinstance(beta, (int, float)) or beta < 0:
            raise ValueError(f"beta: expected a number >= 0, got {beta!r}")
        self.beta = float(beta)

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

        # Bottleneck at 1/32, fused with pool5's output (skip 6).
        ch = [max(4, round(c * width)) for c in DECODER_CHANNELS]
        self.bottleneck = nn.Sequential(nn.Conv2d(512, ch[0], 3, padding=1), nn.LeakyReLU(0.2, inplace=True))
        self.bottleneck_skip = SkipFusion(ch[0], 512)
        # Decoder: 5 upsampling stages, each fused with the pre-pool map of the mirrored VGG block.
        self.up = nn.ModuleList()
        self.skips = nn.ModuleList()
        cin = ch[0]
        for cout, cskip in zip(ch, VGG16_SKIP_CHANNELS):
            self.up.append(ConvBNAct(cin, cout))
            self.skips.append(SkipFusion(cout, cskip))
            cin = cout
        # Output: 3 channels, fused with the input image, sigmoid.
        self.head = nn.Conv2d(cin, 3, 3, padding=1)
        self.input_skip = SkipFusion(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % MULTIPLE, 0, -h % MULTIPLE), mode="replicate")
        feats = []  # pre-pool maps of conv blocks 1..5
        f = (x - self.mean) / self.std
        for layer in self.encoder:
            if isinstance(layer, nn.MaxPool2d):
                feats.append(f)
            f = layer(f)
        y = self.bottleneck_skip(self.bottleneck(f), f)
        for up, skip, feat in zip(self.up, self.skips, reversed(feats)):
            y = up(F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False))
            y = skip(y, feat)
        y = torch.sigmoid(self.input_skip(self.head(y), x))
        return y[..., :h, :w]

    def loss(self, batch: dict, out: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        l1 = F.l1_loss(out, batch["target"])
        tv = total_variation(out)
        return {"l1": l1, "tv": tv, "total": l1 + self.beta * tv}

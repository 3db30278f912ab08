"""ExpoNet: a convolutional autoencoder with symmetric skip connections, trained with L1.

Architecture (Cai, "Image Exposure Correction with Deep Neural Network", §3.2.1, the seed report;
``PAPER_ARCH`` holds its numbers):

* encoder: 6 stride-2 convolutions (kernel 3), widths ``base × (1, 2, 4, 8, 8, 8)``, each followed
  by BatchNorm + LeakyReLU (``first_norm: false`` drops the first one's BatchNorm, as pix2pix does);
* decoder: 5 stride-2 transposed convolutions, each followed by BatchNorm, Dropout (``dropout``: one
  probability per layer, bottleneck first; the report: 0.6 on the first three, 0.3 on the last two)
  and LeakyReLU (``up_activation: relu``: ReLU, as pix2pix); after each one the encoder feature of
  the same scale is concatenated (symmetric skip connections);
* output layer: a transposed convolution back to full resolution, then a sigmoid (``color: rgb``)
  or a tanh (``color: lab``).

``upsample: resize`` replaces every transposed convolution by a resize-convolution (bilinear ×2, then a
3×3 convolution; Odena et al., "Deconvolution and checkerboard artifacts", Distill 2016): a transposed
convolution's taps overlap unevenly, and trained ones print a 2–8 px grid on real photos.

The report gives no widths, no LeakyReLU slope and no normalisation for the decoder: ``base``,
the width ratios, the slope 0.2 and the decoder's BatchNorm are pix2pix's U-Net conventions.

Loss: the report's L1 summed over the h×w×3 values of an image (§3.2.4, eq. 1) plus its L2
regularisation ``l2 × Σ w²`` over the kernels of every convolution and transposed convolution
(§3.2.1: strength 0.2, "for all layers"; biases and BatchNorm are not penalised), divided by h×w×3 so
that the ``l1`` term is the per-value mean every model logs: ``total = l1 + l2 × Σ w² / (3 h w)``.

With ``color: lab`` the network works in normalised CIELAB (``L/50 - 1``, ``a/128``, ``b/128``,
D65): the input is converted on the way in, the output back to sRGB (and clamped) on the way out, so
the model contract (sRGB in [0, 1] in and out) holds; the L1 loss is taken in the working space
(LAB or RGB). The conversions below are exact and differentiable.

The 6 stride-2 levels need H and W to be multiples of 64: inputs are reflect-padded (bottom/right)
up to the next multiple and the output is cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from expocorr.models.registry import register

MULTIPLE = 64  # 2 ** 6 stride-2 levels
WIDTHS = (1, 2, 4, 8, 8, 8)  # encoder widths in units of `base`, full → 1/64 resolution
UP_LAYERS = len(WIDTHS) - 1  # transposed convolutions before the output layer
COLORS = ("rgb", "lab")
UP_ACTIVATIONS = ("leaky_relu", "relu")
UPSAMPLES = ("transposed", "resize")
SLOPE = 0.2  # LeakyReLU slope: the report names no slope; pix2pix's

# The report's numbers (§3.2.1): kernel 3, BatchNorm on all 6 encoder layers, LeakyReLU on every
# layer but the output, dropout 0.6 / 0.3 on the first 3 / last 2 up-sampling layers, L2 strength
# 0.2; RGB is the colour space of its ExpoNet results (§4.5). `base` is not in the report: 64 is
# pix2pix's U-Net width (ngf).
PAPER_ARCH = {"base": 64, "kernel": 3, "first_norm": True, "up_activation": "leaky_relu",
              "dropout": [0.6, 0.6, 0.6, 0.3, 0.3], "l2": 0.2, "color": "rgb", "upsample": "transposed"}


# --- sRGB <-> CIELAB (D65), differentiable -----------------------------------------------------


def _xyz(x: Tensor, y: Tensor) -> Tensor:
    """CIE XYZ with Y = 1 of chromaticity (x, y)."""
    return torch.stack([x / y, torch.ones_like(x), (1 - x - y) / y], dim=-1)


# Linear sRGB -> CIE XYZ as IEC 61966-2-1 defines it: from the primaries' and the D65 white's
# chromaticities, scaled so that RGB (1, 1, 1) is the white exactly (so it has a = b = 0).
SRGB_PRIMARIES = torch.tensor([[0.64, 0.33], [0.30, 0.60], [0.15, 0.06]], dtype=torch.float64)  # R, G, B
D65 = _xyz(torch.tensor(0.3127, dtype=torch.float64), torch.tensor(0.3290, dtype=torch.float64))
_primaries = _xyz(*SRGB_PRIMARIES.unbind(1)).T  # columns: XYZ of R, G, B
XYZ_FROM_RGB = _primaries * torch.linalg.solve(_primaries, D65)
RGB_FROM_XYZ = torch.linalg.inv(XYZ_FROM_RGB)
DELTA = 6 / 29  # CIELAB's f(t) switches from linear to cube root at t = DELTA**3


def _channels(matrix: Tensor, x: Tensor) -> Tensor:
    """Apply a 3×3 colour matrix to the channel axis of B×3×H×W `x`."""
    return torch.einsum("ij,bjhw->bihw", matrix.to(x), x)


def srgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1] (B×3×H×W) -> CIELAB (L in [0, 100], a, b), D65.

    The branches are clamped to their own domain, so the unused branch of each ``torch.where``
    never produces an infinite gradient (cube root at 0, power near 0).
    """
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)
    t = _channels(XYZ_FROM_RGB, linear) / D65.to(rgb).view(1, 3, 1, 1)
    f = torch.where(t > DELTA**3, t.clamp_min(DELTA**3) ** (1 / 3), t / (3 * DELTA**2) + 4 / 29)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def lab_to_srgb(lab: Tensor) -> Tensor:
    """CIELAB (D65, B×3×H×W) -> sRGB, not clamped (out-of-gamut colours fall outside [0, 1])."""
    L, a, b = lab.unbind(1)
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=1)
    t = torch.where(f > DELTA, f.clamp_min(DELTA) ** 3, 3 * DELTA**2 * (f - 4 / 29))
    linear = _channels(RGB_FROM_XYZ, t * D65.to(lab).view(1, 3, 1, 1))
    return torch.where(
        linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp_min(0.0031308) ** (1 / 2.4) - 0.055
    )


_LAB_SCALE = (50.0, 128.0, 128.0)  # L/100*2-1 = L/50 - 1; a/128; b/128
_LAB_SHIFT = (1.0, 0.0, 0.0)


def to_working(rgb: Tensor, color: str) -> Tensor:
    """sRGB in [0, 1] -> the network's working space (RGB itself, or normalised LAB in ~[-1, 1])."""
    if color == "rgb":
        return rgb
    scale = rgb.new_tensor(_LAB_SCALE).view(1, 3, 1, 1)
    shift = rgb.new_tensor(_LAB_SHIFT).view(1, 3, 1, 1)
    return srgb_to_lab(rgb) / scale - shift


def from_working(y: Tensor, color: str) -> Tensor:
    """Working space -> sRGB clamped to [0, 1]."""
    if color == "lab":
        scale = y.new_tensor(_LAB_SCALE).view(1, 3, 1, 1)
        shift = y.new_tensor(_LAB_SHIFT).view(1, 3, 1, 1)
        y = lab_to_srgb((y + shift) * scale)
    return y.clamp(0.0, 1.0)


# --- shared plumbing ---------------------------------------------------------------------------


def check_input(x: Tensor) -> None:
    """ValueError unless `x` is a B×3×H×W batch."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a B×3×H×W image batch, got shape {tuple(x.shape)}")


def pad_to_multiple(x: Tensor, multiple: int = MULTIPLE) -> Tensor:
    """Pad bottom/right up to multiples of `multiple`: reflect, or replicate where the image is
    too small to reflect (reflect needs the pad to be smaller than the side)."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def check_arch(base: int, kernel: int, first_norm: bool, up_activation: str, dropout: Sequence[float],
               l2: float, color: str, upsample: str = "transposed") -> None:
    """ValueError naming the first bad ExpoNet argument."""
    if isinstance(base, bool) or not isinstance(base, int) or base < 1:
        raise ValueError(f"base must be a positive integer, got {base!r}")
    if not isinstance(kernel, int) or kernel not in (3, 4):
        raise ValueError(f"kernel must be 3 or 4, got {kernel!r}")
    if not isinstance(first_norm, bool):
        raise ValueError(f"first_norm must be true or false, got {first_norm!r}")
    if up_activation not in UP_ACTIVATIONS:
        raise ValueError(f"up_activation must be one of {', '.join(UP_ACTIVATIONS)}, got {up_activation!r}")
    if (not isinstance(dropout, Sequence) or isinstance(dropout, str) or len(dropout) != UP_LAYERS
            or any(isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1 for p in dropout)):
        raise ValueError(f"dropout must be {UP_LAYERS} probabilities in [0, 1) (bottleneck first), got {dropout!r}")
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 >= 0:
        raise ValueError(f"l2 must be a number >= 0, got {l2!r}")
    if color not in COLORS:
        raise ValueError(f"color must be one of {', '.join(COLORS)}, got {color!r}")
    if upsample not in UPSAMPLES:
        raise ValueError(f"upsample must be one of {', '.join(UPSAMPLES)}, got {upsample!r}")


def l2_penalty(module: nn.Module, l2: float, target: Tensor) -> Tensor:
    """``l2 × Σ w²`` over every (transposed) convolution kernel of `module`, divided by the number of
    values of one `target` image (3 h w): the report's L2 term next to an L1 taken as a mean."""
    kernels = [m.weight for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    return l2 * torch.stack([w.float().pow(2).sum() for w in kernels]).sum() / target[0].numel()


# --- the network -------------------------------------------------------------------------------


def down(cin: int, cout: int, kernel: int, norm: bool) -> nn.Sequential:
    """Stride-2 convolution (halves H and W) [+ BatchNorm] + LeakyReLU."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride=2, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(SLOPE))
    return nn.Sequential(*layers)


def upsampling(cin: int, cout: int, kernel: int, upsample: str, bias: bool) -> nn.Module:
    """Doubles H and W: a stride-2 transposed convolution, or (``resize``) bilinear ×2 then a 3×3 convolution."""
    if upsample == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                             nn.Conv2d(cin, cout, 3, padding=1, bias=bias))
    return nn.ConvTranspose2d(cin, cout, kernel, stride=2, padding=1, output_padding=kernel % 2, bias=bias)


def up(cin: int, cout: int, kernel: int, dropout: float, activation: str, upsample: str) -> nn.Sequential:
    """`upsampling` (doubles H and W) + BatchNorm [+ Dropout] + LeakyReLU or ReLU."""
    layers: list[nn.Module] = [upsampling(cin, cout, kernel, upsample, bias=False), nn.BatchNorm2d(cout)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.LeakyReLU(SLOPE) if activation == "leaky_relu" else nn.ReLU())
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """ExpoNet's body, on working-space tensors whose H and W are multiples of 64.

    ``bridge`` and ``bypass`` are the two extras ExpoNetDouble's networks use: ``bridge`` widens
    every skip concatenation by another network's encoder feature of the same scale; ``bypass``
    concatenates a full-resolution image (3 channels) before the output layer. A full-resolution
    tensor cannot enter the output layer proper (a transposed convolution *from* half resolution),
    so with ``bypass`` the transposed convolution emits ``base`` feature maps (+ BatchNorm +
    activation) and a 3×3 convolution over [features, image] is the output layer.
    """

    def __init__(self, base: int, kernel: int, first_norm: bool, up_activation: str, dropout: Sequence[float],
                 color: str, upsample: str = "transposed", bridge: bool = False, bypass: bool = False):
        super().__init__()
        widths = [base * m for m in WIDTHS]
        self.encoder = nn.ModuleList(
            down(cin, cout, kernel, norm=first_norm or i > 0)
            for i, (cin, cout) in enumerate(zip([3] + widths[:-1], widths))
        )
        skips = 3 if bridge else 2  # channels after a concat, in units of the decoder output width
        self.decoder = nn.ModuleList()
        cin = widths[-1]
        for p, cout in zip(dropout, reversed(widths[:-1])):  # 8b, 8b, 4b, 2b, b: 1/32 → 1/2 resolution
            self.decoder.append(up(cin, cout, kernel, p, up_activation, upsample))
            cin = skips * cout
        if bypass:
            self.head_up = up(cin, base, kernel, 0.0, up_activation, upsample)
            self.head = nn.Conv2d(base + 3, 3, 3, padding=1)
        else:
            self.head_up = None
            self.head = upsampling(cin, 3, kernel, upsample, bias=True)
        self.activation = nn.Sigmoid() if color == "rgb" else nn.Tanh()
        self.bridge, self.bypass = bridge, bypass

    def encode(self, x: Tensor) -> list[Tensor]:
        """Encoder features, 1/2 → 1/64 resolution."""
        features = []
        for layer in self.encoder:
            x = layer(x)
            features.append(x)
        return features

    def decode(self, features: list[Tensor], bridge: list[Tensor] | None = None,
               image: Tensor | None = None) -> Tensor:
        """Working-space image from encoder `features` (+ `bridge` features, + bypass `image`)."""
        if (bridge is None) == self.bridge or (image is None) == self.bypass:
            raise ValueError("decode: pass bridge features iff built with bridge, image iff built with bypass")
        x = features[-1]
        for i, layer in enumerate(self.decoder):
            level = -2 - i  # the encoder feature at this decoder layer's output scale
            x = torch.cat([layer(x), features[level]] + ([bridge[level]] if bridge is not None else []), dim=1)
        if image is not None:
            x = torch.cat([self.head_up(x), image], dim=1)
        return self.activation(self.head(x))


@register("exponet")
class ExpoNet(nn.Module):
    """ExpoNet on sRGB in [0, 1], any size; L1 loss in the working colour space (+ L2 on the kernels).

    Args:
        base: width of the first encoder layer (the others are 2, 4, 8, 8, 8 times it).
        kernel: convolution kernel size, 3 (the report) or 4 (pix2pix).
        first_norm: BatchNorm after the first encoder convolution too (the report) or not (pix2pix).
        up_activation: "leaky_relu" (the report) or "relu" (pix2pix) after each decoder layer.
        dropout: dropout probability of each of the 5 decoder layers, from the bottleneck up.
        l2: strength of the L2 penalty on the convolution kernels (0: off), relative to eq. 1's L1.
        color: "rgb" (sigmoid output) or "lab" (normalised CIELAB, tanh output).
        upsample: "transposed" (the report's transposed convolutions) or "resize" (resize-convolutions).
    """

    paired = True

    def __init__(self, base: int = 8, kernel: int = 3, first_norm: bool = True, up_activation: str = "leaky_relu",
                 dropout: Sequence[float] = (0.6, 0.6, 0.6, 0.3, 0.3), l2: float = 0.2, color: str = "rgb",
                 upsample: str = "transposed"):
        super().__init__()
        check_arch(base, kernel, first_norm, up_activation, dropout, l2, color, upsample)
        self.color, self.l2 = color, float(l2)
        self.net = UNet(base, kernel, first_norm, up_activation, dropout, color, upsample)
        self._last: tuple[Tensor, Tensor] | None = None  # (output, its working-space form) for loss()

    def forward(self, x: Tensor) -> Tensor:
        check_input(x)
        h, w = x.shape[-2:]
        y = self.net.decode(self.net.encode(pad_to_multiple(to_working(x, self.color))))[..., :h, :w]
        out = from_working(y, self.color)
        self._last = (out, y)
        return out

    def __getstate__(self) -> dict:
        """Copies and pickles (copy.deepcopy, torch.save) leave out the last step's tensors."""
        return {**self.__dict__, "_last": None}

    def working(self, out: Tensor) -> Tensor:
        """`out` in the working space: the pre-clamp network output when `out` is the last forward's
        result (keeps gradients for out-of-gamut LAB values), else a conversion of `out`."""
        if self._last is not None and self._last[0] is out:
            return self._last[1]
        return to_working(out, self.color)

    def loss(self, batch: dict, out: Tensor, epoch: int) -> dict[str, Tensor]:
        terms = {"l1": F.l1_loss(self.working(out), to_working(batch["target"], self.color))}
        if self.l2 > 0:
            terms["l2"] = l2_penalty(self, self.l2, batch["target"])
        terms["total"] = sum(terms.values())
        return terms

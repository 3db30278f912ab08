"""Zero-DCE: zero-reference deep curve estimation (Guo et al., CVPR 2020).

DCE-Net, a plain 7-layer CNN (3×3 convolutions, stride 1, ReLU, symmetric skip concatenations),
predicts per pixel `iterations` (8) RGB curve maps A_n in [-1, 1] (tanh); the image is enhanced by
iterating the quadratic light-enhancement curve

    LE(x) = x + A_n · (x² − x)        (the official code's form; the paper's α_n is −A_n)

which keeps [0, 1] in [0, 1] and is monotonic for |A_n| ≤ 1. Training needs no reference: four
losses on the input and the enhanced image only (spatial consistency, exposure control, colour
constancy, illumination smoothness of the curve maps), transcribed from the official Myloss.py,
with the official weights 1 / 10 / 5 / 200.

The layer names (``e_conv1`` … ``e_conv7``), their order of concatenation and the initialisation
N(0, 0.02) of the convolution weights follow the official code (Li-Chongyi/Zero-DCE, model.py and
lowlight_train.py), so its ``Epoch99.pth`` state_dict loads strictly and gives the official forward
bit for bit (tests/test_model_zerodce.py). 79,416 parameters at the paper's width 32. Fully
convolutional: any H×W works without padding.

The losses are plain functions so Zero-DCE++ (``zerodce_pp.py``) uses the same ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from expocorr.models.registry import register

PAPER_ARCH = {"width": 32, "iterations": 8}
PAPER_PARAMS = 79_416  # stated in the paper; the official enhance_net_nopool has exactly these

# Official training weights (lowlight_train.py): 200·TV + 1·spa + 5·col + 10·exp, E = 0.6.
LOSS_DEFAULTS = {
    "w_spa": 1.0, "w_exp": 10.0, "w_col": 5.0, "w_tv": 200.0,
    "exposure_level": 0.6, "exposure_patch": 16,
}


# --------------------------------------------------------------------------- curves


def apply_curves(x: Tensor, curves: Iterable[Tensor]) -> Tensor:
    """Iterate LE(x) = x + A·(x² − x) once per 3-channel curve map A (each B×3×H×W)."""
    for a in curves:
        x = x + a * (x * x - x)
    return x


# --------------------------------------------------------------------------- losses


def _pool(x: Tensor, patch: int) -> Tensor:
    """Non-overlapping average pooling of the channel mean (remainder rows/columns dropped, as
    nn.AvgPool2d does); the window shrinks to the image for images smaller than `patch`."""
    return F.avg_pool2d(x.mean(1, keepdim=True), min(patch, x.shape[-2], x.shape[-1]))


# left, right, up, down: a region minus its neighbour (zero padding at the border).
_NEIGHBOUR_KERNELS = torch.tensor([
    [[0, 0, 0], [-1, 1, 0], [0, 0, 0]],
    [[0, 0, 0], [0, 1, -1], [0, 0, 0]],
    [[0, -1, 0], [0, 1, 0], [0, 0, 0]],
    [[0, 0, 0], [0, 1, 0], [0, -1, 0]],
], dtype=torch.float32).unsqueeze(1)


def spatial_consistency_loss(enhanced: Tensor, inp: Tensor, patch: int = 4) -> Tensor:
    """L_spa: the differences of each 4×4 region's mean to its 4 neighbours are kept.

    Mean over regions of Σ_neighbours (ΔY_enhanced − ΔY_input)², Y the channel mean.
    """

    def neighbour_differences(img: Tensor) -> Tensor:
        pooled = _pool(img, patch)
        return F.conv2d(pooled, _NEIGHBOUR_KERNELS.to(pooled), padding=1)

    return (neighbour_differences(enhanced) - neighbour_differences(inp)).pow(2).sum(1).mean()


def exposure_control_loss(enhanced: Tensor, level: float = 0.6, patch: int = 16) -> Tensor:
    """L_exp: mean over 16×16 regions of (region mean of the channel-mean image − E)²."""
    return (_pool(enhanced, patch) - level).pow(2).mean()


def color_constancy_loss(enhanced: Tensor) -> Tensor:
    """L_col (gray-world): sqrt(D_rg² + D_rb² + D_gb²) with D_pq = (mean_p − mean_q)², batch mean.

    The sum is floored at 1e-24 before the square root: the official code returns NaN gradients
    for an exactly gray image (d sqrt/ds at 0); the value changes by at most 1e-12.
    """
    mr, mg, mb = enhanced.mean((2, 3)).unbind(1)
    d = torch.stack([(mr - mg) ** 2, (mr - mb) ** 2, (mb - mg) ** 2], 1)
    return d.pow(2).sum(1).clamp_min(1e-24).sqrt().mean()


def illumination_smoothness_loss(curves: Tensor) -> Tensor:
    """L_TV of the curve maps, normalised as the official L_TV: 2·(Σ Δ_h²/count_h + Σ Δ_w²/count_w)/B,
    the sums over all channels (maps) and pixels, count_h = (H−1)·W, count_w = H·(W−1)."""
    b, _, h, w = curves.shape
    tv_h = (curves[:, :, 1:, :] - curves[:, :, :-1, :]).pow(2).sum() / max((h - 1) * w, 1)
    tv_w = (curves[:, :, :, 1:] - curves[:, :, :, :-1]).pow(2).sum() / max(h * (w - 1), 1)
    return 2 * (tv_h + tv_w) / b


def zero_reference_loss(inp: Tensor, enhanced: Tensor, curves: Tensor, w: dict) -> dict[str, Tensor]:
    """The four weighted terms ("spa", "exp", "col", "tv": each already times its weight) and their
    sum "total". `w` holds the keys of LOSS_DEFAULTS."""
    terms = {
        "spa": w["w_spa"] * spatial_consistency_loss(enhanced, inp),
        "exp": w["w_exp"] * exposure_control_loss(enhanced, w["exposure_level"], w["exposure_patch"]),
        "col": w["w_col"] * color_constancy_loss(enhanced),
        "tv": w["w_tv"] * illumination_smoothness_loss(curves),
    }
    terms["total"] = sum(terms.values())
    return terms


# --------------------------------------------------------------------------- argument checks


def check_input(x: Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"need a B×3×H×W image batch, got shape {tuple(x.shape)}")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive_int(name: str, value) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ValueError(f"{name}: need an integer >= 1, got {value!r}")


def loss_weights(**kw) -> dict:
    """LOSS_DEFAULTS updated by `kw`, validated (the arch params shared by Zero-DCE and Zero-DCE++)."""
    unknown = sorted(set(kw) - set(LOSS_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown arch params {unknown}")
    w = {**LOSS_DEFAULTS, **kw}
    for key in ("w_spa", "w_exp", "w_col", "w_tv"):
        if not (is_number(w[key]) and math.isfinite(w[key]) and w[key] >= 0):
            raise ValueError(f"{key}: need a finite number >= 0, got {w[key]!r}")
    if not (is_number(w["exposure_level"]) and 0 < w["exposure_level"] < 1):
        raise ValueError(f"exposure_level: need a number in (0, 1), got {w['exposure_level']!r}")
    check_positive_int("exposure_patch", w["exposure_patch"])
    return w


# --------------------------------------------------------------------------- model


class CurveNet(nn.Module):
    """What Zero-DCE and Zero-DCE++ share: DCE-Net's 7-layer symmetric layout (``e_conv1`` … ``e_conv7``,
    `conv(cin, cout)` each), iterated curves and the zero-reference loss. conv7 predicts one 3-channel
    curve map per iteration, or with `shared` one map for all. Subclasses say how the maps are
    estimated (`curves`)."""

    paired = False

    def __init__(self, conv, width: int, iterations: int, shared: bool, loss_kw: dict):
        super().__init__()
        check_positive_int("width", width)
        check_positive_int("iterations", iterations)
        self.loss_params = loss_weights(**loss_kw)
        self.iterations = iterations
        self.shared = shared
        f = width
        self.e_conv1 = conv(3, f)
        self.e_conv2 = conv(f, f)
        self.e_conv3 = conv(f, f)
        self.e_conv4 = conv(f, f)
        self.e_conv5 = conv(2 * f, f)
        self.e_conv6 = conv(2 * f, f)
        self.e_conv7 = conv(2 * f, 3 if shared else 3 * iterations)
        self._last: tuple[Tensor, Tensor] | None = None  # (output, curve maps) of the last forward

    def dce(self, x: Tensor) -> Tensor:
        """DCE-Net: six ReLU layers, the last three fed symmetric concatenations, then tanh(conv7)."""
        x1 = F.relu(self.e_conv1(x))
        x2 = F.relu(self.e_conv2(x1))
        x3 = F.relu(self.e_conv3(x2))
        x4 = F.relu(self.e_conv4(x3))
        x5 = F.relu(self.e_conv5(torch.cat([x3, x4], 1)))
        x6 = F.relu(self.e_conv6(torch.cat([x2, x5], 1)))
        return torch.tanh(self.e_conv7(torch.cat([x1, x6], 1)))

    def curves(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        check_input(x)
        a = self.curves(x)
        # The curves keep [0, 1]; the clamp only removes float rounding.
        out = apply_curves(x, [a] * self.iterations if self.shared else a.split(3, dim=1)).clamp(0, 1)
        if torch.is_grad_enabled():  # kept for loss(); never at inference (large curve maps)
            self._last = (out, a)
        return out

    def loss(self, batch: dict, out: Tensor, epoch: int) -> dict[str, Tensor]:
        """Zero-reference loss of `out` = self(batch["input"]); uses only the input."""
        x = batch["input"]
        last, self._last = self._last, None
        a = last[1] if last is not None and last[0] is out else self.curves(x)
        return zero_reference_loss(x, out, a, self.loss_params)


@register("zerodce")
class ZeroDCE(CurveNet):
    """DCE-Net + 8 iterated curves. `width` channels per layer; `iterations` curve maps.

    Loss arch params: `w_spa`, `w_exp`, `w_col`, `w_tv`, `exposure_level` (E), `exposure_patch`.
    """

    def __init__(self, width: int = 32, iterations: int = 8, **loss_kw):
        super().__init__(lambda cin, cout: nn.Conv2d(cin, cout, 3, 1, 1), width, iterations, False, loss_kw)
        for m in self.modules():  # official weights_init: conv weights N(0, 0.02), biases as PyTorch's
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def curves(self, x: Tensor) -> Tensor:
        """B×3·iterations×H×W curve maps in [-1, 1]."""
        return self.dce(x)

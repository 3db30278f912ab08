"""Zero-DCE++: the fast, light Zero-DCE (Li, Guo & Loy, TPAMI 2021).

Three changes to Zero-DCE (``zerodce.py``), all from the paper and the official code
(Li-Chongyi/Zero-DCE_extension, Zero-DCE++/model.py):

* every 3×3 convolution of DCE-Net becomes depthwise-separable (depthwise 3×3 + pointwise 1×1,
  each with a bias), same 7-layer symmetric layout, 32 channels: 10,561 parameters;
* conv7 predicts a single 3-channel curve map, shared by all 8 iterations of LE(x) = x + A·(x² − x);
* the curve map is estimated on the input downscaled by a scale s and upscaled back before the
  curves are applied. The official code trains at s = 1 (lowlight_train.py, ``--scale_factor 1``)
  and tests at s = 12 (lowlight_test.py) — `scale_factor` and `inference_scale` here.

Resampling as the official code: down with ``F.interpolate(x, scale_factor=1/s, mode="bilinear")``
(half-pixel centres, floor(H/s) × floor(W/s)), up with ``nn.UpsamplingBilinear2d(scale_factor=s)``
(aligned corners, floor(h·s) × floor(w·s)). The official test script first crops the image to
multiples of s; here the whole image goes in, the official result is what its crop gets, and the
rows and columns the crop drops (fewer than s) take the curve values of their edge.
`align_corners: false` upsamples with half-pixel centres instead.

Layer names (``e_conv{i}.depth_conv`` / ``.point_conv``) follow the official code, so its
``Epoch99.pth`` loads strictly; PyTorch's default initialisation, as there (its weights_init call is
commented out). The loss is Zero-DCE's (``zerodce.zero_reference_loss``) with the official
Zero-DCE++ weights (TV 1600), the smoothness term on the full-size curve map as officially.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from expocorr.models import zerodce
from expocorr.models.registry import register
from expocorr.models.zerodce import CurveNet, is_number

# Official training uses scale 1, its test script 12 (Zero-DCE++/lowlight_train.py, lowlight_test.py).
PAPER_ARCH = {"width": 32, "iterations": 8, "scale_factor": 1, "inference_scale": 12, "align_corners": True}
PAPER_PARAMS = 10_561  # the official enhance_net_nopool (Zero-DCE++) at width 32
# Official Zero-DCE++/lowlight_train.py: 1600·TV + 1·spa + 5·col + 10·exp, E = 0.6 (Zero-DCE: TV 200).
LOSS_DEFAULTS = {**zerodce.LOSS_DEFAULTS, "w_tv": 1600.0}


def downscale(x: Tensor, scale: float) -> Tensor:
    """`x` as the official forward feeds DCE-Net: bilinear to floor(H/s) × floor(W/s), half-pixel centres,
    source coordinates at scale s (so the result equals the official one on the image cropped to
    multiples of s). An image side shorter than s becomes 1 px."""
    if scale == 1:
        return x
    h, w = x.shape[-2:]
    if math.floor(h * (1 / scale)) >= 1 and math.floor(w * (1 / scale)) >= 1:
        return F.interpolate(x, scale_factor=1 / scale, mode="bilinear", align_corners=False)
    size = (max(1, math.floor(h * (1 / scale))), max(1, math.floor(w * (1 / scale))))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def upscale_curves(a: Tensor, size: tuple[int, int], scale: float, align_corners: bool = True) -> Tensor:
    """A curve map estimated on `downscale`'s result, back to `size` = (H, W): bilinear to
    floor(h·s) × floor(w·s) as the official ``UpsamplingBilinear2d(scale_factor=s)`` (aligned corners),
    then edge-replicated over the < s rows and columns the official crop drops."""
    if scale == 1:
        return a
    h, w = size
    covered = (min(h, math.floor(a.shape[-2] * scale)), min(w, math.floor(a.shape[-1] * scale)))
    a = F.interpolate(a, size=covered, mode="bilinear", align_corners=align_corners)
    if covered != (h, w):
        a = F.pad(a, (0, w - covered[1], 0, h - covered[0]), mode="replicate")
    return a


def check_scale(name: str, value, auto: bool = False) -> None:
    if not ((is_number(value) and value >= 1) or (auto and value == "auto")):
        raise ValueError(f"{name}: need a number >= 1{' or auto' if auto else ''}, got {value!r}")


class SeparableConv(nn.Module):
    """Depthwise 3×3 then pointwise 1×1 convolution, both with bias (official CSDN_Tem)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depth_conv = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin)
        self.point_conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.point_conv(self.depth_conv(x))


@register("zerodce_pp")
class ZeroDCEpp(CurveNet):
    """Separable DCE-Net estimating one curve map at 1/scale resolution, applied `iterations` times.

    `scale_factor`: the scale of the forward pass (training and validation; official training: 1).
    `inference_scale`: the scale full-resolution inference uses (`expocorr.inference.run_model`):
    12 as the official test script for every image, or ``auto`` (1 up to 512 px, then long side / 100,
    at most 12). `align_corners`: the curve-map upsampling (official: True).
    Loss arch params as Zero-DCE's, defaults of the official Zero-DCE++ script: `w_spa` 1, `w_exp` 10,
    `w_col` 5, `w_tv` 1600, `exposure_level` 0.6, `exposure_patch` 16.
    """

    def __init__(self, width: int = 32, iterations: int = 8, scale_factor: float = 1,
                 inference_scale: float | str = 12, align_corners: bool = True, **loss_kw):
        check_scale("scale_factor", scale_factor)
        check_scale("inference_scale", inference_scale, auto=True)
        if not isinstance(align_corners, bool):
            raise ValueError(f"align_corners: need true or false, got {align_corners!r}")
        super().__init__(SeparableConv, width, iterations, True, {**LOSS_DEFAULTS, **loss_kw})
        self.scale_factor = scale_factor
        self.inference_scale = inference_scale
        self.align_corners = align_corners

    def curves(self, x: Tensor, scale: float | None = None) -> Tensor:
        """B×3×H×W curve map in [-1, 1], estimated at 1/scale resolution (default: `scale_factor`)."""
        scale = self.scale_factor if scale is None else scale
        return upscale_curves(self.dce(downscale(x, scale)), x.shape[-2:], scale, self.align_corners)

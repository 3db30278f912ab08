"""Zero-DCE++: the fast, light Zero-DCE (Li, Guo & Loy, TPAMI 2021).

Three changes to Zero-DCE (``zerodce.py``), all from the paper and the official code
(Li-Chongyi/Zero-DCE_extension, Zero-DCE++/model.py):

* every 3×3 convolution of DCE-Net becomes depthwise-separable (depthwise 3×3 + pointwise 1×1,
  each with a bias), same 7-layer symmetric layout, 32 channels: 10,561 parameters;
* conv7 predicts a single 3-channel curve map, shared by all 8 iterations of LE(x) = x + A·(x² − x);
* the curve map is estimated on the input downscaled by `scale_factor` (bilinear) and upscaled
  back to the input size (bilinear) before the curves are applied. The paper trains at
  scale_factor 1 and runs large images at 12.

Layer names (``e_conv{i}.depth_conv`` / ``.point_conv``) follow the official code, so its
``Epoch99.pth`` loads; PyTorch's default initialisation, as there. The loss is Zero-DCE's
(``zerodce.zero_reference_loss``), the smoothness term on the full-size curve map as officially.
Any H×W works: the resampling goes to and from exact sizes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from expocorr.models.registry import register
from expocorr.models.zerodce import CurveNet, is_number

PAPER_ARCH = {"width": 32, "iterations": 8, "scale_factor": 1}  # training; inference on large images: 12
PAPER_PARAMS = 10_561  # the official enhance_net_nopool (Zero-DCE++) at width 32


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
    """Separable DCE-Net estimating one curve map at 1/scale_factor resolution, applied `iterations` times.

    Loss arch params as Zero-DCE: `w_spa` 1, `w_exp` 10, `w_col` 5, `w_tv` 200, `exposure_level` 0.6,
    `exposure_patch` 16. (The official Zero-DCE++ training script uses w_tv = 1600; the defaults are
    Zero-DCE's official weights.)
    """

    def __init__(self, width: int = 32, iterations: int = 8, scale_factor: float = 1, **loss_kw):
        if not (is_number(scale_factor) and scale_factor >= 1):
            raise ValueError(f"scale_factor: need a number >= 1, got {scale_factor!r}")
        super().__init__(SeparableConv, width, iterations, True, loss_kw)
        self.scale_factor = scale_factor

    def curves(self, x: Tensor) -> Tensor:
        """B×3×H×W curve map in [-1, 1], estimated at 1/scale_factor resolution."""
        h, w = x.shape[-2:]
        if self.scale_factor != 1:
            # Official: F.interpolate(x, scale_factor=1/s, mode="bilinear") -> floor(H/s) × floor(W/s).
            size = (max(1, int(h / self.scale_factor)), max(1, int(w / self.scale_factor)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        a = self.dce(x)
        if a.shape[-2:] != (h, w):
            # Back to exactly H×W (the official UpsamplingBilinear2d(scale_factor) needs H, W divisible
            # by s and aligns corners; half-pixel alignment here matches the downscale).
            a = F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False)
        return a

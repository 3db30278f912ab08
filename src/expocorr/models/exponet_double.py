"""ExpoNetDouble: two ExpoNets back to back, the second refining the first's output.

The seed report (§3.2.2, §3.2.3, §4.3, §4.4, Figure 1):

* The first network maps the (working-space) input to an intermediate image; the second network
  takes that image as its input.
* ``bridge`` (bridge skip connection): the first network's encoder features are concatenated into
  the second network's decoder at the same scale, next to the second network's own skip features.
* ``bypass`` (input skip connection): the original (working-space) input is concatenated to the
  output of both decoders before their output layers. A full-resolution image cannot enter
  ExpoNet's output layer proper (a transposed convolution from half resolution), so with ``bypass``
  that transposed convolution emits ``base`` feature maps and a 3×3 convolution over [features,
  input] becomes the output layer (see ``exponet.UNet``); the report does not say how it matched
  the resolutions.

Layers, options, colour spaces (``color: rgb | lab``), padding to multiples of 64 and the L2 penalty
(over the kernels of both networks) are ExpoNet's (`expocorr.models.exponet`). Loss: L1 on the final
output in the working space (the report's only loss), plus ``aux_weight`` × L1 on the intermediate
output (an expocorr option, off by default).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from expocorr.models.exponet import (
    PAPER_ARCH as EXPONET_PAPER_ARCH,
    UNet,
    check_arch,
    check_input,
    from_working,
    l2_penalty,
    pad_to_multiple,
    to_working,
)
from expocorr.models.registry import register

# ExpoNet's numbers, both extra skips on (Table 1's "Base"), no auxiliary loss (§3.2.4: L1 only), and
# LAB: the colour space of the report's best ExpoNetDouble (§4.2, §5.1).
PAPER_ARCH = EXPONET_PAPER_ARCH | {"color": "lab", "bridge": True, "bypass": True, "aux_weight": 0.0}


@register("exponet_double")
class ExpoNetDouble(nn.Module):
    """Two ExpoNets in sequence with bridge skips and input bypass, on sRGB in [0, 1], any size.

    Args:
        base, kernel, first_norm, up_activation, dropout, l2, color, upsample: as for ExpoNet (both networks alike).
        bridge: concatenate the first network's encoder features into the second's decoder.
        bypass: concatenate the original input before each network's output layer.
        aux_weight: weight of the L1 on the first network's (intermediate) output; 0 turns it off.
    """

    paired = True

    def __init__(self, base: int = 8, kernel: int = 3, first_norm: bool = True, up_activation: str = "leaky_relu",
                 dropout: Sequence[float] = (0.6, 0.6, 0.6, 0.3, 0.3), l2: float = 0.2, color: str = "rgb",
                 upsample: str = "transposed", bridge: bool = True, bypass: bool = True, aux_weight: float = 0.0):
        super().__init__()
        check_arch(base, kernel, first_norm, up_activation, dropout, l2, color, upsample)
        if not isinstance(bridge, bool):
            raise ValueError(f"bridge must be true or false, got {bridge!r}")
        if not isinstance(bypass, bool):
            raise ValueError(f"bypass must be true or false, got {bypass!r}")
        if isinstance(aux_weight, bool) or not isinstance(aux_weight, (int, float)) or not aux_weight >= 0:
            raise ValueError(f"aux_weight must be a number >= 0, got {aux_weight!r}")
        self.color, self.bridge, self.bypass, self.aux_weight = color, bridge, bypass, float(aux_weight)
        self.l2 = float(l2)
        body = (base, kernel, first_norm, up_activation, dropout, color, upsample)
        self.first = UNet(*body, bypass=bypass)
        self.second = UNet(*body, bridge=bridge, bypass=bypass)
        self._last: tuple[Tensor, Tensor, Tensor] | None = None  # (output, final, intermediate) for loss()

    def forward(self, x: Tensor) -> Tensor:
        check_input(x)
        h, w = x.shape[-2:]
        z = pad_to_multiple(to_working(x, self.color))
        image = z if self.bypass else None
        features = self.first.encode(z)
        middle = self.first.decode(features, image=image)
        final = self.second.decode(self.second.encode(middle), bridge=features if self.bridge else None,
                                   image=image)
        final, middle = final[..., :h, :w], middle[..., :h, :w]
        out = from_working(final, self.color)
        self._last = (out, final, middle)
        return out

    def __getstate__(self) -> dict:
        """Copies and pickles (copy.deepcopy, torch.save) leave out the last step's tensors."""
        return {**self.__dict__, "_last": None}

    def loss(self, batch: dict, out: Tensor, epoch: int) -> dict[str, Tensor]:
        target = to_working(batch["target"], self.color)
        if self._last is not None and self._last[0] is out:
            _, final, middle = self._last
        else:  # `out` is not from the last forward: only the final output is known
            final, middle = to_working(out, self.color), None
        terms = {"l1": F.l1_loss(final, target)}
        if self.aux_weight > 0:
            if middle is None:
                raise ValueError("aux_weight > 0: loss() needs the output of the last forward()")
            terms["l1_intermediate"] = F.l1_loss(middle, target)
        if self.l2 > 0:
            terms["l2"] = l2_penalty(self, self.l2, batch["target"])
        terms["total"] = terms["l1"] + self.aux_weight * terms.get("l1_intermediate", 0.0) + terms.get("l2", 0.0)
        return terms

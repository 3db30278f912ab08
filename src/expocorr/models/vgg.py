"""VGG16/VGG19 feature extractors whose state_dict keys match torchvision's ``vggNN().features``.

Weights load from a local file (a torchvision checkpoint of the whole network, or of ``features``
alone); nothing is downloaded here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from expocorr.errors import printable

log = logging.getLogger(__name__)

CFGS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
# ImageNet statistics the torchvision weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg_features(arch: str) -> nn.Sequential:
    """``torchvision.models.<arch>().features`` layer for layer (Conv 3×3 pad 1, ReLU, MaxPool 2)."""
    layers: list[nn.Module] = []
    channels = 3
    for v in CFGS[arch]:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers)


def conv_relu_indices(arch: str) -> list[int]:
    """Index in ``vgg_features(arch)`` of the ReLU after each convolution, in order (16 for VGG19)."""
    out, i = [], 0
    for v in CFGS[arch]:
        if v == "M":
            i += 1
        else:
            out.append(i + 1)
            i += 2
    return out


def load_features(features: nn.Sequential, path: str | Path) -> None:
    """Load torchvision weights (whole-model or features-only state_dict) into `features`.

    Loaded with ``weights_only=True``: a file holding pickled Python objects is refused, never run.
    Every failure is a ValueError naming the file (one line).
    """
    path = Path(path)
    name = printable(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{name}: no such VGG weights file") from None
    except Exception as exc:  # torch's message for pickled objects suggests unsafe loading: not shown
        text = str(exc)
        reason = ("it holds pickled Python objects, refused for safety" if "Unsupported global" in text or
                  "GLOBAL" in text else f"not a PyTorch weights file ({type(exc).__name__})")
        raise ValueError(f"{name}: not loadable VGG weights: {reason}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"{name}: not a state_dict of VGG weights (a mapping of names to tensors)")
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    try:
        features.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())  # torch lists the missing and unexpected keys on several lines
        raise ValueError(f"{name}: not torchvision VGG features weights for this layout: {detail[:300]}") from None
    log.info("loaded VGG weights from %s", path)

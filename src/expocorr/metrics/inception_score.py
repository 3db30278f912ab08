"""Inception Score (Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016) of a SET of
images, with ImageNet Inception v3 in torchvision's layout (the GAN seed's section 3.4.2 metric).

    IS = exp( E_x KL( p(y|x) || p(y) ) ),   p(y) = E_x p(y|x),

computed as the authors' ``inception_score.py`` (github.com/openai/improved-gan) does: the images are
cut into `SPLITS` = 10 consecutive parts, the score is computed in each part (its own marginal
p(y)), and the mean and standard deviation over the parts are reported. Higher is better; the value
lies in [1, number of classes]. The score says how confidently and how diversely the network
classifies the set; nothing about any single image, nor about fidelity to a reference.

Protocol here (`InceptionScore`):

* Network: `InceptionV3`, torchvision's ``inception_v3`` module for module (BasicConv2d = conv
  without bias + BatchNorm eps 0.001 + ReLU; Mixed_5b..Mixed_7c; the auxiliary classifier is built
  only so that torchvision's checkpoint loads strictly, and is not used), in eval mode, softmax over
  its 1000 ImageNet classes. Weights: torchvision's ``inception_v3_google-0cc3c7bd.pth`` (the
  TF-slim Inception v3 ported to PyTorch), read with ``torch.load(weights_only=True)``; any other
  state_dict with exactly these keys and shapes also loads.
* Input: the uint8 RGB image as x/255 in [0, 1], resized whole to 299×299 (bilinear, half-pixel
  centres, no antialiasing — as the reference code's graph resizes, aspect ratio not kept), then
  mapped to [−1, 1] by 2x − 1: exactly what torchvision's ImageNet normalisation followed by its
  ``transform_input=True`` computes, ((x − m)/s)·(s/0.5) + (m − 0.5)/0.5 = 2x − 1.
* Splits: the images are put in a fixed pseudo-random order (``numpy.random.default_rng(0)``) before
  the split, because the test split is ordered by scene (all EVs of a scene together) whereas the
  reference code scores i.i.d. samples. With fewer images than `SPLITS`, one split of all images is
  used and the standard deviation is undefined (null). The IS of a small set is biased low (the
  reference protocol uses 50,000 images): compare scores only between sets of the same size.

Differences from Salimans et al.'s numbers, inherent and not fixable here: their code uses the 2015
TensorFlow Inception graph (1008 outputs, its own resize); torchvision's weights are the 2016 TF-slim
release with 1000 classes, so values are comparable within this pipeline, not with published IS.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import xlogy
from torch import nn

from expocorr.errors import UserError

N_CLASSES = 1000
INPUT_SIZE = 299  # torchvision inception_v3 / Salimans et al.'s graph
SPLITS = 10  # inception_score.py's default (openai/improved-gan)
SHUFFLE_SEED = 0


class InceptionWeightsError(UserError, ValueError):
    """An Inception v3 weights file that cannot be used; the message names the file and the parameter."""


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 0.001) + ReLU, torchvision's ``BasicConv2d``."""

    def __init__(self, cin: int, cout: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)),
        ], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        dbl = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            dbl = layer(dbl)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            dbl,
            self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)),
        ], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
            self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)),
        ], 1)


class InceptionAux(nn.Module):
    """The auxiliary classifier: part of the checkpoint, never run here (eval mode ignores it)."""

    def __init__(self, cin: int, n_classes: int):
        super().__init__()
        self.conv0 = BasicConv2d(cin, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.fc = nn.Linear(768, n_classes)


class InceptionV3(nn.Module):
    """torchvision's ``Inception3`` (aux_logits=True) in eval use: B×3×299×299 in [−1, 1] -> B×1000 logits."""

    def __init__(self, n_classes: int = N_CLASSES):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.AuxLogits = InceptionAux(768, n_classes)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, n_classes)

    def forward(self, x):
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                     "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"):
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(x, 1))  # dropout (p=0.5) is the identity in eval mode


def _short(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def load_inception(path, param: str = "evaluate.noref.inception_weights") -> InceptionV3:
    """`InceptionV3` in eval mode with the weights of `path` (a state_dict, loaded weights_only, strict).

    Raises `InceptionWeightsError` (one line naming the file and `param`) for a file that is not a
    PyTorch file, holds pickled objects, or whose keys or shapes differ from torchvision's layout.
    BatchNorm ``num_batches_tracked`` counters may be absent (torchvision's file has none).
    """
    where = f"{param}: {path}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only=True refuses pickled objects; anything else is not a torch file
        text = str(exc)
        reason = ("it holds pickled Python objects, refused (loaded with weights_only=True)"
                  if "Unsupported global" in text or "GLOBAL" in text else "corrupt or not a PyTorch file")
        raise InceptionWeightsError(f"{where}: not usable Inception v3 weights: {reason}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InceptionWeightsError(f"{where}: not a state_dict of tensors (torchvision inception_v3 layout)")
    model = InceptionV3()
    expected = model.state_dict()
    counters = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = set(expected) - set(state) - counters
    unexpected = set(state) - set(expected)
    if missing or unexpected:
        detail = "; ".join(part for part in (missing and f"missing {_short(missing)}",
                                             unexpected and f"unexpected {_short(unexpected)}") if part)
        raise InceptionWeightsError(f"{where}: not torchvision inception_v3 weights: {detail}")
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
             for k in state if state[k].shape != expected[k].shape]
    if wrong:
        raise InceptionWeightsError(f"{where}: wrong shapes: {_short(wrong)}")
    state = {**{k: expected[k] for k in counters if k not in state}, **state}
    model.load_state_dict(state, strict=True)
    return model.eval()


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """B×3×H×W floats in [0, 1] -> the network input: 299×299 bilinear, 2x − 1 (see the module docstring)."""
    x = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=False)
    return x * 2 - 1


def inception_score(probs: np.ndarray, splits: int = SPLITS) -> tuple[float, float]:
    """(mean, std) over `splits` consecutive parts of exp(mean KL(p(y|x) || p(y))), as Salimans et al.

    `probs` (n, classes) rows are p(y|x); a part's marginal p(y) is its mean row. Needs n >= splits.
    """
    probs = np.asarray(probs, dtype=np.float64)
    n = len(probs)
    if not 1 <= splits <= n:
        raise ValueError(f"inception_score: {n} images cannot make {splits} splits")
    scores = []
    for i in range(splits):
        part = probs[i * n // splits:(i + 1) * n // splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = (xlogy(part, part) - xlogy(part, marginal)).sum(axis=1).mean()
        scores.append(float(np.exp(kl)))
    return float(np.mean(scores)), float(np.std(scores))


class InceptionScore:
    """Accumulates p(y|x) of images one by one (`add`), then the set's score (`result`)."""

    def __init__(self, path, device: torch.device | str = "cpu", param: str = "evaluate.noref.inception_weights"):
        self.device = torch.device(device)
        self.model = load_inception(path, param).to(self.device)
        self._probs: list[np.ndarray] = []

    @torch.no_grad()
    def add(self, image: np.ndarray) -> None:
        """Classify one uint8 H×W×3 RGB image."""
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float() / 255
        logits = self.model(preprocess(x)).double()
        self._probs.append(torch.softmax(logits, dim=1)[0].cpu().numpy())

    def result(self) -> dict[str, float | int]:
        """``inception_score`` (mean over splits), ``inception_score_std`` (NaN for one split) and
        ``inception_score_splits`` over the images added; NaN score for none."""
        n = len(self._probs)
        if n == 0:
            return {"inception_score": float("nan"), "inception_score_std": float("nan"), "inception_score_splits": 0}
        probs = np.stack(self._probs)[np.random.default_rng(SHUFFLE_SEED).permutation(n)]
        splits = SPLITS if n >= SPLITS else 1
        mean, std = inception_score(probs, splits)
        return {"inception_score": mean, "inception_score_std": std if splits > 1 else float("nan"),
                "inception_score_splits": splits}

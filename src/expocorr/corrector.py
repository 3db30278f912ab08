"""A corrector as the stages run it: `Method` (a named function from float RGB to float RGB, checked and
clipped), `MethodError`, where the train stage writes a model (`model_path`) and the guided path of a
corrector on a downscaled copy (`run_guided`).

Below both `expocorr.methods` (a method by name: a baseline, or a model through `expocorr.inference`) and
`expocorr.inference` (a model as a `Method`): neither imports the other's callers.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from expocorr.errors import UserError

MODELS_DIR = Path("models")
LEARNED_KINDS = ("model", "pretrained")  # a `Method`'s kind when it learned: trained here, or a published checkpoint


class MethodError(UserError, ValueError):
    """An unknown method or an unusable model file; the message names it."""


def model_path(name: str) -> Path:
    """Where the train stage writes model `name`."""
    return MODELS_DIR / name / "model.pt"


def downscaled(rgb: np.ndarray, side: int) -> np.ndarray:
    """`rgb` resized (area) to `side` px on the long side."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def run_guided(fn, rgb: np.ndarray, side: int, device="cpu") -> np.ndarray:
    """`fn` (float RGB -> float RGB) on `rgb` downscaled to `side` px, guided-upsampled to full size on
    `device` (`expocorr.imaging.guided_upsampling`: torch, imported on use)."""
    from expocorr.imaging.guided_upsampling import guided_upsample

    small = downscaled(rgb, side)
    return guided_upsample(rgb, small, fn(small), device=device)


class Method:
    """A named corrector: `method(rgb, ctx) -> rgb` (float32 H×W×3 in [0, 1]).

    `ctx` carries what a baseline may use (`ev`, `render`, `stack`); models ignore it. `source` is what
    messages name: the model file, or the baseline. `precision`: a model's (precision, why), from
    `inference.pick_precision`; None for a baseline (NumPy / OpenCV as they are).
    """

    def __init__(self, name: str, kind: str, fn, n_parameters: int | None = None, oracle: bool = False,
                 settings: dict | None = None, source: str | None = None,
                 precision: tuple[str, str] | None = None) -> None:
        self.name, self.kind, self.fn = name, kind, fn
        self.n_parameters, self.oracle, self.settings = n_parameters, oracle, settings or {}
        self.source = source or f"{kind} {name!r}"
        self.precision = precision

    def __call__(self, rgb: np.ndarray, ctx: dict) -> np.ndarray:
        out = self.fn(rgb, ctx)
        if not (isinstance(out, np.ndarray) and out.dtype == np.float32) or np.may_share_memory(out, rgb):
            out = np.array(out, dtype=np.float32)  # a copy: never clip the caller's array in place
        # A float64 sum of float32 values cannot overflow: it is finite exactly when every value is.
        if not math.isfinite(float(out.sum(dtype=np.float64))):
            raise MethodError(f"{self.source}: gave non-finite values (NaN or infinite) on this image; refused, "
                              "no output written")
        return np.clip(out, 0.0, 1.0, out=out)  # in place: no second full-resolution copy

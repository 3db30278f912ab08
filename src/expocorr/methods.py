"""Methods by name: a trained model or a baseline as one `Method`, the corrector `evaluate` and `correct` call.

A baseline loads without torch (`load_method` imports `expocorr.inference`, and with it torch and the
models, only for a model), so evaluating a baseline starts in a fraction of the time. Baselines run as
they are up to ``BASELINE_DIRECT_MEGAPIXELS``; beyond it the ones that need float64 full-resolution
copies (``GUIDED_BASELINES``) use the guided path at ``BASELINE_GUIDED_SIDE``, so that a 24-megapixel
photo stays within 3 GB.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from expocorr.errors import UserError

MODELS_DIR = Path("models")
BASELINE_DIRECT_MEGAPIXELS = 4.0
GUIDED_BASELINES = {"ev_auto", "mertens", "inverse_synthesis"}  # float64 full-resolution copies: >3 GB at 24 MP
BASELINE_GUIDED_SIDE = 2048
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
    `device` (`expocorr.guided_upsampling`: torch, imported on use)."""
    from expocorr.guided_upsampling import guided_upsample

    small = downscaled(rgb, side)
    return guided_upsample(rgb, small, fn(small), device=device)


def run_baseline(fn, name: str, rgb: np.ndarray, ctx: dict) -> np.ndarray:
    """A baseline at full resolution: as it is, or guided from BASELINE_GUIDED_SIDE for the memory-hungry
    ones on photos above BASELINE_DIRECT_MEGAPIXELS."""
    h, w = rgb.shape[:2]
    if name in GUIDED_BASELINES and h * w > BASELINE_DIRECT_MEGAPIXELS * 1e6:
        return run_guided(lambda small: fn(small, ctx), rgb, BASELINE_GUIDED_SIDE)
    return fn(rgb, ctx)


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


def load_method(name: str, device="cpu", path: str | Path | None = None, checkpoint_format: str = "auto",
                precision: str = "auto") -> Method:
    """A registered baseline, or a model by name (`models/NAME/model.pt`: trained, or a published checkpoint
    of the pretrained stage), or the model file `path` (expocorr's, or an authors' official checkpoint).

    The model file must record model `name` (`inference.load_model`); for a `path` outside the train
    stage's layout (a folder not named after a model), and for a published checkpoint, `name` is not checked.
    `precision` (auto, fp32, bf16, fp16): a model's, `inference.pick_precision`; a baseline has none.
    """
    from expocorr.baselines import BASELINES

    if path is None and name in BASELINES:
        baseline = BASELINES[name]
        return Method(name, "baseline", lambda rgb, ctx: run_baseline(baseline.fn, name, rgb, ctx),
                      oracle=baseline.oracle)
    from expocorr import inference, models, plugins  # torch: only for a model

    plugins.load_entry_points()  # plugin models of train.plugins are imported with the params file
    if path is None and name not in models.MODELS and not model_path(name).exists():
        known = sorted(models.MODELS) + sorted(BASELINES)
        raise MethodError(f"unknown method {name!r}; known: {', '.join(known)} (a published checkpoint: its "
                          f"{MODELS_DIR}/NAME/model.pt, which the pretrained stage writes; a plugin model: name its "
                          "module in train.plugins of the params file, or install it with an expocorr.models entry "
                          "point)")
    return inference.load_model_method(name, device, path, checkpoint_format, precision)

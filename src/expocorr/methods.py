"""Methods by name: a trained model or a baseline as one `Method` (`expocorr.corrector`, re-exported here), the
corrector `evaluate` and `correct` call.

A baseline loads without torch (`load_method` imports `expocorr.inference`, and with it torch and the
models, only for a model), so evaluating a baseline starts in a fraction of the time. Baselines run as
they are up to ``BASELINE_DIRECT_MEGAPIXELS``; beyond it the ones that need float64 full-resolution
copies (``GUIDED_BASELINES``) use the guided path at ``BASELINE_GUIDED_SIDE``, so that a 24-megapixel
photo stays within 3 GB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from expocorr.corrector import (LEARNED_KINDS, MODELS_DIR, Method, MethodError, downscaled, model_path,
                                run_guided)

__all__ = ["BASELINE_DIRECT_MEGAPIXELS", "BASELINE_GUIDED_SIDE", "GUIDED_BASELINES", "LEARNED_KINDS", "MODELS_DIR",
           "Method", "MethodError", "downscaled", "load_method", "model_path", "run_baseline", "run_guided"]

BASELINE_DIRECT_MEGAPIXELS = 4.0
GUIDED_BASELINES = {"ev_auto", "mertens", "inverse_synthesis"}  # float64 full-resolution copies: >3 GB at 24 MP
BASELINE_GUIDED_SIDE = 2048


def run_baseline(fn, name: str, rgb: np.ndarray, ctx: dict) -> np.ndarray:
    """A baseline at full resolution: as it is, or guided from BASELINE_GUIDED_SIDE for the memory-hungry
    ones on photos above BASELINE_DIRECT_MEGAPIXELS."""
    h, w = rgb.shape[:2]
    if name in GUIDED_BASELINES and h * w > BASELINE_DIRECT_MEGAPIXELS * 1e6:
        return run_guided(lambda small: fn(small, ctx), rgb, BASELINE_GUIDED_SIDE)
    return fn(rgb, ctx)


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

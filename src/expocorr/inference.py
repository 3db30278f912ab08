"""Apply a method (a trained model or a baseline) to a photo: the one code path of `evaluate` and `correct`.

Models are loaded from `models/NAME/model.pt` with ``weights_only=True``; denormal weights are
flushed to zero on load (they made Zero-DCE many times slower on CPU).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from expocorr import models
from expocorr.errors import UserError

log = logging.getLogger(__name__)

MODELS_DIR = Path("models")


class MethodError(UserError, ValueError):
    """An unknown method or an unusable model file; the message names it."""


def model_path(name: str) -> Path:
    """Where the train stage writes model `name`."""
    return MODELS_DIR / name / "model.pt"


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """`auto` picks cuda > mps > cpu; under torchrun each rank takes cuda:LOCAL_RANK."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MethodError(f"device {requested!r} asked for but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def flush_denormals(module: nn.Module) -> int:
    """Zero every subnormal float in `module`'s parameters and buffers; return how many there were."""
    count = 0
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_floating_point():
                tiny = torch.finfo(t.dtype).tiny
                mask = (t != 0) & (t.abs() < tiny)
                count += int(mask.sum())
                t[mask] = 0
    return count


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Build and load a model file written by the train stage; returns (model in eval mode, checkpoint)."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MethodError(f"{path}: no such model file (run the train stage first)") from None
    except Exception as exc:  # pickled objects are refused by weights_only=True
        raise MethodError(f"{path}: not a loadable expocorr model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(checkpoint, dict) or not {"model", "arch", "state_dict"} <= checkpoint.keys():
        raise MethodError(f"{path}: not an expocorr model file (needs model, arch and state_dict)")
    model = models.build(checkpoint["model"], checkpoint["arch"])
    model.load_state_dict(checkpoint["state_dict"])
    flushed = flush_denormals(model)
    if flushed:
        log.info("%s: flushed %d denormal weights to zero", path, flushed)
    torch.set_flush_denormal(True)
    return model.to(device).eval(), checkpoint


def parameter_count(model: nn.Module) -> int:
    """Parameters of the corrector itself (a GAN's discriminator excluded)."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("discriminator."))


@torch.no_grad()
def run_model(model: nn.Module, rgb: np.ndarray, device: torch.device) -> np.ndarray:
    """The model on one float RGB image (H×W×3 in [0, 1]) at full resolution; returns the same."""
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)).unsqueeze(0).to(device)
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=device.type == "cuda"):
        y = model(x)
    return y.float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()


class Method:
    """A named corrector: `method(rgb, ctx) -> rgb` (float32 H×W×3 in [0, 1]).

    `ctx` carries what a baseline may use (`ev`, `render`, `stack`); models ignore it.
    """

    def __init__(self, name: str, kind: str, fn, n_parameters: int | None = None, oracle: bool = False,
                 settings: dict | None = None) -> None:
        self.name, self.kind, self.fn = name, kind, fn
        self.n_parameters, self.oracle, self.settings = n_parameters, oracle, settings or {}

    def __call__(self, rgb: np.ndarray, ctx: dict) -> np.ndarray:
        return np.clip(self.fn(rgb, ctx), 0.0, 1.0).astype(np.float32)


def load_method(name: str, device: torch.device | str = "cpu", path: str | Path | None = None) -> Method:
    """A trained model (`models/NAME/model.pt`, or `path`) or a registered baseline, by name."""
    from expocorr.baselines import BASELINES

    device = torch.device(device)
    if path is not None or name in models.MODELS:
        model, checkpoint = load_model(path or model_path(name), device)
        return Method(checkpoint["model"], "model", lambda rgb, ctx: run_model(model, rgb, device),
                      n_parameters=parameter_count(model), settings=checkpoint["params"])
    if name in BASELINES:
        baseline = BASELINES[name]
        return Method(name, "baseline", baseline.fn, oracle=baseline.oracle)
    known = sorted(models.MODELS) + sorted(BASELINES)
    raise MethodError(f"unknown method {name!r}; known: {', '.join(known)}")

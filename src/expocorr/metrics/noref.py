"""No-reference scores of an output image: what is really computed, and why the rest is not.

``NoReference(cfg)`` with ``cfg = {"brisque": bool, "niqe_params": path|None, "lpips_weights":
path|None, "pi_weights": path|None, "inception_weights": path|None}`` (missing keys mean off/None;
unknown keys are an error). ``score(output_u8)`` returns one entry per name in `ALL_NAMES`: a float
when computed, else the string ``"not computed"`` (never a made-up number); ``status()`` says why
for each name; ``names`` lists the names computed as numbers.

* ``brisque`` (lower is better): the PyPI package ``brisque`` (Guha; tested with 0.2.0) and the
  SVR model it ships (``brisque/models/svm.txt``, ``normalize.pickle``), so it runs offline. Its
  ``scale_features`` fails on NumPy >= 2.x (``float()`` of a 1-element array); `_Brisque` overrides
  only that method, with the same arithmetic. This is not the authors' MATLAB BRISQUE (its own
  feature code and libsvm model, bicubic OpenCV downscaling, and scores may fall outside 0..100);
  compare scores only within this pipeline. NaN for a constant image.
* ``niqe`` (lower is better): `expocorr.metrics.niqe`, computed when ``niqe_params`` names an
  existing pristine-model file (the MATLAB release's ``modelparameters.mat``, or one made with
  `expocorr.metrics.niqe.fit_params`); needs images of at least 96×96.
* ``lpips``, ``pi`` (perceptual index, which needs Ma et al.'s model), ``inception_score``: not
  implemented. With no file, or a file that does not exist, they are ``"not computed"``; naming an
  existing weights file raises `MetricNotImplemented`, so nobody believes they were computed.
  (LPIPS is a full-reference distance and the Inception Score a set-level statistic: neither fits
  a per-image no-reference ``score`` anyway.)
"""

from __future__ import annotations

import logging
import math
from importlib import metadata
from pathlib import Path

import numpy as np

from expocorr.errors import UserError
from expocorr.metrics import niqe as niqe_module

log = logging.getLogger(__name__)

NOT_COMPUTED = "not computed"
ALL_NAMES = ("brisque", "niqe", "lpips", "pi", "inception_score")
CFG_KEYS = ("brisque", "niqe_params", "lpips_weights", "pi_weights", "inception_weights")
_UNIMPLEMENTED = {"lpips": ("lpips_weights", "LPIPS"), "pi": ("pi_weights", "the perceptual index (PI)"),
                  "inception_score": ("inception_weights", "the Inception Score")}


class MetricNotImplemented(UserError, NotImplementedError):
    """A no-reference metric was asked for (its weights file given) but expocorr cannot compute it."""


class NoReferenceConfigError(UserError, ValueError):
    """A malformed ``noref`` configuration; the message names the key."""


def _make_brisque():
    """The PyPI BRISQUE scorer with its bundled model, NumPy-2-safe feature scaling."""
    from brisque import BRISQUE

    class _Brisque(BRISQUE):
        def scale_features(self, features):  # upstream: float() of 1-element arrays fails on NumPy 2
            values = np.array([np.asarray(f, dtype=np.float64).reshape(-1)[0] for f in features])
            low = np.asarray(self.scale_params["min_"], dtype=np.float64)
            high = np.asarray(self.scale_params["max_"], dtype=np.float64)
            return -1 + 2.0 / (high - low) * (values - low)

    return _Brisque(url=False)


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"NoReference.score: need a uint8 H×W×3 RGB image, got {image.dtype} {image.shape}")
    return image


class NoReference:
    """The no-reference scores enabled by `cfg` (see the module docstring)."""

    all_names = ALL_NAMES

    def __init__(self, cfg: dict | None = None):
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(CFG_KEYS))
        if unknown:
            raise NoReferenceConfigError(f"noref: unknown key(s) {unknown}; known: {list(CFG_KEYS)}")
        if not isinstance(cfg.get("brisque", False), bool):
            raise NoReferenceConfigError(f"noref.brisque: must be true or false, got {cfg['brisque']!r}")
        self._status: dict[str, str] = {}
        self._brisque = None
        self._niqe_model: tuple[np.ndarray, np.ndarray] | None = None

        if cfg.get("brisque", False):
            try:
                self._brisque = _make_brisque()
                version = metadata.version("brisque")
                self._status["brisque"] = f"computed: PyPI brisque {version} with its bundled SVR model"
            except Exception as exc:  # ImportError, a broken libsvm build, a missing model file
                log.warning("BRISQUE disabled: %s", exc)
                self._status["brisque"] = f"{NOT_COMPUTED}: the brisque package cannot be used ({exc})"
        else:
            self._status["brisque"] = f"{NOT_COMPUTED}: disabled (noref.brisque is false)"

        path = self._path(cfg, "niqe_params", "niqe")
        if path is not None:
            self._niqe_model = niqe_module.load_params(path)
            self._status["niqe"] = f"computed: NIQE with the pristine model {path}"

        for name, (key, label) in _UNIMPLEMENTED.items():
            path = self._path(cfg, key, name)
            if path is not None:
                raise MetricNotImplemented(
                    f"noref.{key}: {path} given, but {label} is not implemented in expocorr; "
                    f"set noref.{key} to null")

    def _path(self, cfg: dict, key: str, name: str) -> Path | None:
        """The existing file named by cfg[key], else None with the reason recorded in the status."""
        value = cfg.get(key)
        if value is None or value == "":
            self._status[name] = f"{NOT_COMPUTED}: no {key} file given"
            return None
        if not isinstance(value, (str, Path)):
            raise NoReferenceConfigError(f"noref.{key}: must be a path or null, got {value!r}")
        path = Path(value)
        if not path.is_file():
            self._status[name] = f"{NOT_COMPUTED}: file {path} not found (noref.{key})"
            return None
        return path

    @property
    def names(self) -> tuple[str, ...]:
        """The metrics `score` computes as numbers, in `ALL_NAMES` order."""
        return tuple(n for n in ALL_NAMES if (n == "brisque" and self._brisque is not None)
                     or (n == "niqe" and self._niqe_model is not None))

    def status(self) -> dict[str, str]:
        """For each name in `ALL_NAMES`: "computed: …" or "not computed: <reason>"."""
        return {name: self._status[name] for name in ALL_NAMES}

    def score(self, output: np.ndarray) -> dict[str, float | str]:
        """Scores of one uint8 H×W×3 output; ``"not computed"`` for the metrics not in `names`."""
        output = _check_rgb(output)
        scores: dict[str, float | str] = {name: NOT_COMPUTED for name in ALL_NAMES}
        if self._brisque is not None:
            value = float(self._brisque.score(output))
            scores["brisque"] = value if math.isfinite(value) else float("nan")
        if self._niqe_model is not None:
            scores["niqe"] = niqe_module.niqe(output, *self._niqe_model)
        return scores

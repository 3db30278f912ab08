"""No-reference scores of the outputs: what is really computed, and why the rest is not.

``NoReference(cfg, device)`` with ``cfg = {"brisque": bool, "niqe_params": path|None, "lpips_weights":
path|None, "pi_weights": path|None, "inception_weights": path|None}`` (missing keys mean off/None;
unknown keys are an error). Per image, ``score(output_u8)`` returns one entry per name in
`PER_IMAGE_NAMES`: a float when computed, else the string ``"not computed"`` (never a made-up
number). Per set, ``add(output_u8)`` then ``result()`` give the Inception Score. ``status()`` says,
for every name in `ALL_NAMES`, "computed: …" or "not computed: <reason>"; ``names`` lists the
per-image names computed as numbers.

* ``brisque`` (lower is better): the PyPI package ``brisque`` (Guha; tested with 0.2.0) and the
  SVR model it ships (``brisque/models/svm.txt``, ``normalize.pickle``), so it runs offline. Its
  ``scale_features`` fails on NumPy >= 2.x (``float()`` of a 1-element array); `_Brisque` overrides
  only that method, with the same arithmetic. This is not the authors' MATLAB BRISQUE (its own
  feature code and libsvm model, bicubic OpenCV downscaling, and scores may fall outside 0..100);
  compare scores only within this pipeline. NaN for a constant image.
* ``niqe`` (lower is better): `expocorr.metrics.niqe`, computed when ``niqe_params`` names an
  existing pristine-model file (the MATLAB release's ``modelparameters.mat``, or one made with
  `expocorr.metrics.niqe.fit_params`) or is ``bundled``: the model shipped in the package
  (`niqe.BUNDLED_PARAMS`, fitted on the bundled photos; not the MATLAB release's, so its scores are not
  comparable to published NIQE numbers). NaN for an image smaller than 96×96 (one block).
* ``inception_score`` (higher is better, one value per set): `expocorr.metrics.inception_score`,
  computed when ``inception_weights`` names an existing torchvision Inception v3 state_dict
  (``inception_v3_google-0cc3c7bd.pth``); a file that does not load strictly is an error.
* ``pi`` (perceptual index, Blau et al. 2018: ½((10 − Ma) + NIQE)) and ``lpips``: not implemented.
  PI needs Ma et al.'s (CVIU 2017) learned score — three random-forest regressors on DCT,
  steerable-pyramid and SVD features plus a linear fusion — whose feature code and model file are
  not reproduced here; LPIPS is a full-reference distance, outside a no-reference score. Their
  status says so whatever the parameter holds; naming an existing file raises
  `MetricNotImplemented`, so nobody believes they were computed.
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
PER_IMAGE_NAMES = ("brisque", "niqe", "lpips", "pi")
SET_NAMES = ("inception_score",)
ALL_NAMES = PER_IMAGE_NAMES + SET_NAMES
CFG_KEYS = ("brisque", "niqe_params", "lpips_weights", "pi_weights", "inception_weights")
PREFIX = "evaluate.noref"
BUNDLED = "bundled"  # niqe_params: the pristine model shipped in the package
_UNIMPLEMENTED = {
    "lpips": ("lpips_weights", "LPIPS",
              "it is a full-reference distance (Zhang et al. 2018), not a no-reference score"),
    "pi": ("pi_weights", "the perceptual index (PI)",
           "PI = ½((10 − Ma) + NIQE) needs Ma et al.'s (CVIU 2017) learned score (three random-forest regressors "
           "on DCT, steerable-pyramid and SVD features, fused linearly), whose features and model file are not "
           "reproduced here"),
}


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
    """The no-reference scores enabled by `cfg` (see the module docstring); networks run on `device`."""

    all_names = ALL_NAMES
    per_image_names = PER_IMAGE_NAMES

    def __init__(self, cfg: dict | None = None, device="cpu"):
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(CFG_KEYS))
        if unknown:
            raise NoReferenceConfigError(f"{PREFIX}: unknown key(s) {unknown}; known: {list(CFG_KEYS)}")
        if not isinstance(cfg.get("brisque", False), bool):
            raise NoReferenceConfigError(f"{PREFIX}.brisque: must be true or false, got {cfg['brisque']!r}")
        self._status: dict[str, str] = {}
        self._brisque = None
        self._niqe_model: tuple[np.ndarray, np.ndarray] | None = None
        self._inception = None  # an InceptionScore when its weights are given

        for name, (key, label, why) in _UNIMPLEMENTED.items():
            value = cfg.get(key)
            if value not in (None, "") and not isinstance(value, (str, Path)):
                raise NoReferenceConfigError(f"{PREFIX}.{key}: must be a path or null, got {value!r}")
            reason = f"{label} is not implemented in expocorr: {why}"
            if value not in (None, "") and Path(value).is_file():
                raise MetricNotImplemented(f"{PREFIX}.{key}: {value} given, but {reason}; set {PREFIX}.{key} to null")
            self._status[name] = f"{NOT_COMPUTED}: {reason}"

        if cfg.get("brisque", False):
            try:
                self._brisque = _make_brisque()
                version = metadata.version("brisque")
                self._status["brisque"] = f"computed: PyPI brisque {version} with its bundled SVR model"
            except Exception as exc:  # ImportError, a broken libsvm build, a missing model file
                log.warning("BRISQUE disabled: %s", exc)
                self._status["brisque"] = f"{NOT_COMPUTED}: the brisque package cannot be used ({exc})"
        else:
            self._status["brisque"] = f"{NOT_COMPUTED}: disabled ({PREFIX}.brisque is false)"

        if cfg.get("niqe_params") == BUNDLED:
            self._niqe_model = niqe_module.load_params(niqe_module.BUNDLED_PARAMS)
            self._status["niqe"] = ("computed: NIQE with the bundled pristine model (fitted on the bundled photos; "
                                    "not the MATLAB release's model, not comparable to published NIQE numbers)")
        elif (path := self._path(cfg, "niqe_params", "niqe")) is not None:
            self._niqe_model = niqe_module.load_params(path)
            self._status["niqe"] = f"computed: NIQE with the pristine model {path}"

        path = self._path(cfg, "inception_weights", "inception_score")
        if path is not None:
            from expocorr.metrics.inception_score import SPLITS, InceptionScore  # torch: only when computed

            self._inception = InceptionScore(path, device, param=f"{PREFIX}.inception_weights")
            self._status["inception_score"] = (f"computed: Inception Score of the set ({SPLITS} splits, one "
                                               f"below {SPLITS} images), Inception v3 weights {path}")

    def _path(self, cfg: dict, key: str, name: str) -> Path | None:
        """The existing file named by cfg[key], else None with the reason recorded in the status."""
        value = cfg.get(key)
        if value is None or value == "":
            self._status[name] = f"{NOT_COMPUTED}: no {key} file given ({PREFIX}.{key} is null)"
            return None
        if not isinstance(value, (str, Path)):
            raise NoReferenceConfigError(f"{PREFIX}.{key}: must be a path or null, got {value!r}")
        path = Path(value)
        if not path.is_file():
            self._status[name] = f"{NOT_COMPUTED}: file {path} not found ({PREFIX}.{key})"
            return None
        return path

    @property
    def names(self) -> tuple[str, ...]:
        """The per-image metrics `score` computes as numbers, in `PER_IMAGE_NAMES` order."""
        return tuple(n for n in PER_IMAGE_NAMES if (n == "brisque" and self._brisque is not None)
                     or (n == "niqe" and self._niqe_model is not None))

    def status(self) -> dict[str, str]:
        """For each name in `ALL_NAMES`: "computed: …" or "not computed: <reason>"."""
        return {name: self._status[name] for name in ALL_NAMES}

    def score(self, output: np.ndarray) -> dict[str, float | str]:
        """Per-image scores of one uint8 H×W×3 output; ``"not computed"`` for the metrics not in `names`."""
        output = _check_rgb(output)
        scores: dict[str, float | str] = {name: NOT_COMPUTED for name in PER_IMAGE_NAMES}
        if self._brisque is not None:
            value = float(self._brisque.score(output))
            scores["brisque"] = value if math.isfinite(value) else float("nan")
        if self._niqe_model is not None:
            small = min(output.shape[:2]) < niqe_module.BLOCK
            scores["niqe"] = float("nan") if small else niqe_module.niqe(output, *self._niqe_model)
        return scores

    def add(self, output: np.ndarray) -> None:
        """Count one uint8 H×W×3 output into the set-level scores (a no-op when none is computed)."""
        if self._inception is not None:
            self._inception.add(_check_rgb(output))

    def result(self) -> dict[str, float | int | str]:
        """The set-level scores of the outputs added: ``inception_score`` (+ ``_std``, ``_splits``)
        when computed, else ``{"inception_score": "not computed"}``."""
        if self._inception is None:
            return {"inception_score": NOT_COMPUTED}
        return self._inception.result()

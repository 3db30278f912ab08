"""The baseline registry and the contract every classical exposure-correction baseline meets.

A baseline is a function registered by name with ``@register(name, oracle=False, needs_stack=False)``:

* ``fn(rgb, ctx) -> np.ndarray``: ``rgb`` is float32 H×W×3 RGB in [0, 1] (any H and W); the result is
  float32 H×W×3 in [0, 1], same shape. The registry checks both ends and raises ``ValueError`` naming
  the baseline when either breaks the contract.
* ``ctx`` (a dict) holds ``"ev"`` (float: the known relative EV of this input, or None when unknown),
  ``"render"`` (``params["render"]``: ``tau``, ``curve``, ``gamma``) and, for ``needs_stack`` baselines,
  ``"stack"``: a list of ``(rgb float32 in [0, 1], exposure_time_seconds)`` of one scene.
* ``oracle``: the baseline uses knowledge a real method lacks (the synthesis parameters); reports
  label it as such.
* ``needs_stack``: the baseline merges a real exposure stack and cannot run on a single photo.

A ``ctx`` a baseline cannot work with (no ``ev`` for the oracle, no ``stack``, an unknown curve) raises
``BaselineError`` (a ``UserError`` and a ``ValueError``); a broken contract raises a plain ``ValueError``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from expocorr.errors import UserError

BaselineFn = Callable[[np.ndarray, dict], np.ndarray]


@dataclass(frozen=True)
class Baseline:
    """A registered baseline: its name, its (contract-checked) function and what it relies on."""

    name: str
    fn: BaselineFn
    oracle: bool = False
    needs_stack: bool = False


BASELINES: dict[str, Baseline] = {}


class BaselineError(UserError, ValueError):
    """A baseline cannot run on this input or dataset (missing EV, no exposure stack, ...); the message says why."""


def register(name: str, oracle: bool = False, needs_stack: bool = False):
    """Function decorator: make the baseline available as ``BASELINES[name]``.

    Returns the function wrapped in the contract checks, so calling it directly and calling
    ``BASELINES[name].fn`` behave the same.
    """

    def wrap(fn: BaselineFn) -> BaselineFn:
        if name in BASELINES:
            raise ValueError(f"baseline {name!r} registered twice")
        checked = _checked(name, fn)
        BASELINES[name] = Baseline(name=name, fn=checked, oracle=oracle, needs_stack=needs_stack)
        return checked

    return wrap


def camera_curve(ctx: dict) -> tuple[str, float]:
    """The camera curve (``"srgb"`` or ``"gamma"``) and gamma the images are encoded with, from ctx["render"]."""
    try:
        r = ctx["render"]
        curve, gamma = r["curve"], float(r["gamma"])
    except (KeyError, TypeError):
        raise BaselineError('baseline ctx needs "render" (params["render"] with curve and gamma)') from None
    if curve not in ("srgb", "gamma"):
        raise BaselineError(f"render.curve: unknown camera curve {curve!r} (srgb | gamma)")
    return curve, gamma


def _check_rgb(name: str, what: str, x, shape: tuple | None = None) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 3 or x.shape[2] != 3 or not np.issubdtype(x.dtype, np.floating):
        got = f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"baseline {name!r}: {what} must be float RGB H×W×3 in [0, 1], got {got}")
    if shape is not None and x.shape != shape:
        raise ValueError(f"baseline {name!r}: {what} has shape {x.shape}, the input {shape}")
    if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
        raise ValueError(f"baseline {name!r}: {what} has values outside [0, 1] (or NaN)")


def _checked(name: str, fn: BaselineFn) -> BaselineFn:
    @functools.wraps(fn)
    def run(rgb: np.ndarray, ctx: dict) -> np.ndarray:
        _check_rgb(name, "input", rgb)
        out = fn(rgb.astype(np.float32, copy=False), ctx)
        _check_rgb(name, "output", out, rgb.shape)
        return out.astype(np.float32, copy=False)

    return run

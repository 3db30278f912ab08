"""Registered classical exposure-correction baselines (explicit imports: one broken file cannot hide
the others). See `expocorr.baselines.registry` for the contract every baseline meets."""

from expocorr.baselines import (  # noqa: F401  (imported to register each baseline)
    classical,
    fusion,
    oracle,
)
from expocorr.baselines.registry import BASELINES, Baseline, BaselineError, register

__all__ = ["BASELINES", "Baseline", "BaselineError", "register"]

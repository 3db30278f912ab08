"""Registered exposure-correction models (explicit imports: one broken file cannot hide the others)."""

from expocorr.models import (  # noqa: F401  (imported to register each model)
    exponet,
    exponet_double,
    exposure_gan,
    hdr_autoencoder,
    msec,
    zerodce,
    zerodce_pp,
)
from expocorr.models.registry import MODELS, build, register

__all__ = ["MODELS", "build", "register"]

"""expocorr: train, evaluate and compare photo exposure-correction methods on one protocol."""

__version__ = "0.1.0"

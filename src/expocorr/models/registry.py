"""The model registry and the contract every model meets.

A model is an ``nn.Module`` class registered by name with ``@register("name")``:

* ``__init__(**arch)`` takes the keyword arguments of ``params["train"][name]["arch"]``.
* ``forward(x)``: ``x`` is B×3×H×W in [0, 1], any H and W (odd sizes included); returns the
  corrected image, same shape, in [0, 1].
* ``loss(batch, out, epoch) -> dict[str, Tensor]``: named loss terms plus ``"total"`` (what the
  optimiser minimises); ``batch`` holds ``"input"`` and, for paired models, ``"target"``.
* ``paired`` (class attribute): False for models trained on inputs only (Zero-DCE).
* Adversarial models also have ``discriminator`` (an ``nn.Module``) and
  ``d_loss(batch, out, epoch) -> dict`` (with ``"total"``), or ``None`` while the
  adversarial term is off; the trainer steps the discriminator with its own optimiser.
"""

from __future__ import annotations

from torch import nn

MODELS: dict[str, type[nn.Module]] = {}


def register(name: str):
    """Class decorator: make the model buildable by `name`."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = cls
        cls.name = name
        return cls

    return wrap


def build(name: str, arch: dict) -> nn.Module:
    """Instantiate registered model `name` with its architecture params."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise KeyError(f"train.models: unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None
    return cls(**arch)

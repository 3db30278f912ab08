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

A model from outside expocorr (a plugin: README "Add a model") registers the same way, in a module
named in ``train.plugins`` or by an ``expocorr.models`` entry point (`expocorr.plugins`), and may give
``arch_schema``, the JSON schema its ``train.NAME.arch`` is validated against (the built-ins' are in
params.schema.yaml, ``$defs/arch/NAME``).
"""

from __future__ import annotations

from torch import nn

MODELS: dict[str, type[nn.Module]] = {}
ARCH_SCHEMAS: dict[str, dict] = {}  # plugin name -> JSON schema of its train.NAME.arch


def register(name: str, arch_schema: dict | None = None):
    """Class decorator: make the model buildable by `name`; `arch_schema` (plugins) validates its arch."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice ({MODELS[name].__module__} and {cls.__module__})")
        MODELS[name] = cls
        if arch_schema is not None:
            ARCH_SCHEMAS[name] = arch_schema
        cls.name = name
        return cls

    return wrap


def build(name: str, arch: dict) -> nn.Module:
    """Instantiate registered model `name` with its architecture params."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise KeyError(f"train.models: unknown model {name!r}; known: {', '.join(sorted(MODELS))} (a plugin "
                       "model: name its module in train.plugins)") from None
    return cls(**arch)

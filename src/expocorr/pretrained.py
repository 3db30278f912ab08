"""Stage `pretrained`: a published checkpoint (`pretrained.NAME`) fetched, verified and converted into
expocorr's model file models/NAME/model.pt, which the evaluate stage scores like a trained model.

A `pretrained` entry names a `preset` (PRESETS: the authors' own files, with their public URL and
sha256) and/or gives `model`, `url`, `sha256`, `format`; its own keys override the preset's (e.g. `url`
pointing at a local mirror, still checked against the preset's sha256). Formats:

* ``official``: the authors' PyTorch state_dict (Zero-DCE and Zero-DCE++: ``Epoch99.pth``), whose keys
  are expocorr's layer names; built with the architecture their test scripts run (OFFICIAL_ARCH).
* ``expocorr``: a model file written by `expocorr train` elsewhere (e.g. a colleague's run).

The model file records where it came from (``metadata.pretrained``: URL, sha256, format), so the
evaluate stage labels the method ``pretrained`` and `expocorr correct --model` takes it like any model.
torch is imported on use: `expocorr.params` validates params.yaml with `resolve`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from expocorr.errors import UserError

log = logging.getLogger(__name__)

FORMATS = ("official", "expocorr")
# The published checkpoints expocorr can score as they are (README "Published checkpoints").
PRESETS = {
    "zerodce-official": {
        "model": "zerodce",
        "url": "https://raw.githubusercontent.com/Li-Chongyi/Zero-DCE/e0f4adc54d0f23348c4a9b84acc08fe8778d5bfd/"
               "Zero-DCE_code/snapshots/Epoch99.pth",
        "sha256": "a4395acb874f320375d9704997cef874eaaaaa26a1777ceb29a92b70f74c3612",
        "format": "official",
    },
    "zerodce_pp-official": {
        "model": "zerodce_pp",
        "url": "https://raw.githubusercontent.com/Li-Chongyi/Zero-DCE_extension/"
               "09f202b690f82da939b8e6ec8535960ae97ad8bd/Zero-DCE++/snapshots_Zero_DCE++/Epoch99.pth",
        "sha256": "ca8855b90df9a80fa4195a831f33d3476b1964f787eb70602797c773067f3b84",
        "format": "official",
    },
}
# Models whose authors' state_dict loads into expocorr's model as it is, and the architecture their test
# scripts run it with (models/zerodce.py, models/zerodce_pp.py: PAPER_ARCH; Zero-DCE++ at scale 12).
OFFICIAL_MODELS = ("zerodce", "zerodce_pp")


class PretrainedError(UserError, ValueError):
    """A checkpoint that cannot be fetched or converted; the message names the file or the parameter."""


def resolve(name: str, entry: dict) -> dict:
    """`pretrained.NAME` with its preset filled in: model, url, sha256 (or None), format."""
    spec = {"sha256": None, "format": "expocorr", **PRESETS.get(entry.get("preset") or "", {})}
    spec.update({k: v for k, v in entry.items() if k != "preset" and v is not None})
    for key in ("model", "url"):
        if not spec.get(key):
            raise PretrainedError(f"pretrained.{name}.{key}: missing (give it, or a preset: "
                                  f"{', '.join(PRESETS)})")
    if spec["format"] == "official" and spec["model"] not in OFFICIAL_MODELS:
        raise PretrainedError(f"pretrained.{name}.model: {spec['model']!r} has no official format; "
                              f"format official is known for {', '.join(OFFICIAL_MODELS)}")
    return spec


def official_arch(model: str) -> dict:
    """The architecture an official checkpoint of `model` is run with (its PAPER_ARCH)."""
    from expocorr.models import zerodce, zerodce_pp

    return dict({"zerodce": zerodce.PAPER_ARCH, "zerodce_pp": zerodce_pp.PAPER_ARCH}[model])


def _tensors(state: object, file: str) -> dict:
    """The state_dict of an authors' file: the dict of tensors itself, or under ``state_dict``;
    ``module.`` prefixes (nn.DataParallel) removed."""
    import torch

    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise PretrainedError(f"{file}: not a state_dict (a mapping of parameter names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def detect_official(state: dict) -> str | None:
    """The model whose official layout (key names and shapes) `state` has, or None."""
    from expocorr import models

    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for model in OFFICIAL_MODELS:
        expected = models.build(model, official_arch(model)).state_dict()
        if shapes == {k: tuple(v.shape) for k, v in expected.items()}:
            return model
    return None


def from_official(state: object, file: str, model: str | None = None) -> dict:
    """An expocorr checkpoint (model, arch, state_dict) from an authors' state_dict: of `model`, or of
    the model its keys match (None). Refused, naming `file`, when the keys fit no known layout."""
    tensors = _tensors(state, file)
    detected = detect_official(tensors)
    if detected is None or (model is not None and detected != model):
        want = model or " or ".join(OFFICIAL_MODELS)
        keys = ", ".join(list(tensors)[:3])
        raise PretrainedError(f"{file}: its keys ({keys}, …; {len(tensors)} tensors) are not the official {want} "
                              "layout")
    return {"model": detected, "arch": official_arch(detected), "state_dict": tensors,
            "metadata": {"pretrained": {"format": "official"}}}


def convert(path: Path, spec: dict, name: str) -> dict:
    """The model file's content for the checkpoint file `path` fetched for `pretrained.NAME` (`spec`)."""
    import pooch
    import torch

    from expocorr import inference

    file = repr(str(spec["url"]))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # weights_only=True refuses pickled objects (arbitrary code on load)
        raise PretrainedError(f"{file}: not a PyTorch checkpoint of plain tensors (pickled objects are refused "
                              "for safety, weights_only=True)") from None
    if spec["format"] == "official":
        checkpoint = from_official(state, file, spec["model"])
    else:
        if not (isinstance(state, dict) and {"model", "arch", "state_dict"} <= state.keys()):
            raise PretrainedError(f"{file}: not an expocorr model file (needs model, arch and state_dict); "
                                  "format official?")
        if state["model"] != spec["model"]:
            raise PretrainedError(f"{file}: records model {state['model']!r}, not pretrained.{name}.model "
                                  f"{spec['model']!r}")
        checkpoint = {k: state[k] for k in ("model", "arch", "state_dict")}
    try:
        model = inference.model_from(checkpoint, file)
    except inference.MethodError as exc:
        raise PretrainedError(str(exc)) from None
    provenance = {"name": name, "url": spec["url"], "sha256": pooch.file_hash(str(path)), "format": spec["format"]}
    return {**checkpoint, "state_dict": model.state_dict(), "params": {"pretrained": {name: spec}},
            "metadata": {"pretrained": provenance}}


def run(params: dict, name: str) -> None:
    """Fetch `pretrained.NAME` (checksum, cache: `download.fetch`) and write models/NAME/model.pt."""
    import torch

    from expocorr.atomic import atomic_path
    from expocorr.download import fetch
    from expocorr.methods import model_path

    entries = params["pretrained"]
    if name not in entries:
        raise PretrainedError(f"--name {name}: not in pretrained (known: {', '.join(entries) or 'none'})")
    spec = resolve(name, entries[name])
    path = fetch(spec["url"], spec["sha256"], params["data"]["cache_dir"])
    checkpoint = convert(path, spec, name)
    out = model_path(name)
    with atomic_path(out) as tmp:
        torch.save(checkpoint, tmp)
    log.info("pretrained %s: %s (%s format, sha256 %s) -> %s", name, spec["url"], spec["format"],
             checkpoint["metadata"]["pretrained"]["sha256"], out)

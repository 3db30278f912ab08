"""Published checkpoints: the presets (the authors' own files, with their public URL and sha256) and the
formats their state_dicts come in, converted to expocorr's model file layout (`from_published`).

A `pretrained` entry of the params names a `preset` (PRESETS) and/or gives `model`, `url`, `sha256`,
`format`; its own keys override the preset's (e.g. `url` pointing at a local mirror, still checked against
the preset's sha256). Formats:

* ``official``: the authors' PyTorch state_dict (Zero-DCE and Zero-DCE++: ``Epoch99.pth``), whose keys
  are expocorr's layer names; built with the architecture their test scripts run (`published_arch`).
* ``pytorch_port``: the snapshot of MSEC's PyTorch port, LZ-CH/Exposure_Correction-pytorch
  (``MSPECnet_woadv.pth``, its ``MSPEC_Net`` state_dict); the MSEC authors published MATLAB weights only.
  Renamed layer by layer (`port_keys`), its BGR channels turned to RGB, built as ``msec`` with
  ``variant: pytorch_port`` (`models.msec.PORT_ARCH`: the port's activations and OpenCV pyramid).
* ``expocorr``: a model file written by `expocorr train` elsewhere (e.g. a colleague's run).

`expocorr.inference.load_model` reads the published formats through this module; the pretrained stage
(`expocorr.stages.pretrained`) fetches and converts the files. torch is imported on use: `expocorr.params`
validates params.yaml with `resolve`.
"""

from __future__ import annotations

from expocorr.errors import UserError

FORMATS = ("official", "pytorch_port", "expocorr")
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
# The published layouts other than expocorr's and the models they hold.
PUBLISHED = {"official": ("zerodce", "zerodce_pp"), "pytorch_port": ("msec",)}
BGR_TO_RGB = [2, 1, 0]  # the port reads photos with cv2.imread: its first and last layers see BGR


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
    fmt = spec["format"]
    if fmt in PUBLISHED and spec["model"] not in PUBLISHED[fmt]:
        raise PretrainedError(f"pretrained.{name}.model: {spec['model']!r} has no {fmt} format; format {fmt} is "
                              f"known for {', '.join(PUBLISHED[fmt])}")
    return spec


def published_arch(model: str, fmt: str = "official") -> dict:
    """The architecture a published checkpoint of `model` in format `fmt` is run with."""
    from expocorr.models import msec, zerodce, zerodce_pp

    if fmt == "pytorch_port":
        return dict(msec.PORT_ARCH)
    return dict({"zerodce": zerodce.PAPER_ARCH, "zerodce_pp": zerodce_pp.PAPER_ARCH}[model])


def port_keys(arch: dict) -> dict[str, str]:
    """expocorr's msec generator keys -> the port's (model.py: MSPEC_Net's subnet1 is the coarsest level,
    up1 lifts it; in a SubNet of depth d, block1..d encode, block d+1 is the bridge, up j and block d+1+j
    decode)."""
    n, depths = arch["levels"], arch["depths"]
    names = {}
    for s, d in enumerate(depths):  # expocorr's subnets: finest first
        ours, port = f"subnets.{s}.", f"subnet{n - s}."
        pairs = [(f"encoder.{i}", f"block{i + 1}") for i in range(d)] + [("bridge", f"block{d + 1}")]
        pairs += [(f"decoder.{i}", f"block{2 * d + 1 - i}") for i in range(d)]
        for a, b in pairs:
            for conv, cnn in (("0", "cnn_conv1"), ("2", "cnn_conv2")):
                for t in ("weight", "bias"):
                    names[f"{ours}{a}.{conv}.{t}"] = f"{port}{b}.{cnn}.{t}"
        for t in ("weight", "bias"):
            names.update({f"{ours}up.{i}.{t}": f"{port}up{d - i}.up.{t}" for i in range(d)})
            names[f"{ours}final.{t}"] = f"{port}finalconv.{t}"
    for k in range(n - 1):
        for t in ("weight", "bias"):
            names[f"upsamplers.{k}.{t}"] = f"up{n - 1 - k}.up.{t}"
    return names


def _from_port(tensors: dict) -> dict | None:
    """expocorr's msec state_dict from the port's `tensors` (None when the keys or shapes differ)."""
    import torch

    from expocorr import models

    arch = published_arch("msec", "pytorch_port")
    torch.manual_seed(0)  # the discriminator, absent from the port's snapshot, is only used in training
    state = models.build("msec", arch).state_dict()
    names = port_keys(arch)
    if set(names.values()) != set(tensors) or any(tuple(tensors[p].shape) != tuple(state[k].shape)
                                                   for k, p in names.items()):
        return None
    for key, port in names.items():
        t = tensors[port]
        if key.startswith("upsamplers."):  # 3 -> 3 channels: both sides BGR
            t = t[BGR_TO_RGB][:, BGR_TO_RGB] if t.dim() == 4 else t[BGR_TO_RGB]
        elif key.endswith("encoder.0.0.weight"):
            t = t[:, BGR_TO_RGB]
        elif ".final." in key:
            t = t[BGR_TO_RGB]
        state[key] = t.clone()
    return state


def _tensors(state: object, file: str) -> dict:
    """The state_dict of an authors' file: the dict of tensors itself, or under ``state_dict``;
    ``module.`` prefixes (nn.DataParallel) removed."""
    import torch

    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise PretrainedError(f"{file}: not a state_dict (a mapping of parameter names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _as_published(tensors: dict, fmt: str, model: str) -> dict | None:
    """expocorr's state_dict of `model` from `tensors` in published format `fmt`, or None if they do not fit."""
    from expocorr import models

    if fmt == "pytorch_port":
        return _from_port(tensors)
    expected = models.build(model, published_arch(model)).state_dict()
    fits = {k: tuple(v.shape) for k, v in tensors.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    return tensors if fits else None


def from_published(state: object, file: str, model: str | None = None, fmt: str | None = None) -> dict:
    """An expocorr checkpoint (model, arch, state_dict) from a published state_dict: of `model` in format
    `fmt`, or of whichever model and published format its keys match (None). Refused, naming `file`, when
    the keys fit no known layout."""
    tensors = _tensors(state, file)
    for f in [fmt] if fmt else list(PUBLISHED):
        for m in PUBLISHED[f]:
            if model in (None, m):
                converted = _as_published(tensors, f, m)
                if converted is not None:
                    return {"model": m, "arch": published_arch(m, f), "state_dict": converted,
                            "metadata": {"pretrained": {"format": f}}}
    want = " or ".join(f"the {f} {m} layout" for f in ([fmt] if fmt else PUBLISHED) for m in PUBLISHED[f]
                       if model in (None, m))
    keys = ", ".join(list(tensors)[:3])
    raise PretrainedError(f"{file}: its keys ({keys}, …; {len(tensors)} tensors) are not {want}")

"""Stage `pretrained`: a published checkpoint (`pretrained.NAME`) fetched, verified and converted into
expocorr's model file models/NAME/model.pt, which the evaluate stage scores like a trained model.

The presets and the published formats: `expocorr.checkpoints`.

The model file records where it came from (``metadata.pretrained``: URL, sha256, format), so the
evaluate stage labels the method ``pretrained`` and `expocorr correct --model` takes it like any model.
torch is imported on use.
"""

from __future__ import annotations

import logging
from pathlib import Path

from expocorr.atomic import atomic_path
from expocorr.checkpoints import PretrainedError, resolve
from expocorr.corrector import model_path
from expocorr.sources.url import fetch

log = logging.getLogger(__name__)


def convert(path: Path, spec: dict, name: str) -> dict:
    """The model file's content for the checkpoint file `path` fetched for `pretrained.NAME` (`spec`);
    errors name the URL."""
    import pooch

    from expocorr import inference

    try:
        model, checkpoint = inference.load_model(path, expected=spec["model"], checkpoint_format=spec["format"],
                                                 label=repr(str(spec["url"])))
    except inference.MethodError as exc:
        raise PretrainedError(f"pretrained.{name}: {exc}") from None
    provenance = {"name": name, "url": spec["url"], "sha256": pooch.file_hash(str(path)), "format": spec["format"]}
    return {"model": checkpoint["model"], "arch": checkpoint["arch"], "state_dict": model.state_dict(),
            "params": {"pretrained": {name: spec}}, "metadata": {"pretrained": provenance}}


def run(params: dict, name: str) -> None:
    """Fetch `pretrained.NAME` (checksum, cache: `expocorr.sources.url.fetch`) and write models/NAME/model.pt."""
    import torch

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

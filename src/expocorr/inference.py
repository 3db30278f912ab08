"""Apply a trained model to a photo: the one code path of `evaluate` and `correct` (`methods.load_method`).

Models are loaded from `models/NAME/model.pt` with ``weights_only=True``; a file recording another
model than the one asked for, or holding NaN or infinite weights, is refused; denormal weights are
flushed to zero on load (they made Zero-DCE many times slower on CPU). A method's non-finite output
is refused too, naming the model file (`Method`).

Full resolution (`run_model`): an image whose long side is at most
``DIRECT_MAX_SIDE`` (512 px, the size of the default test split) goes through the method as it is.
A larger one goes the way each method was designed for (``STRATEGIES``, chosen by the comparison in
the README, "Correct your own photos"):

* ``guided``: the method runs on a copy downscaled (area) to ``GUIDED_SIDE`` px on the long side
  and the result is brought to full size by bilateral guided upsampling
  (`expocorr.imaging.guided_upsampling`, Chen et al. 2016) — MSEC as its official demo runs it (`run_msec`:
  512 px, the pyramid scaled by the model's ``band_scale``, the upsampling fitted at 200×200), and the
  autoencoders and the GAN, where it scored better than tiling (README, "Correct your own photos").
* ``direct``: fully convolutional, run at full resolution — Zero-DCE. To bound memory it runs in
  tiles whose halo covers the network's receptive field, which gives the full-image result exactly.
  Zero-DCE++ estimates its curves on the image downscaled by its ``inference_scale`` (the official
  test script's 12 for every image, or ``auto``: `zerodce_pp_scale`), upscales them as the official
  code does and applies them at full resolution, in row bands.
* ``tiled``: overlapping ``TILE``-px tiles, blended with linear ramps over the overlap (the default
  for a model not in ``STRATEGIES``; the autoencoders and the GAN scored better guided).

Precision (`pick_precision`, `--precision` of `expocorr correct`): ``fp32``, or the model's forward under
autocast in ``bf16`` or ``fp16``. ``auto`` takes a reduced precision only where it is faster and keeps the
output: fp16 on CUDA, bf16 on a CPU with native bfloat16 (AVX512-BF16 or AMX), each only for the models in
``REDUCED_PRECISION_MODELS`` (tests/test_precision.py: within ``PRECISION_BOUND_DB`` of fp32 on a synthetic
split); else fp32, which gives today's results bit for bit. Channels-last is not used: its fp32 Zero-DCE
convolutions differ from the contiguous ones in the last bit.

Baselines, and loading a method by name (a baseline without torch): `expocorr.methods`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from expocorr import models
from expocorr.imaging.guided_upsampling import guided_upsample
from expocorr.corrector import Method, MethodError, downscaled, model_path, run_guided
from expocorr.models import zerodce_pp

log = logging.getLogger(__name__)

DIRECT_MAX_SIDE = 512  # up to this long side (px) every method runs on the image as it is
GUIDED_SIDE = 512  # `guided`: the model runs at this long side (MSEC's paper: 512)
MSEC_FIT_SIDE = 200  # MSEC's demo_single_image.m: BGU fitted on 200×200 copies of its 512-px input and output
MSEC_GRID = (22, 22, 8)  # MSEC's bgu/getDefaultAffineGridSize.m: grid nodes (rows, columns, luma)
TILE = 512  # `tiled`: tile side (px), and the tile core of Zero-DCE's exact `direct` tiling
TILE_OVERLAP = 64  # `tiled`: overlap of neighbouring tiles, blended with linear ramps
# By model name, for images larger than DIRECT_MAX_SIDE (README "Correct your own photos" has the
# PSNR comparison behind the tiled / guided choices).
STRATEGIES = {
    "msec": "guided",
    "zerodce": "direct",
    "zerodce_pp": "direct",
    # Guided scored at least as well as tiling for each of these (and as direct full-resolution
    # inference), at a fraction of the time and memory: benchmarks/fullres_strategies.py.
    "exponet": "guided",
    "exponet_double": "guided",
    "hdr_autoencoder": "guided",
    "exposure_gan": "guided",
}
DEFAULT_STRATEGY = "tiled"  # a plugin model (README "Add a model") or one not compared yet: tiles work for any network
# Receptive-field radius (px) of the fully convolutional models: a tile halo this wide makes tiled
# inference exact (Zero-DCE: seven 3×3 convolutions).
RECEPTIVE_RADIUS = {"zerodce": 7}
ZERODCE_PP_MAX_SCALE = 12  # Zero-DCE++ official test script (lowlight_test.py): curves estimated at 1/12
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_BOUND_DB = 0.05  # `auto`: a reduced precision may move a model's mean PSNR by less than this
# Models whose bf16 and fp16 outputs were measured within PRECISION_BOUND_DB of fp32 on a synthetic split
# (README "Correct your own photos"; tests/test_precision.py); the others (hdr_autoencoder, plugins) run in
# fp32 under `auto`.
REDUCED_PRECISION_MODELS = frozenset({"msec", "zerodce", "zerodce_pp", "exponet", "exponet_double", "exposure_gan"})
CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # /proc/cpuinfo: x86 AVX512-BF16 / AMX, Arm BF16


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """`auto` picks cuda > mps > cpu; under torchrun each rank takes cuda:LOCAL_RANK."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MethodError(f"device {requested!r} asked for but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bfloat16 natively (its flags in `cpuinfo`; False where there is no such file)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = {flag for line in text.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
             for flag in line.split(":", 1)[1].split()}
    return bool(flags & CPU_BF16_FLAGS)


def pick_precision(requested: str, device: torch.device | str, name: str | None = None) -> tuple[str, str]:
    """(precision, why) for model `name` on `device`: `requested` (fp32, bf16, fp16) when the device runs it,
    or for ``auto`` fp16 on CUDA, bf16 on a CPU with native bfloat16, each only for a model in
    REDUCED_PRECISION_MODELS, else fp32. fp16 on the CPU and reduced precision on other devices are refused,
    naming --precision."""
    device = torch.device(device)
    if requested not in ("auto", *PRECISIONS):
        raise MethodError(f"--precision {requested!r}: expected auto, {', '.join(PRECISIONS)}")
    if requested == "auto":
        measured = name in REDUCED_PRECISION_MODELS
        if device.type == "cuda" and measured:
            return "fp16", "auto: CUDA, fp16 measured within the PSNR bound for this model"
        if device.type == "cpu" and measured and cpu_has_native_bf16():
            return "bf16", "auto: this CPU computes bfloat16 natively (AVX512-BF16 / AMX)"
        why = ("no reduced precision measured for this model" if not measured else
               "this CPU has no native bfloat16 (emulated bf16 is slower)" if device.type == "cpu" else
               f"no reduced precision on {device.type}")
        return "fp32", f"auto: {why}"
    if requested == "fp16" and device.type == "cpu":
        raise MethodError("--precision fp16: not on the CPU (no fast float16 convolutions there); use bf16 or fp32")
    if requested != "fp32" and device.type not in ("cpu", "cuda"):
        raise MethodError(f"--precision {requested}: only fp32 on {device.type}")
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise MethodError("--precision bf16: this GPU has no bfloat16; use fp16 or fp32")
    return requested, "asked for"


def autocast(device: torch.device, precision: str):
    """The autocast context of `precision` on `device` (off for fp32)."""
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision], enabled=precision != "fp32")


def subnormal_mask(t: torch.Tensor) -> torch.Tensor:
    """Where the IEEE float tensor `t` holds subnormal values, read from the bits: float comparisons see
    them as 0 once `torch.set_flush_denormal(True)` (set by `load_model`) is on."""
    info = torch.finfo(t.dtype)
    magnitude = t.view({16: torch.int16, 32: torch.int32, 64: torch.int64}[info.bits]) & ((1 << (info.bits - 1)) - 1)
    return (magnitude > 0) & (magnitude < (1 << round(-math.log2(info.eps))))  # exponent bits all 0


def flush_denormals(module: nn.Module) -> int:
    """Zero every subnormal float in `module`'s parameters and buffers; return how many there were."""
    count = 0
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_floating_point():
                mask = subnormal_mask(t)
                count += int(mask.sum())
                t[mask] = 0
    return count


def _first_lines(text: str, n: int = 2, limit: int = 300) -> str:
    """The start of a long multi-line message, on one line."""
    return " ".join(line.strip() for line in text.splitlines()[:n])[:limit]


def non_finite_weights(module: nn.Module) -> tuple[int, str | None]:
    """How many NaN or infinite values `module`'s parameters and buffers hold, and the first tensor's name."""
    count, first = 0, None
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if t.is_floating_point():
            bad = int((~torch.isfinite(t)).sum())
            count, first = count + bad, first or (name if bad else None)
    return count, first


def load_model(path: str | Path, device: torch.device | str = "cpu", expected: str | None = None,
               checkpoint_format: str = "auto", label: str | None = None) -> tuple[nn.Module, dict]:
    """Build and load a model file; returns (model in eval mode, checkpoint).

    `checkpoint_format`: ``expocorr`` (written by the train or pretrained stage), ``official`` (an
    authors' state_dict, e.g. Zero-DCE's Epoch99.pth), ``pytorch_port`` (MSEC's PyTorch port's snapshot:
    `pretrained.from_published`), or ``auto`` (any, told apart by the keys). Refused, naming the file:
    pickled objects, a layout that is none of these, a file recording another model than `expected`, and
    non-finite (NaN or infinite) weights; messages name `label` (default: the path)."""
    from expocorr import checkpoints as pretrained

    path = Path(path)
    name = label or repr(str(path))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MethodError(f"{name}: no such model file (run the train stage first)") from None
    except Exception as exc:  # weights_only=True refuses pickled objects (arbitrary code on load)
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL" in text:
            reason = "it holds pickled Python objects, refused for safety (weights_only=True)"
        else:
            reason = "corrupt or not a PyTorch file"
        raise MethodError(f"{name}: not a loadable expocorr model file: {reason}") from None
    ours = isinstance(checkpoint, dict) and {"model", "arch", "state_dict"} <= checkpoint.keys()
    if checkpoint_format in pretrained.PUBLISHED or (checkpoint_format == "auto" and not ours):
        fmt = None if checkpoint_format == "auto" else checkpoint_format
        try:
            checkpoint = pretrained.from_published(checkpoint, name, expected, fmt)
        except pretrained.PretrainedError as exc:
            ours_too = "" if fmt else "not an expocorr model file (model, arch, state_dict); "
            raise MethodError(f"{name}: {ours_too}{str(exc).removeprefix(name + ': ')}") from None
    elif not ours:
        raise MethodError(f"{name}: not an expocorr model file (needs model, arch and state_dict)")
    if expected is not None and checkpoint["model"] != expected:
        raise MethodError(f"{name}: records model {checkpoint['model']!r}, not {expected!r} as asked; refused "
                          f"(a {checkpoint['model']} file in the place of a {expected} one?)")
    return model_from(checkpoint, name).to(device), checkpoint


def model_from(checkpoint: dict, name: str = "checkpoint") -> nn.Module:
    """The model of `checkpoint` (model, arch, state_dict) in eval mode on the CPU, its denormal weights
    flushed to zero; refused, naming `name`, when the weights do not fit or are not finite."""
    try:
        model = models.build(checkpoint["model"], checkpoint["arch"])
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise MethodError(f"{name}: weights do not fit model {checkpoint['model']!r}: {_first_lines(str(exc))}") from None
    bad, first = non_finite_weights(model)
    if bad:
        raise MethodError(f"{name}: {bad} non-finite weights (NaN or infinite), first in {first!r}; refused "
                          "(a diverged training or a damaged file)")
    flushed = flush_denormals(model)
    if flushed:
        log.info("%s: flushed %d denormal weights to zero", name, flushed)
    torch.set_flush_denormal(True)
    return model.eval()


def parameter_count(model: nn.Module) -> int:
    """Parameters of the corrector itself (a GAN's discriminator excluded)."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("discriminator."))


def strategy_for(name: str | None, height: int, width: int) -> str:
    """How model `name` runs on an image of this size: `direct`, `guided` or `tiled` (module docstring)."""
    if max(height, width) <= DIRECT_MAX_SIDE:
        return "direct"
    return STRATEGIES.get(name, DEFAULT_STRATEGY)


def zerodce_pp_scale(height: int, width: int, inference_scale: float | str = "auto") -> float:
    """Zero-DCE++'s curve-estimation downscale for an image: `inference_scale` when it is a number (the
    official 12), else (``auto``) 1 up to DIRECT_MAX_SIDE, then the long side over 100, at most 12."""
    if inference_scale != "auto":
        return inference_scale
    side = max(height, width)
    if side <= DIRECT_MAX_SIDE:
        return 1
    return int(min(ZERODCE_PP_MAX_SCALE, max(1, round(side / 100))))


def _to_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)).unsqueeze(0).to(device)


@torch.no_grad()
def _forward(model: nn.Module, rgb: np.ndarray, device: torch.device, precision: str = "fp32") -> np.ndarray:
    """The model on the whole of `rgb` (H×W×3 float in [0, 1]) in `precision`, clamped to [0, 1]; float32 H×W×3."""
    x = _to_tensor(rgb, device)
    with autocast(device, precision):
        y = model(x)
    return y.float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()


def _ramp(n: int, overlap: int, start: bool, end: bool) -> np.ndarray:
    """1-D blending weights of a tile: rising over `overlap` at a shared start, falling at a shared end."""
    w = np.ones(n, dtype=np.float32)
    k = min(overlap, n)
    if k > 0:
        ramp = (np.arange(k, dtype=np.float32) + 0.5) / k
        if start:
            w[:k] = np.minimum(w[:k], ramp)
        if end:
            w[-k:] = np.minimum(w[-k:], ramp[::-1])
    return w


def _tile_starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def run_tiled(model: nn.Module, rgb: np.ndarray, device: torch.device, tile: int = TILE,
              overlap: int = TILE_OVERLAP, precision: str = "fp32") -> np.ndarray:
    """The model on overlapping `tile`-px tiles, blended with linear ramps over the `overlap`."""
    h, w = rgb.shape[:2]
    step = max(1, tile - overlap)
    out = np.zeros((h, w, 3), dtype=np.float32)
    weight = np.zeros((h, w, 1), dtype=np.float32)
    ys, xs = _tile_starts(h, tile, step), _tile_starts(w, tile, step)
    for y0 in ys:
        y1 = min(h, y0 + tile)
        wy = _ramp(y1 - y0, overlap, y0 > 0, y1 < h)
        for x0 in xs:
            x1 = min(w, x0 + tile)
            wx = _ramp(x1 - x0, overlap, x0 > 0, x1 < w)
            window = (wy[:, None] * wx[None, :])[..., None]
            out[y0:y1, x0:x1] += window * _forward(model, rgb[y0:y1, x0:x1], device, precision)
            weight[y0:y1, x0:x1] += window
    out /= weight
    return out


def run_halo_tiled(model: nn.Module, rgb: np.ndarray, device: torch.device, radius: int,
                   tile: int = TILE, precision: str = "fp32") -> np.ndarray:
    """A fully convolutional model of receptive-field radius `radius`, tile by tile with a `radius`-px halo:
    the same result as one pass over the whole image, in bounded memory."""
    h, w = rgb.shape[:2]
    out = np.empty((h, w, 3), dtype=np.float32)
    for y0 in range(0, h, tile):
        y1 = min(h, y0 + tile)
        for x0 in range(0, w, tile):
            x1 = min(w, x0 + tile)
            ty0, ty1, tx0, tx1 = max(0, y0 - radius), min(h, y1 + radius), max(0, x0 - radius), min(w, x1 + radius)
            y = _forward(model, rgb[ty0:ty1, tx0:tx1], device, precision)
            out[y0:y1, x0:x1] = y[y0 - ty0:y1 - ty0, x0 - tx0:x1 - tx0]
    return out


@torch.no_grad()
def run_zerodce_pp(model: nn.Module, rgb: np.ndarray, device: torch.device, scale: float,
                   band_rows: int = 256, precision: str = "fp32") -> np.ndarray:
    """Zero-DCE++ as its official test script runs photos: curves estimated on the image downscaled by
    `scale`, upscaled back as the model does (`zerodce_pp.downscale` / `upscale_curves`: the official
    resampling) and applied at full resolution in row bands; on the CPU the model's forward at
    scale_factor `scale`, exactly."""
    h, w = rgb.shape[:2]
    x = torch.from_numpy(rgb.astype(np.float32, copy=False)).permute(2, 0, 1).unsqueeze(0)
    small = zerodce_pp.downscale(x, scale).to(device)
    with autocast(device, precision):
        a_low = model.dce(small)
    a = zerodce_pp.upscale_curves(a_low.float().cpu(), (h, w), scale, model.align_corners)
    curves = a[0].permute(1, 2, 0).numpy()  # H×W×3 view of the full-size map
    out = np.empty((h, w, 3), dtype=np.float32)
    for r0 in range(0, h, band_rows):
        band = rgb[r0:r0 + band_rows].astype(np.float32)
        a = np.ascontiguousarray(curves[r0:r0 + band_rows])
        for _ in range(model.iterations):
            band += a * (band * band - band)
        out[r0:r0 + band_rows] = np.clip(band, 0.0, 1.0)
    return out


def run_msec(model: nn.Module, rgb: np.ndarray, device: torch.device, precision: str = "fp32") -> np.ndarray:
    """MSEC as its official demo (demo_single_image.m) runs a photo above 512 px: the network on a copy
    of GUIDED_SIDE px on the long side, its input pyramid scaled by the model's ``band_scale``, then
    bilateral guided upsampling fitted on MSEC_FIT_SIDE² copies of that input and output (MSEC_GRID
    nodes) and applied to the full-resolution photo. The demo pads the copy to a 512² square and
    resizes bicubically; here the model pads itself and the resizes average areas."""
    small = downscaled(rgb, GUIDED_SIDE)
    out = _forward(lambda x: model(x, scale_bands=max(rgb.shape[:2]) > GUIDED_SIDE), small, device, precision)
    fit = (MSEC_FIT_SIDE, MSEC_FIT_SIDE)
    low_in, low_out = (cv2.resize(im, fit, interpolation=cv2.INTER_AREA) for im in (small, out))
    return guided_upsample(rgb, low_in, low_out, cell=MSEC_FIT_SIDE / (MSEC_GRID[1] - 1), bins=MSEC_GRID[2] - 1,
                           device=device)


def run_model(model: nn.Module, rgb: np.ndarray, device: torch.device, strategy: str | None = None,
              precision: str = "auto") -> np.ndarray:
    """The model on one float RGB image (H×W×3 in [0, 1]) at full resolution; returns the same (float32).

    `strategy` (`direct`, `guided`, `tiled`) defaults to `strategy_for(model name, image size)`;
    `direct` on a large image is exact tiling for Zero-DCE; Zero-DCE++ estimates its curves at its
    `inference_scale` (`run_zerodce_pp`), at any size. `precision`: fp32, bf16 or fp16 autocast as given
    (checked by `pick_precision` where a method is loaded), or auto: `pick_precision`.
    """
    name = getattr(model, "name", None)
    h, w = rgb.shape[:2]
    strategy = strategy or strategy_for(name, h, w)
    if precision == "auto":
        precision, _ = pick_precision(precision, device, name)
    if strategy == "guided" and name == "msec":
        return run_msec(model, rgb, device, precision)
    if strategy == "guided":
        return run_guided(lambda small: _forward(model, small, device, precision), rgb, GUIDED_SIDE, device)
    if strategy == "tiled":
        return run_tiled(model, rgb, device, precision=precision)
    if strategy != "direct":
        raise ValueError(f"unknown strategy {strategy!r} (direct | guided | tiled)")
    if name == "zerodce_pp":
        scale = zerodce_pp_scale(h, w, model.inference_scale)
        if scale != 1 or model.scale_factor != 1:
            return run_zerodce_pp(model, rgb, device, scale, precision=precision)
    if name in RECEPTIVE_RADIUS and max(h, w) > TILE:
        return run_halo_tiled(model, rgb, device, RECEPTIVE_RADIUS[name], precision=precision)
    return _forward(model, rgb, device, precision)


def load_model_method(name: str, device: torch.device | str = "cpu", path: str | Path | None = None,
                      checkpoint_format: str = "auto", precision: str = "auto") -> Method:
    """A model as a `Method`: `models/NAME/model.pt`, or the file `path` (`methods.load_method`); kind
    ``pretrained`` for a published checkpoint (the pretrained stage's file, or an authors' file). Its
    `precision` is resolved once (`pick_precision`) and recorded with the reason in ``Method.precision``."""
    device = torch.device(device)
    file = Path(path or model_path(name))
    model, checkpoint = load_model(file, device, name if name in models.MODELS else None, checkpoint_format)
    published = (checkpoint.get("metadata") or {}).get("pretrained")
    kind = "pretrained" if published else "model"
    label = (published or {}).get("name") or (name if path is None else checkpoint["model"])
    chosen, why = pick_precision(precision, device, checkpoint["model"])
    return Method(label, kind, lambda rgb, ctx: run_model(model, rgb, device, precision=chosen),
                  n_parameters=parameter_count(model), settings=checkpoint.get("params", {}), source=repr(str(file)),
                  precision=(chosen, why))

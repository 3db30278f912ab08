"""Realistic exposure errors (`render.realistic`): a clean photo as a camera would capture it at a wrong exposure.

Each input follows a camera pipeline, in the order Brooks et al. ("Unprocessing Images for Learned Raw
Denoising", CVPR 2019) invert it: linear light x 2**EV, shot + read noise, white-balance gains, a soft
highlight shoulder, a camera response curve, 8 bits, JPEG. Every effect draws from its own random
stream, seeded by `render.seed`, the scene name and the input's index, so switching one effect off
leaves the other effects' draws unchanged. `draw` returns what an input drew (its manifest columns),
`capture` renders it. With ``reference: camera`` each input's reference is `reference_draw` of its draw: the
same scene through the same camera (curve, white balance, roll-off) at EV 0, without noise or JPEG, as a
real bracket's well-exposed frame shares its camera with the badly exposed ones.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import cv2
import numpy as np

from expocorr.imaging.images import to_uint8

COLUMNS = ["crf_n", "crf_sigma", "shot", "read", "wb_r", "wb_b", "rolloff", "jpeg_quality"]  # manifest, per input
STREAMS = {name: zlib.crc32(f"realistic.{name}".encode())
           for name in ("ev", "curve", "noise_level", "noise", "white_balance", "rolloff", "jpeg")}
# Sigmoid camera curves (Eilertsen et al., "HDR image reconstruction from a single exposure using deep
# CNNs", SIGGRAPH Asia 2017, Sec. 5.1): n ~ N(0.9, 0.1), sigma ~ N(0.6, 0.1), fitted to the DoRF database
# of 201 real camera responses (Grossberg & Nayar 2003); draws are kept within 3 standard deviations.
CRF_N = (0.9, 0.1)
CRF_SIGMA = (0.6, 0.1)
# log(read variance) = 2.18 log(shot) + 1.20 + N(0, 0.26): Brooks et al.'s fit over real sensors' ISO settings.
READ_FROM_SHOT = (2.18, 1.20, 0.26)


def _rng(seed: int, scene: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(scene.encode()), *keys])


def ev_grid(cfg: dict) -> list[float]:
    """The EVs `cfg` (= render.realistic) can draw: the multiples of `ev_step` inside `ev_range`."""
    lo, hi = cfg["ev_range"]
    step = cfg["ev_step"]
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [round(k * step, 9) + 0.0 for k in range(first, last + 1)]  # + 0.0: -0.0 -> 0.0


def scene_evs(cfg: dict, seed: int, scene: str) -> list[float]:
    """A scene's `per_scene` distinct EVs: the grid cut into `per_scene` equal runs, one uniform pick in each
    (so every scene spans the range, under and over)."""
    grid = ev_grid(cfg)
    rng = _rng(seed, scene, STREAMS["ev"])
    return [float(rng.choice(part)) for part in np.array_split(np.array(grid), cfg["per_scene"])]


def draw(cfg: dict, seed: int, scene: str, index: int, ev: float) -> dict:
    """What input `index` of `scene` draws for each effect that is on: `ev` plus the `COLUMNS` it uses,
    rounded as recorded in the manifest (the values `capture` applies)."""
    out: dict = {"ev": ev}

    def rng(stream: str) -> np.random.Generator:
        return _rng(seed, scene, index, STREAMS[stream])

    if cfg["camera_curve"]:
        g = rng("curve")
        (n, dn), (s, ds) = CRF_N, CRF_SIGMA
        out["crf_n"] = round(float(np.clip(g.normal(n, dn), n - 3 * dn, n + 3 * dn)), 3)
        out["crf_sigma"] = round(float(np.clip(g.normal(s, ds), s - 3 * ds, s + 3 * ds)), 3)
    if cfg["shot_noise"]:
        g = rng("noise_level")
        lo, hi = cfg["shot_noise"]
        shot = float(f"{math.exp(g.uniform(math.log(lo), math.log(hi))):.3g}")
        out["shot"] = shot
        if cfg["read_noise"]:
            slope, offset, spread = READ_FROM_SHOT
            out["read"] = float(f"{math.exp((slope * math.log(shot) + offset + g.normal(0, spread)) / 2):.3g}")
    if cfg["white_balance"]:
        g = rng("white_balance")
        w = cfg["white_balance"]
        out["wb_r"], out["wb_b"] = (round(float(v), 3) for v in g.uniform(1 - w, 1 + w, size=2))
    if cfg["rolloff"]:
        lo, hi = cfg["rolloff"]
        out["rolloff"] = round(float(rng("rolloff").uniform(lo, hi)), 3)
    if cfg["jpeg_quality"]:
        lo, hi = cfg["jpeg_quality"]
        out["jpeg_quality"] = int(rng("jpeg").integers(lo, hi, endpoint=True))
    return out


def reference_draw(d: dict) -> dict:
    """The draw of an input's same-camera reference: its camera curve, white balance and roll-off at EV 0,
    clean (no noise, no JPEG)."""
    return {**{k: v for k, v in d.items() if k not in ("shot", "read", "jpeg_quality")}, "ev": 0.0}


def camera_curve(x: np.ndarray, n: float, sigma: float) -> np.ndarray:
    """Eilertsen et al.'s sigmoid camera response (1 + sigma) x**n / (x**n + sigma) of linear x in [0, 1]."""
    xn = np.power(np.clip(x, 0.0, 1.0), n)
    return (1 + sigma) * xn / (xn + sigma)


def shoulder(x: np.ndarray, t: float) -> np.ndarray:
    """Soft highlight roll-off: identity up to t, then t + (1 - t)(1 - exp(-(x - t) / (1 - t))), which meets
    the identity with slope 1 at t and approaches 1 as x grows (t = 1: unchanged, plain clipping after)."""
    if t >= 1:
        return x
    return np.where(x <= t, x, t + (1 - t) * -np.expm1(-(np.maximum(x, t) - t) / (1 - t)))


def poisson_gaussian(x: np.ndarray, shot: float, read: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson shot noise (variance shot * x: photon counts x / shot, scaled back) plus Gaussian read noise
    (std `read`), in linear light."""
    out = rng.poisson(np.maximum(x, 0.0) / shot) * shot
    return out + read * rng.standard_normal(x.shape) if read else out


def capture(linear: np.ndarray, d: dict, seed: int, scene: str, index: int,
            encode: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """uint8 RGB of linear-light RGB captured with draw `d`; `encode` (render.curve) stands in for the
    camera curve when `d` has none."""
    x = linear * 2.0 ** d["ev"]
    if "shot" in d:
        x = poisson_gaussian(x, d["shot"], d.get("read", 0.0), _rng(seed, scene, index, STREAMS["noise"]))
    if "wb_r" in d:
        x = x * np.array([d["wb_r"], 1.0, d["wb_b"]])
    if "rolloff" in d:
        x = shoulder(x, d["rolloff"])
    x = np.clip(x, 0.0, 1.0)
    image = to_uint8(camera_curve(x, d["crf_n"], d["crf_sigma"]) if "crf_n" in d else encode(x))
    if "jpeg_quality" in d:
        quality = [cv2.IMWRITE_JPEG_QUALITY, d["jpeg_quality"]]
        _, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), quality)
        image = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return image


def ev_name(ev: float) -> str:
    """File stem for an EV render, e.g. ev-1.5, ev+0.0; distinct EVs get distinct names (ev+0.25)."""
    ev = float(ev) + 0.0  # -0.0 -> 0.0
    return f"ev{ev:+.1f}" if round(ev, 1) == ev else f"ev{ev:+}"

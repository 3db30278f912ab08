"""Stage `render`: exposure-error inputs and their references -> data/rendered/ (images/, manifest.csv).

sRGB photos are re-exposed in linear light (decode the camera curve, scale by 2**EV, clip
highlights, re-encode); raw files are developed by LibRaw at each EV with `exp_shift` (tau and
noise applied the same way); `render.tau` is one threshold, or a range [lo, hi] from which each
scene draws its own (``scene_tau``; the manifest then has a `tau` column);
MSEC inputs and expert references, and the pairs of LOL, SICE and LCDP, are indexed as given (resized
when `render.max_side` is set), with their exposure group and protocol (`expocorr.sources.datasets`);
exposure stacks are registered to their reference by `expocorr.stages.render_stacks`. With
`render.realistic.enabled`, photos (sRGB, and raw files developed at EV 0) are captured by
`expocorr.imaging.synthesis` instead: drawn EVs, camera curves, noise, white balance, roll-off and JPEG.
"""

from __future__ import annotations

import logging
import shutil
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from expocorr.imaging import synthesis
from expocorr.sources.datasets import MSEC_EXPERTS
from expocorr.stages import download, render_stacks
from expocorr.atomic import atomic_dir
from expocorr.errors import UserError
from expocorr.imaging.colour import (LUMA_BT601, decode_curve, encode_curve, expose, key_ev, linear_to_srgb,
                                     srgb_to_linear)
from expocorr.imaging.images import ImageError, read_rgb, resize_max_side, to_uint8, write_rgb
from expocorr.imaging.raw import LIBRAW_EXP_SHIFT, develop_raw, raw_exp_shift
from expocorr.imaging.synthesis import ev_name
from expocorr.tables import read_csv, write_csv

log = logging.getLogger(__name__)

OUT = Path("data/rendered")
IMAGES = OUT / "images"
MANIFEST = OUT / "manifest.csv"
REGISTRATION = OUT / "registration.csv"  # exposure stacks: one row per registered pair (empty for other sources)
STACK_COLUMNS = ["stack", "exposure_time", "augment"]  # manifest columns of exposure-stack rows
REFERENCE_COLUMNS = ["reference"] + [f"reference_expert_{e}" for e in MSEC_EXPERTS]
TAU_STREAM = zlib.crc32(b"tau")  # RNG key of a scene's tau draw (noise streams use the EV index here)


def add_noise(linear: np.ndarray, shot: float, read: float, rng: np.random.Generator) -> np.ndarray:
    """Signal-dependent (shot) plus Gaussian (read) noise in linear light, clipped to [0, 1]."""
    if shot == 0 and read == 0:
        return linear
    std = np.sqrt(shot * linear + read**2)
    return np.clip(linear + std * rng.standard_normal(linear.shape), 0.0, 1.0)


def tau_range(tau: float | list[float], key: str = "render.tau") -> tuple[float, float]:
    """`render.tau` (or the range at `key`) as (lo, hi): a number t is (t, t)."""
    if isinstance(tau, (int, float)):
        return float(tau), float(tau)
    lo, hi = (float(t) for t in tau)
    if lo > hi:
        raise RenderError(f"{key}: {list(tau)} is not a range [lo, hi] with lo <= hi")
    return lo, hi


def scene_tau(r: dict, scene: str) -> float:
    """The clipping threshold of a scene: `render.tau` itself, or for a range [lo, hi] a uniform draw
    seeded by render.seed and the scene name (the same for every EV of the scene)."""
    if isinstance(r["tau"], (int, float)):
        return r["tau"]
    lo, hi = tau_range(r["tau"])
    return float(np.random.default_rng([r["seed"], zlib.crc32(scene.encode()), TAU_STREAM]).uniform(lo, hi))


def render_evs(rgb: np.ndarray, scene: str, r: dict) -> dict[float, np.ndarray]:
    """Exposure-error renders of one sRGB photo (float RGB in [0, 1]) at every EV of `r` = params['render']."""
    linear = decode_curve(rgb.astype(np.float64), r["curve"], r["gamma"])
    tau = scene_tau(r, scene)
    out = {}
    for i, ev in enumerate(r["evs"]):
        rng = np.random.default_rng([r["seed"], zlib.crc32(scene.encode()), i])
        x = add_noise(expose(linear, ev, tau), r["noise"]["shot"], r["noise"]["read"], rng)
        out[ev] = encode_curve(x, r["curve"], r["gamma"])
    return out


def _render_srgb(row: dict, folder: Path, r: dict) -> list[dict]:
    reference = resize_max_side(read_rgb(row["path"]), r["max_side"])
    write_rgb(folder / "reference.png", reference)
    # Re-read the reference as saved so EV 0 reproduces it exactly (same 8-bit quantisation).
    reference = read_rgb(folder / "reference.png")
    if r["realistic"]["enabled"]:
        return _render_realistic(reference, row["scene"], folder, r)
    rows = []
    for ev, image in render_evs(reference, row["scene"], r).items():
        write_rgb(folder / f"{ev_name(ev)}.png", image)
        rows.append({"ev": ev, "input": folder / f"{ev_name(ev)}.png", "reference": folder / "reference.png"})
    return _with_tau(rows, row["scene"], r)


def _with_tau(rows: list[dict], scene: str, r: dict) -> list[dict]:
    """With a tau range, each row records its scene's draw (what the oracle baseline must invert)."""
    if not isinstance(r["tau"], (int, float)):
        tau = scene_tau(r, scene)
        for row in rows:
            row["tau"] = tau
    return rows


def _render_realistic(reference: np.ndarray, scene: str, folder: Path, r: dict) -> list[dict]:
    """`render.realistic`: the scene's drawn EVs, each captured with its own draws (recorded in the row); its
    reference the photo (``reference: photo``) or the input's camera at EV 0 (``camera``:
    reference_EV.png, `synthesis.reference_draw`). With ``key`` set, EV 0 is first the photo re-exposed so
    its log-average luminance is ``key`` (`key_ev`, recorded as ``key_ev``; the photo reference is then that
    re-exposure, reference.png), as a real bracket's EV 0 is its frame nearest mid-grey."""
    cfg, seed = r["realistic"], r["seed"]
    linear = decode_curve(reference.astype(np.float64), r["curve"], r["gamma"])
    encode = lambda x: encode_curve(x, r["curve"], r["gamma"])  # noqa: E731
    shift = {}
    if cfg["key"]:
        shift = {"key_ev": round(key_ev(linear, cfg["key"]), 3)}
        linear = np.clip(linear * 2.0 ** shift["key_ev"], 0.0, 1.0)
        if cfg["reference"] == "photo":
            write_rgb(folder / "reference.png", to_uint8(encode(linear)))
    rows = []
    for i, ev in enumerate(synthesis.scene_evs(cfg, seed, scene)):
        drawn = synthesis.draw(cfg, seed, scene, i, ev)
        write_rgb(folder / f"{ev_name(ev)}.png", synthesis.capture(linear, drawn, seed, scene, i, encode))
        target = folder / "reference.png"
        if cfg["reference"] == "camera":
            target = folder / f"reference_{ev_name(ev)}.png"
            write_rgb(target, synthesis.capture(linear, synthesis.reference_draw(drawn), seed, scene, i, encode))
        rows.append({**drawn, **shift, "input": folder / f"{ev_name(ev)}.png", "reference": target})
    return rows


def _check_realistic(cfg: dict) -> None:
    """`render.realistic` ranges ordered, and enough grid EVs for `per_scene` distinct ones."""
    for key in ("ev_range", "shot_noise", "rolloff", "jpeg_quality"):
        if cfg[key]:
            tau_range(cfg[key], f"render.realistic.{key}")
    grid = synthesis.ev_grid(cfg)
    if len(grid) < cfg["per_scene"]:
        raise RenderError(
            f"render.realistic.per_scene: {cfg['per_scene']} distinct EVs per scene, but ev_range "
            f"{list(cfg['ev_range'])} holds {len(grid)} multiples of ev_step {cfg['ev_step']}"
        )
    if cfg["read_noise"] and not cfg["shot_noise"]:
        raise RenderError("render.realistic.read_noise: read noise is drawn from the shot-noise level; "
                          "set render.realistic.shot_noise or read_noise: false")


class RenderError(UserError, ValueError):
    """Params the render stage cannot honour for this source; the message names the key."""


def _check_raw_evs(evs: list[float], tau: float = 1.0) -> None:
    lo, hi = LIBRAW_EXP_SHIFT
    bad = [ev for ev in evs if not lo <= 2.0**ev <= hi]
    if bad:
        raise RenderError(f"render.evs: {bad} outside the range LibRaw can render for raw files (-2 .. +3 EV)")
    bad = [ev for ev in evs if not lo <= raw_exp_shift(ev, tau) <= hi]
    if bad:
        raise RenderError(
            f"render.tau: {tau} with render.evs {bad} needs a LibRaw exp_shift above {hi:g} (+3 EV) for raw files; "
            "raise render.tau or lower those EVs"
        )


def _render_raw(row: dict, folder: Path, r: dict) -> list[dict]:
    if r["realistic"]["enabled"]:  # the EV 0 development is the reference, captured like an sRGB photo
        reference = resize_max_side(develop_raw(Path(row["path"]), [], r["raw"]["half_size"])[0.0], r["max_side"])
        write_rgb(folder / "reference.png", reference)
        return _render_realistic(read_rgb(folder / "reference.png"), row["scene"], folder, r)
    developed = develop_raw(Path(row["path"]), r["evs"], r["raw"]["half_size"], scene_tau(r, row["scene"]))
    renders = {ev: resize_max_side(image, r["max_side"]) for ev, image in developed.items()}
    write_rgb(folder / "reference.png", renders[0.0])
    rows = []
    for i, ev in enumerate(r["evs"]):
        image = renders[ev]
        if r["noise"]["shot"] or r["noise"]["read"]:  # same noise model and seeding as sRGB photos
            rng = np.random.default_rng([r["seed"], zlib.crc32(row["scene"].encode()), i])
            linear = add_noise(srgb_to_linear(image.astype(np.float64)), r["noise"]["shot"], r["noise"]["read"], rng)
            image = linear_to_srgb(linear)
        write_rgb(folder / f"{ev_name(ev)}.png", image)
        rows.append({"ev": ev, "input": folder / f"{ev_name(ev)}.png", "reference": folder / "reference.png"})
    return _with_tau(rows, row["scene"], r)


def _dataset_columns(row: dict) -> dict:
    """The benchmark-dataset columns of an index row that are set (`download.DATASET_FIELDS`)."""
    return {k: row[k] for k in download.DATASET_FIELDS if row.get(k)}


def exposure_group(image: np.ndarray, reference: np.ndarray) -> str:
    """'under' when the input's mean grey (BT.601 luma of the sRGB values) is below its reference's, else 'over'."""
    weights = np.array(LUMA_BT601)
    return "under" if float((image @ weights).mean()) < float((reference @ weights).mean()) else "over"


def _render_msec(row: dict, folder: Path, r: dict) -> list[dict]:
    ev = float(row["ev"])
    out = {"ev": ev, "split": row["split"], **_dataset_columns(row)}
    out["input"] = folder / f"{ev_name(ev)}.png"
    write_rgb(out["input"], resize_max_side(read_rgb(row["path"]), r["max_side"]))
    for column in REFERENCE_COLUMNS:
        if row.get(column):
            target = folder / f"{column}.png"
            if not target.exists():  # shared by the five EVs of a scene
                write_rgb(target, resize_max_side(read_rgb(row[column]), r["max_side"]))
            out[column] = target
    return [out]


def _render_pair(row: dict, folder: Path, r: dict) -> list[dict]:
    """A benchmark pair (LOL, SICE, LCDP: one input per scene, no EV given: EV 0) copied, resized when
    `render.max_side` is set; an empty exposure group (SICE) is decided by `exposure_group`."""
    image = resize_max_side(read_rgb(row["path"]), r["max_side"])
    reference = resize_max_side(read_rgb(row["reference"]), r["max_side"])
    if image.shape != reference.shape:
        raise ImageError(f"{row['path']}: size {image.shape[1]}x{image.shape[0]} differs from its reference "
                         f"{row['reference']} ({reference.shape[1]}x{reference.shape[0]})")
    out = {"ev": 0.0, "split": row["split"], "input": folder / f"{ev_name(0.0)}.png",
           "reference": folder / "reference.png", **_dataset_columns(row)}
    out.setdefault("exposure", exposure_group(image, reference))
    write_rgb(out["input"], image)
    write_rgb(out["reference"], reference)
    return [out]


def _render_stack(row: dict, folder: Path, r: dict) -> list[dict]:
    return render_stacks.render_scene(row, folder, r)


RENDERERS = {"srgb": _render_srgb, "raw": _render_raw, "msec": _render_msec, "pair": _render_pair,
             "stack": _render_stack}


def run(params: dict) -> None:
    """Render every photo of data/downloads/index.csv at every EV into data/rendered/."""
    r = dict(params["render"], evs=[float(ev) + 0.0 for ev in params["render"]["evs"]])  # -0.0 -> 0.0
    index = read_csv(download.INDEX)
    lowest_tau = tau_range(r["tau"])[0]  # checks a range before any work, whatever the source
    if r["realistic"]["enabled"]:
        _check_realistic(r["realistic"])
    elif any(row["kind"] == "raw" for row in index):
        _check_raw_evs(r["evs"], lowest_tau)
    rows: list[dict] = []
    failed = 0
    done: set[str] = set()
    with atomic_dir(IMAGES) as tmp:
        for row in tqdm(index, desc="render", unit="photo", disable=None):
            folder = tmp / row["scene"]
            if row["kind"] != "msec":  # one photo per scene: a repeat would overwrite the first one's files
                if row["scene"] in done:
                    log.warning("skipped %s: scene %r already rendered from another file", row["path"], row["scene"])
                    failed += 1
                    continue
                done.add(row["scene"])
            folder.mkdir(exist_ok=True)
            try:
                rendered = RENDERERS[row["kind"]](row, folder, r)
            except ImageError as exc:
                log.warning("skipped %s", exc)
                failed += 1
                if row["kind"] != "msec":
                    done.discard(row["scene"])  # another file of the scene may still render
                    shutil.rmtree(folder)  # no half-rendered scene left in images/
                elif not any(folder.iterdir()):
                    folder.rmdir()
                continue
            for out in rendered:
                out.update(scene=row["scene"], source=row["kind"])
                rows.append({k: IMAGES / v.relative_to(tmp) if isinstance(v, Path) else v for k, v in out.items()})
        if not rows:
            raise ImageError(f"{download.INDEX}: none of its {len(index)} photos could be rendered")
    columns = ["scene", "ev"] + (["tau"] if any("tau" in row for row in rows) else []) + ["input"]
    columns += [c for c in REFERENCE_COLUMNS if any(c in row for row in rows)]
    columns += ["source"] + (["split"] if any("split" in row for row in rows) else [])
    columns += [c for c in STACK_COLUMNS + ["key_ev"] + synthesis.COLUMNS + download.DATASET_FIELDS
                if any(c in row for row in rows)]
    write_csv(MANIFEST, rows, columns)

    write_csv(REGISTRATION, render_stacks.registration_table(IMAGES), render_stacks.REGISTRATION_FIELDS)
    log.info("render: %d inputs from %d photos (%d failed)", len(rows), len(index) - failed, failed)

"""The render stage for exposure stacks (`data.source: stacks`): one scene's bracket -> registered inputs,
the reference, augmented copies (called by `render.run` for index rows of kind ``stack``).

For each scene:

1. Every exposure is decoded (JPEG/PNG/TIFF as is; camera raw developed by LibRaw at EV 0 with the
   settings of the raw source) and resized to at most ``render.max_side``.
2. The **reference exposure** is the one nearest mid-grey: the exposure whose log-average luminance is
   closest to 0.18 (the one `ev_auto` would change least). Every exposure's EV is
   log2(its exposure time / the reference exposure's), rounded to 1/``render.stacks.ev_steps_per_stop`` stop.
3. The **reference**: the scene's own reference image (``render.stacks.reference: provided``; a scene
   without one uses ``render.stacks.fallback``), or made from the registered stack: ``mertens`` (Mertens
   exposure fusion), ``debevec_reinhard`` (Debevec merge with the real exposure times + Reinhard tone
   map) or ``nearest_mid_grey`` (the reference exposure itself).
4. **Registration** (`expocorr.imaging.register`, ECC): with a provided reference every exposure is aligned
   to it; otherwise the reference exposure is the template, and each other exposure is aligned to its
   already-registered neighbour toward it (exposures one step apart share the most unclipped pixels).
   Either way the search starts from that neighbour's warp. Pairs whose ECC correlation is below
   ``register.threshold``, or whose warp moves an image corner more than ``register.max_shift`` of the
   long side, are dropped. The kept exposures are warped into the reference's frame, and all images of
   the scene are cropped by the same margin so that no border pixel is invented.
5. ``render.stacks.augment.copies`` augmented copies of the registered scene (random crop, flip and
   rotation by a multiple of 90°, the same for every image of the copy), after registration.

Written per scene in ``data/rendered/images/<scene>/``: ``ev±X.png`` (the registered inputs),
``reference.png``, ``stack.json`` (the registered exposures and their exposure times: what the
``mertens`` and ``debevec_reinhard`` baselines fuse), ``transforms.json`` (every fitted warp) and
``registration.csv`` (one row per pair, gathered into ``data/rendered/registration.csv``); each copy
in ``aug<k>/``.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from pathlib import Path

import cv2
import numpy as np

from expocorr.baselines import fusion
from expocorr.baselines.classical import auto_ev
from expocorr.imaging import register
from expocorr.imaging.colour import srgb_to_linear
from expocorr.imaging.images import ImageError, read_rgb, resize_max_side, to_uint8, write_rgb
from expocorr.imaging.raw import develop_raw
from expocorr.imaging.synthesis import ev_name
from expocorr.sources import stacks
from expocorr.tables import read_csv, write_csv

log = logging.getLogger(__name__)

REGISTRATION_FIELDS = ["scene", "file", "exposure_time", "ev", "template", "motion", "ecc", "corner_shift_px",
                       "kept", "reason", "note", "warp"]
ASPECT_TOLERANCE = 0.02  # a provided reference may differ this much in aspect ratio (it is then resized)


def _decode(entry: dict, r: dict) -> np.ndarray:
    if entry["kind"] == "raw":
        image = develop_raw(Path(entry["path"]), [0.0], r["raw"]["half_size"])[0.0]
    else:
        image = read_rgb(entry["path"])
    return resize_max_side(image, r["max_side"]).astype(np.float32)


def reference_exposure(images: list[np.ndarray]) -> int:
    """Index of the exposure nearest mid-grey: the smallest |auto_ev| (log-average luminance vs 0.18)."""
    return int(np.argmin([abs(auto_ev(srgb_to_linear(image.astype(np.float64)))) for image in images]))


def relative_evs(times: list[float], anchor: int, steps_per_stop: int) -> list[float]:
    """log2(time / anchor's time) per exposure, rounded to 1/steps_per_stop stop (0: not rounded)."""
    evs = [math.log2(t / times[anchor]) for t in times]
    if steps_per_stop:
        evs = [round(ev * steps_per_stop) / steps_per_stop for ev in evs]
    return [round(ev, 4) + 0.0 for ev in evs]


def _order(n: int, anchor: int) -> list[tuple[int, int | None]]:
    """(exposure, its neighbour toward the anchor) pairs, the anchor first, then outward."""
    out: list[tuple[int, int | None]] = [(anchor, None)]
    for step in range(1, n):
        for i in (anchor - step, anchor + step):
            if 0 <= i < n:
                out.append((i, i + 1 if i < anchor else i - 1))
    return out


def _quantised(image: np.ndarray) -> np.ndarray:
    """As written to and read back from an 8-bit PNG."""
    return to_uint8(image).astype(np.float32) / 255.0


def make_reference(mode: str, images: list[np.ndarray], times: list[float], anchor: int, r: dict) -> np.ndarray:
    """A reference made from a registered stack (`images` sorted by exposure time; `anchor`: the
    reference exposure): ``mertens``, ``debevec_reinhard`` or ``nearest_mid_grey``."""
    if mode == "nearest_mid_grey":
        return images[anchor]
    if mode == "mertens":
        return fusion.fuse_stack(images)
    if len(set(times)) < 2:
        raise ImageError("debevec_reinhard needs at least two registered exposures with different exposure times")
    return fusion.debevec_reinhard(images[anchor], {"render": r, "stack": list(zip(images, times, strict=True))})


def augment_transform(scene: str, copy: int, shape: tuple, cfg: dict):
    """The augmentation of copy `copy` of `scene` (seeded): a function applied to every image of the copy."""
    rng = np.random.default_rng([cfg["seed"], zlib.crc32(scene.encode()), copy])
    h, w = shape[:2]
    ch, cw = max(16, round(cfg["crop"] * h)), max(16, round(cfg["crop"] * w))
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    flip = bool(cfg["flip"]) and bool(rng.integers(2))
    turns = int(rng.integers(4)) if cfg["rotate"] else 0

    def apply(image: np.ndarray) -> np.ndarray:
        out = image[y0 : y0 + ch, x0 : x0 + cw]
        return np.ascontiguousarray(np.rot90(out[:, ::-1] if flip else out, turns))

    return apply


def _names(evs: list[float]) -> list[str]:
    """File stems per EV (ev_name), made distinct when two exposures share an EV."""
    names, seen = [], {}
    for ev in evs:
        stem = ev_name(ev)
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def _write_scene(folder: Path, scene: str, images, reference, entries, augment: int) -> list[dict]:
    """Write one (possibly augmented) registered scene; return its manifest rows."""
    folder.mkdir(parents=True, exist_ok=True)
    write_rgb(folder / "reference.png", reference)
    listing = {"scene": scene, "reference": "reference.png", "exposures": []}
    rows = []
    for image, entry in zip(images, entries, strict=True):
        name = f"{entry['name']}.png"
        write_rgb(folder / name, image)
        listing["exposures"].append({"file": name, "exposure_time": entry["exposure_time"], "ev": entry["ev"],
                                     "source": entry["file"]})
        rows.append({"ev": entry["ev"], "input": folder / name, "reference": folder / "reference.png",
                     "stack": folder / stacks.LISTING, "exposure_time": entry["exposure_time"], "augment": augment})
    (folder / stacks.LISTING).write_text(json.dumps(listing, indent=2) + "\n")
    return rows


def register_stack(images: list[np.ndarray], entries: list[dict], anchor: int, provided: np.ndarray | None,
                   reg: dict) -> tuple[dict, dict, list[dict]]:
    """Register a scene's exposures (`images`, sorted by exposure time; `anchor`: the reference
    exposure) to `provided` or, without one, to the reference exposure (each through its neighbour
    toward it); `reg` = ``render.stacks.register``. Returns the kept exposures warped into the
    reference frame and their warps (both by index) and one registration-table row per exposure."""
    shape = images[0].shape
    max_shift = reg["max_shift"] * max(shape[:2])
    warps: dict[int, np.ndarray] = {}
    registered: dict[int, np.ndarray] = {}
    table = []
    for i, toward in _order(len(images), anchor):
        neighbour = _nearest_kept(toward, anchor, warps)
        start = warps[neighbour] if neighbour is not None else np.eye(3)
        if provided is not None:
            template, template_name = provided, "reference"
        elif neighbour is None:  # the reference exposure: the template of the others
            template, template_name = images[i], "(itself: the reference exposure)"
        else:
            template, template_name = registered[neighbour], entries[neighbour]["file"]
        if provided is None and i == anchor:
            fit = register.Alignment(np.eye(3), 1.0, "")
        else:
            fit = register.align(template, images[i], reg["motion"], reg["max_iterations"], reg["epsilon"],
                                 reg["levels"], max_shift, start)
        shift = register.corner_shift(fit.warp, shape)
        keep = fit.ecc >= reg["threshold"] and shift <= max_shift  # (False for a NaN correlation)
        reason = "" if keep else (
            f"ECC correlation {fit.ecc:.4f} below render.stacks.register.threshold {reg['threshold']:g}"
            if not fit.ecc >= reg["threshold"] else
            f"a corner moves {shift:.1f} px, more than render.stacks.register.max_shift ({max_shift:.1f} px)")
        if keep:
            warps[i] = fit.warp
            registered[i] = register.warp_image(images[i], fit.warp, shape)
        table.append({"file": entries[i]["file"], "exposure_time": entries[i]["exposure_time"], "ev": entries[i]["ev"],
                      "template": template_name, "motion": reg["motion"], "ecc": round(fit.ecc, 6),
                      "corner_shift_px": round(shift, 3), "kept": keep, "reason": reason, "note": fit.note,
                      "warp": json.dumps(np.round(fit.warp, 6).tolist())})
    return registered, warps, table


def render_scene(row: dict, folder: Path, r: dict) -> list[dict]:
    """Render one stack scene (an index row of kind ``stack``) into `folder`; return its manifest rows."""
    scene, cfg = row["scene"], r["stacks"]
    reg = cfg["register"]
    listing = stacks.read_listing(row["path"])
    entries = sorted(listing["exposures"], key=lambda e: float(e["exposure_time"]))
    images = [_decode(e, r) for e in entries]
    times = [float(e["exposure_time"]) for e in entries]
    anchor = reference_exposure(images)
    evs = relative_evs(times, anchor, cfg["ev_steps_per_stop"])
    for entry, ev, name in zip(entries, evs, _names(evs), strict=True):
        entry.update(ev=ev, name=name)

    mode = cfg["reference"]
    if mode == "provided" and listing["reference_path"] is None:
        mode = cfg["fallback"]
        if mode is None:
            raise ImageError(f"{row['path']}: scene {scene!r} has no reference image and "
                             "render.stacks.fallback is null")
    provided = None
    if mode == "provided":
        provided = resize_max_side(read_rgb(listing["reference_path"]), r["max_side"])
        images = [_to_shape(image, provided.shape, scene) for image in images]
    else:
        shapes = {image.shape for image in images}
        if len(shapes) > 1:
            raise ImageError(f"{row['path']}: the exposures of scene {scene!r} differ in size: {sorted(shapes)}")

    shape = images[0].shape
    registered, warps, table = register_stack(images, entries, anchor, provided, reg)
    for pair in table:
        pair["scene"] = scene
    table.sort(key=lambda t: t["exposure_time"])
    write_csv(folder / "registration.csv", table, REGISTRATION_FIELDS)
    dropped = [t["file"] for t in table if not t["kept"]]
    if dropped:
        log.warning("render: %s: %d of %d exposures dropped by registration: %s", scene, len(dropped), len(table),
                    ", ".join(dropped))
    kept = sorted(warps)
    if not kept:
        raise ImageError(f"{row['path']}: no exposure of scene {scene!r} could be registered "
                         "(see its registration.csv)")

    margin = register.crop_margin([warps[i] for i in kept], shape)
    if min(shape[:2]) - 2 * margin < 16:
        raise ImageError(f"{row['path']}: scene {scene!r}: registration would crop the images to nothing")
    crop = (slice(margin, shape[0] - margin), slice(margin, shape[1] - margin))
    inputs = [_quantised(registered[i][crop]) for i in kept]
    kept_entries = [entries[i] for i in kept]
    if provided is not None:
        reference = provided[crop]
    else:
        reference = make_reference(mode, inputs, [times[i] for i in kept], kept.index(anchor), r)
    (folder / "transforms.json").write_text(json.dumps({
        "scene": scene, "motion": reg["motion"], "reference": mode, "reference_exposure": entries[anchor]["file"],
        "size": list(shape[:2]), "crop_margin": margin,
        "pairs": [{k: t[k] for k in ("file", "exposure_time", "ev", "template", "kept", "reason", "note")}
                  | {"ecc": None if math.isnan(t["ecc"]) else t["ecc"], "warp": json.loads(t["warp"])} for t in table],
    }, indent=2) + "\n")

    rows = _write_scene(folder, scene, inputs, reference, kept_entries, 0)
    aug = cfg["augment"]
    for copy in range(1, aug["copies"] + 1):
        apply = augment_transform(scene, copy, inputs[0].shape, aug)
        rows += _write_scene(folder / f"aug{copy}", scene, [apply(x) for x in inputs], apply(reference),
                             kept_entries, copy)
    return rows


def _nearest_kept(i: int | None, anchor: int, warps: dict) -> int | None:
    """`i`, or the next exposure from it toward the anchor, that registration kept (None: none)."""
    while i is not None:
        if i in warps:
            return i
        i = None if i == anchor else (i + 1 if i < anchor else i - 1)
    return None


def _to_shape(image: np.ndarray, shape: tuple, scene: str) -> np.ndarray:
    """An exposure resized to the provided reference's size (their aspect ratios must agree)."""
    if image.shape == shape:
        return image
    h, w = image.shape[:2]
    rh, rw = shape[:2]
    if abs((w / h) / (rw / rh) - 1) > ASPECT_TOLERANCE:
        raise ImageError(f"scene {scene!r}: the reference ({rw}×{rh}) and the exposures ({w}×{h}) differ in "
                         "aspect ratio")
    return cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA)


def registration_table(images: Path) -> list[dict]:
    """Every scene's registration.csv under `images` (the rendered images folder), in scene order."""
    return [row for path in sorted(images.glob("*/registration.csv")) for row in read_csv(path)]

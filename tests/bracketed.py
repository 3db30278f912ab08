"""Bracketed exposure stacks built from real photos in linear light, for the stack tests.

A scikit-image sample photo, decoded from sRGB to linear light, is the scene's radiance; an exposure
of `t` seconds is ``sRGB(clip(radiance * t * gain))`` in 8 bits: a camera with the sRGB curve that
clips at white. Exposure times are written as EXIF ``ExposureTime`` (Pillow) or in a sidecar; an
exposure can be misaligned by a known warp (rotation about the centre plus a shift).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import skimage
from PIL import Image, TiffImagePlugin

from expocorr.stages import render

TIMES = (1 / 8, 1 / 4, 1 / 2, 1.0, 2.0)  # seconds; one stop apart
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def radiance(name: str, side: int = 256) -> np.ndarray:
    """A real photo (long side `side`) decoded to linear light, float64 in [0, 1]."""
    rgb = getattr(skimage.data, name)()
    h, w = rgb.shape[:2]
    size = (side, round(side * h / w)) if w >= h else (round(side * w / h), side)
    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).astype(np.float64) / 255.0
    return render.srgb_to_linear(rgb)


def expose(linear: np.ndarray, seconds: float, gain: float = 1.0) -> np.ndarray:
    """The 8-bit sRGB exposure (uint8) of `linear` radiance for `seconds` at `gain`."""
    return (render.linear_to_srgb(np.clip(linear * seconds * gain, 0.0, 1.0)) * 255.0 + 0.5).astype(np.uint8)


def known_warp(shape: tuple, degrees: float = 0.0, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """3×3 warp: a rotation by `degrees` about the image centre, then a shift (x, y) in pixels."""
    h, w = shape[:2]
    warp = np.eye(3)
    warp[:2] = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    warp[:2, 2] += shift
    return warp


def misalign(image: np.ndarray, warp: np.ndarray) -> np.ndarray:
    """`image` moved by `warp`: out(warp x) = image(x), i.e. `warp` maps the original frame onto it;
    `register.align(original, out)` should recover `warp`."""
    h, w = image.shape[:2]
    return cv2.warpAffine(image, warp[:2], (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def save(path: Path, image: np.ndarray, seconds: float | None = None) -> None:
    """Write uint8 RGB `image` (format from the suffix), with EXIF ExposureTime `seconds` if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(image)
    if seconds is None:
        pil.save(path)
        return
    exposure = Fraction(seconds).limit_denominator(100000)
    rational = TiffImagePlugin.IFDRational(exposure.numerator, exposure.denominator)
    if path.suffix.lower() in (".tif", ".tiff"):
        info = TiffImagePlugin.ImageFileDirectory_v2()
        info[0x829A] = rational
        info.tagtype[0x829A] = 5  # RATIONAL
        pil.save(path, tiffinfo=info)
    else:
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x829A] = rational
        pil.save(path, exif=exif.tobytes(), **({"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}))


def write_stack(folder: Path, photo: str = "astronaut", times=TIMES, gain: float | None = None, side: int = 256,
                times_in: str = "exif", suffix: str = ".png", warps: dict[int, np.ndarray] | None = None,
                reference: bool = False) -> dict:
    """One scene folder: an exposure of `photo` per time (`exp<i><suffix>`), `warps[i]` misaligning
    exposure i. Exposure times go into EXIF (`times_in="exif"`), `exposures.txt` ("txt"),
    `exposures.csv` ("csv") or nowhere ("none"). `gain` defaults to one that puts the log-average
    luminance of the middle exposure at mid-grey. `reference=True` adds `reference.png`: the
    radiance tone-mapped by a global Reinhard curve (a "provided render").
    Returns the scene's radiance, times, gain and warps."""
    linear = radiance(photo, side)
    times = list(times)
    if gain is None:
        key = float(np.exp(np.mean(np.log(1e-4 + linear @ [0.2126, 0.7152, 0.0722]))))
        gain = 0.18 / (key * times[len(times) // 2])
    warps = warps or {}
    lines = []
    for i, t in enumerate(times):
        image = expose(linear, t, gain)
        if i in warps:
            image = misalign(image, warps[i])
        name = f"exp{i}{suffix}"
        save(folder / name, image, t if times_in == "exif" else None)
        lines.append((name, t))
    if times_in == "txt":
        (folder / "exposures.txt").write_text("# file seconds\n" + "".join(
            f"{n} {Fraction(t).limit_denominator(100000)}\n" for n, t in lines))
    elif times_in == "csv":
        (folder / "exposures.csv").write_text("file,exposure_time\n" + "".join(f"{n},{t}\n" for n, t in lines))
    if reference:
        scaled = linear * gain * times[len(times) // 2]
        save(folder / "reference.png", (render.linear_to_srgb(scaled / (1 + scaled)) * 255 + 0.5).astype(np.uint8))
    return {"radiance": linear, "times": times, "gain": gain, "warps": warps}

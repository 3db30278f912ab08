"""Image files: decoding to float RGB and atomic encoding, through OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from expocorr.errors import UserError
from expocorr.atomic import write_bytes

SRGB_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}


class ImageError(UserError, ValueError):
    """An image file that cannot be read or written; the message names the file."""


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an 8- or 16-bit JPEG/PNG/TIFF to float32 RGB in [0, 1], EXIF orientation applied.

    Grayscale becomes three equal channels; alpha is dropped.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if data.size == 0:
        raise ImageError(f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if image is None:
        raise ImageError(f"{path}: not a decodable image (corrupt or unsupported format)")
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{path}: unsupported sample type {image.dtype}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(np.float32) / scale


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] to uint8, rounding to nearest."""
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_rgb(path: str | Path, rgb: np.ndarray) -> None:
    """Encode RGB (uint8, uint16, or float in [0, 1] saved as 8-bit) atomically; format from the suffix."""
    path = Path(path)
    if rgb.dtype not in (np.uint8, np.uint16):
        rgb = to_uint8(rgb)
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageError(f"{path}: OpenCV could not encode this format")
    write_bytes(path, buf.tobytes())


def resize_max_side(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale with area interpolation so the long side is at most `max_side` (never upscale)."""
    h, w = rgb.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return rgb
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)

"""Image files: decoding to float RGB and atomic encoding, through OpenCV; reading only regular files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import cv2
import numpy as np

from expocorr.errors import UserError
from expocorr.atomic import write_bytes

SRGB_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}


class ImageError(UserError, ValueError):
    """An image file that cannot be read or written; the message names the file."""


FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
              (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def regular_size(path: str | Path, name: str | None = None) -> int:
    """The size of `path` if it is a regular file (or a link to one); else `ImageError` saying what it is,
    prefixed with `name` (default: the path). Nothing is opened, so a FIFO or a device cannot block or
    stream forever."""
    name = str(path) if name is None else name
    try:
        mode = os.stat(path)
    except OSError as exc:
        raise ImageError(f"{name}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode.st_mode):
        kind = next((what for test, what in FILE_KINDS if test(mode.st_mode)), "not a plain file")
        link = " links to" if os.path.islink(path) else " is"
        raise ImageError(f"{name}:{link} {kind}, not a regular file; only regular files are read")
    return mode.st_size


def read_regular(path: str | Path, name: str | None = None, max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file `path` (`regular_size`), refused unread when larger than `max_bytes`;
    `ImageError` (prefixed with `name`, default the path) names the reason."""
    name = str(path) if name is None else name
    size = regular_size(path, name)
    if max_bytes is not None and size > max_bytes:
        raise ImageError(f"{name}: too large: {size / 2**20:.0f} MiB, above the {max_bytes / 2**20:.0f} MiB "
                         "a photo within the pixel limit can take; not read")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # swapped for a FIFO since the check: never blocks
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ImageError(f"{name}: changed into something other than a regular file; not read")
            return f.read(size)  # at most the size checked: a file growing meanwhile is not followed
    except OSError as exc:
        raise ImageError(f"{name}: cannot read: {exc.strerror or exc}") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an 8- or 16-bit JPEG/PNG/TIFF (a regular file) to float32 RGB in [0, 1], EXIF orientation
    applied.

    Grayscale becomes three equal channels; alpha is dropped.
    """
    path = Path(path)
    data = read_regular(path)
    if not data:
        raise ImageError(f"{path}: empty file")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    del data
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

"""People's photos in and out, with what makes them theirs: bit depth, alpha, grayscale, EXIF, ICC profile.

`read_photo` decodes JPEG, PNG and TIFF (8 or 16 bit; gray, gray + alpha, RGB, RGBA) and camera raw
files (LibRaw through rawpy, the EV 0 render of `expocorr.imaging.raw.develop_raw`) to float32 RGB in
[0, 1] with the EXIF orientation applied, and keeps the rest aside in a `Photo`. `write_photo`
encodes a corrected RGB image back in the same family: gray stays gray, the alpha channel is put
back untouched, 16 bits stay 16 bits where the format has them (PNG, TIFF), and the EXIF block (its
orientation reset to 1, since the pixels are now upright) and the ICC profile are re-attached.

Libraries: OpenCV decodes the pixels (exact bit depth and channels; its JPEG and PNG decoders leave
the orientation to us, its TIFF decoder applies the Orientation tag itself, which
tests/test_photo_io.py checks) except 8-bit TIFFs, which Pillow decodes (OpenCV premultiplies their
alpha); Pillow reads the metadata and writes 8-bit files with it, OpenCV
writes 16-bit PNG (the iCCP and eXIf chunks are added to its output as the PNG specification
defines them) and tifffile 16-bit TIFF (ICC profile and the EXIF's first-IFD text tags such as
Make, Model and DateTime; Pillow and tifffile cannot write a 16-bit RGB TIFF with an Exif sub-IFD).
Every file is written atomically.

Bounded reading: only regular files are read (a FIFO, a device or a link to one is refused before it
is opened), whole and at their size known up front; with a `max_megapixels` limit a file larger than
a photo of that size can be (`max_file_bytes`) is refused unread, and an image whose header declares
more pixels is refused before any pixel is decoded. Messages quote the file name (`quoted`).
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from expocorr.atomic import write_bytes
from expocorr.imaging.images import ImageError, read_regular, regular_size

log = logging.getLogger(__name__)

RAW_SUFFIXES = {
    ".3fr", ".arw", ".cr2", ".cr3", ".crw", ".dcr", ".dng", ".erf", ".iiq", ".kdc", ".mef", ".mos",
    ".mrw", ".nef", ".nrw", ".orf", ".pef", ".raf", ".raw", ".rw2", ".rwl", ".sr2", ".srf", ".srw", ".x3f",
}
FORMAT_SUFFIX = {"jpeg": ".jpg", "png": ".png", "tiff": ".tif"}
SUFFIX_FORMAT = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".tif": "tiff", ".tiff": "tiff"}
PHOTO_SUFFIXES = set(SUFFIX_FORMAT) | RAW_SUFFIXES
ORIENTATION = 0x0112
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # Pillow's one-channel modes
PILLOW_TIFF_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa"}  # 8-bit TIFFs Pillow decodes
EXIF_HEADER = b"Exif\x00\x00"
METADATA_BYTES = 16 * 2**20  # what a photo file may carry besides its pixels (EXIF, ICC, thumbnails, XMP)
# TIFF tags that describe a TIFF file's own layout: meaningless (or wrong) in another file's EXIF.
TIFF_LAYOUT_TAGS = {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 282, 283, 284, 286,
                    287, 290, 291, 296, 317, 320, 322, 323, 324, 325, 330, 338, 339, 340, 341, 347, 530, 531, 532,
                    700, 33723, 34377, 34675}
# First-IFD text tags tifffile writes into a 16-bit TIFF (code -> name, for the record).
TIFF_TEXT_TAGS = {270: "ImageDescription", 271: "Make", 272: "Model", 305: "Software", 306: "DateTime",
                  315: "Artist", 33432: "Copyright"}


@dataclass
class Photo:
    """A decoded photo: `rgb` float32 H×W×3 in [0, 1], upright; the rest is what `write_photo` puts back."""

    rgb: np.ndarray
    format: str  # jpeg | png | tiff | raw
    bit_depth: int = 8  # 8 or 16 bits per sample in the file
    gray: bool = False  # a one-channel file (rgb has three equal channels)
    alpha: np.ndarray | None = None  # H×W uint8 / uint16, upright, as read
    exif: bytes | None = None  # the EXIF block to write back ("Exif\0\0" + TIFF), orientation 1
    icc: bytes | None = None  # the ICC profile, as read
    orientation: int = 1  # the EXIF orientation the file had (already applied to rgb and alpha)


def is_photo(path: Path) -> bool:
    """Whether `path` has the suffix of a file `read_photo` reads."""
    return path.suffix.lower() in PHOTO_SUFFIXES


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an array (H×W or H×W×C) upright for EXIF orientation 1..8 (as PIL.ImageOps.exif_transpose)."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops.get(orientation, ops[1])(image))


def quoted(path: str | Path) -> str:
    """A file name for a message: quoted and escaped (repr), so a newline in it cannot forge a log line."""
    return repr(str(path))


def max_file_bytes(max_megapixels: float) -> int:
    """The largest file a photo within `max_megapixels` can be: 8 bytes a pixel (uncompressed 16-bit RGBA)
    plus METADATA_BYTES of metadata."""
    return int(max_megapixels * 1e6 * 8) + METADATA_BYTES


def read_photo(path: str | Path, max_megapixels: float | None = None) -> Photo:
    """Decode `path` (JPEG, PNG, TIFF or camera raw; a regular file) into a `Photo`; `ImageError` names the
    file and the reason on failure. With `max_megapixels`, a larger file or a larger declared size (its
    header, read before any pixel is decoded) is refused, which bounds the memory decoding can take."""
    path = Path(path)
    name = quoted(path)
    if path.suffix.lower() in RAW_SUFFIXES:
        return _read_raw(path, name, max_megapixels)
    data = read_regular(path, name, None if max_megapixels is None else max_file_bytes(max_megapixels))
    if not data:
        raise ImageError(f"{name}: empty file")
    fmt, exif, icc, orientation, mode, bits, size = _metadata(name, data)
    _check_size(name, size, max_megapixels)
    gray_mode = mode in GRAY_MODES
    if fmt == "tiff" and mode in PILLOW_TIFF_MODES and bits == 8:
        image, _ = _decode_tiff8(name, data, mode)  # upright already
    else:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    del data
    if image is None or image.size == 0:
        raise ImageError(f"{name}: corrupt or truncated {fmt.upper()} (its pixels do not decode)")
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{name}: unsupported sample type {image.dtype} (8- or 16-bit images only)")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise ImageError(f"{name}: unsupported channel count {image.shape[2]}")
    if fmt != "tiff" or bits != 8:  # OpenCV's TIFF decoder applies the Orientation tag itself
        image = apply_orientation(image, orientation)
    alpha = None
    if image.ndim == 3 and image.shape[2] == 4:
        alpha = np.ascontiguousarray(image[..., 3])
    if image.ndim == 2 or image.shape[2] == 1:
        gray, channels = True, image.reshape(image.shape[0], image.shape[1])
    elif gray_mode:  # a gray (+ alpha) file OpenCV expanded to BGR(A)
        gray, channels = True, image[..., 0]
    else:
        gray, channels = False, image[..., 2::-1]  # BGR(A) -> RGB
    scale = np.float32(65535.0 if image.dtype == np.uint16 else 255.0)
    if gray:
        rgb = np.empty((*channels.shape, 3), dtype=np.float32)
        np.divide(channels, scale, out=rgb[..., 0], dtype=np.float32)
        rgb[..., 1] = rgb[..., 0]
        rgb[..., 2] = rgb[..., 0]
    else:
        rgb = np.empty(channels.shape, dtype=np.float32)
        np.divide(channels, scale, out=rgb, dtype=np.float32)
    del image, channels
    return Photo(rgb=rgb, format=fmt, bit_depth=16 if scale > 255 else 8, gray=gray, alpha=alpha, exif=exif,
                 icc=icc, orientation=orientation)


def _decode_tiff8(name: str, data: bytes, mode: str) -> tuple[np.ndarray, int]:
    """An 8-bit TIFF through Pillow (OpenCV premultiplies an 8-bit TIFF's alpha), laid out as OpenCV
    would (H×W gray, H×W×3 BGR or H×W×4 BGRA), and the orientation still to apply: Pillow may apply
    the Orientation tag while decoding, and then reports 1."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked already
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                remaining = int(im.getexif().get(ORIENTATION, 1) or 1)
                target = "L" if mode in ("1", "L") else "LA" if mode in ("LA", "La") else \
                    "RGBA" if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info) else "RGB"
                pixels = np.asarray(im.convert(target) if im.mode != target else im)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: corrupt or truncated TIFF ({exc})") from None
    remaining = remaining if 1 <= remaining <= 8 else 1
    if target == "LA":  # as OpenCV gives gray + alpha: BGRA with equal colour channels
        pixels = np.dstack([pixels[..., 0], pixels[..., 0], pixels[..., 0], pixels[..., 1]])
    elif target == "RGB":
        pixels = pixels[..., ::-1]
    elif target == "RGBA":
        pixels = pixels[..., [2, 1, 0, 3]]
    return apply_orientation(pixels, remaining), remaining


def _metadata(name: str, data: bytes) -> tuple[str, bytes | None, bytes | None, int, str, int, tuple[int, int]]:
    """Format, EXIF to write back, ICC profile, EXIF orientation, Pillow's mode, (TIFF) bits per sample and
    the declared (width, height): Pillow reads the header only; no pixel is decoded here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings on odd metadata; the pixels decide
            with Image.open(io.BytesIO(data)) as im:
                fmt = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "TIFF": "tiff"}.get(im.format or "")
                if fmt is None:
                    raise ImageError(f"{name}: {im.format} images are not supported (JPEG, PNG, TIFF or camera raw)")
                mode, size = im.mode, im.size
                bits = max(im.tag_v2.get(258) or (8,)) if fmt == "tiff" else 8  # BitsPerSample
                icc = im.info.get("icc_profile") or None
                exif = im.getexif()
                orientation = int(exif.get(ORIENTATION, 1) or 1)
                exif_bytes = _exif_to_keep(exif, fmt)
    except ImageError:
        raise
    except Image.DecompressionBombError:  # Pillow's own limit, above any correct.max_megapixels allows
        raise ImageError(f"{name}: too large: declares more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels "
                         "(Pillow's decompression-bomb limit); not decoded") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: unknown format: not a JPEG, PNG or TIFF image (camera raw files are "
                         "recognised by their suffix)") from None
    except (OSError, ValueError, SyntaxError, struct.error) as exc:
        raise ImageError(f"{name}: corrupt image header ({exc})") from None
    return fmt, exif_bytes, icc, orientation if 1 <= orientation <= 8 else 1, mode, bits, size


def _check_size(name: str, size: tuple[int, int], max_megapixels: float | None) -> None:
    """Refuse a declared width × height above `max_megapixels`, naming the file and the limit."""
    megapixels = size[0] * size[1] / 1e6
    if max_megapixels is not None and megapixels > max_megapixels:
        raise ImageError(f"{name}: too large: {size[0]}×{size[1]} pixels ({megapixels:.4g} megapixels), above "
                         f"correct.max_megapixels = {max_megapixels:g}; not decoded")


def _exif_to_keep(exif: Image.Exif, fmt: str) -> bytes | None:
    """The EXIF block for the output: a TIFF's layout tags dropped, orientation 1 (pixels are upright)."""
    if fmt == "tiff":
        for tag in [t for t in exif if t in TIFF_LAYOUT_TAGS]:
            del exif[tag]
    if not len(exif):
        return None
    if ORIENTATION in exif:
        exif[ORIENTATION] = 1
    try:
        return exif.tobytes()
    except Exception as exc:  # an EXIF Pillow can read but not re-encode: keep the pixels, drop it
        log.warning("EXIF not re-encodable (%s); the output has none", exc)
        return None


def _read_raw(path: Path, name: str, max_megapixels: float | None) -> Photo:
    import rawpy

    regular_size(path, name)
    try:
        with rawpy.imread(str(path)) as raw:  # opens and reads the header; the sensor data is not unpacked
            size = (raw.sizes.width, raw.sizes.height)
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        detail = exc.args[0] if len(exc.args) == 1 else exc
        detail = detail.decode(errors="replace") if isinstance(detail, bytes) else detail
        raise ImageError(f"{name}: not a camera raw file LibRaw reads ({detail})") from None
    _check_size(name, size, max_megapixels)
    from expocorr.imaging.raw import develop_raw

    try:
        rgb = develop_raw(path, [0.0], half_size=False)[0.0]  # LibRaw applies the camera's orientation
    except ImageError as exc:
        raise ImageError(f"{name}: {str(exc).removeprefix(f'{path}: ')}") from None
    return Photo(rgb=np.ascontiguousarray(rgb, dtype=np.float32), format="raw", bit_depth=16)


# --- writing ----------------------------------------------------------------------------------------


def output_format(photo: Photo, requested: str) -> str:
    """`jpeg`, `png` or `tiff` for --format `requested` (jpg | png | tif | same); raw `same` -> 16-bit TIFF."""
    requested = {"jpg": "jpeg", "tif": "tiff"}.get(requested, requested)
    if requested == "same":
        return "tiff" if photo.format == "raw" else photo.format
    if requested not in FORMAT_SUFFIX:
        raise ValueError(f"unknown output format {requested!r} (jpg | png | tif | same)")
    return requested


def _quantise(x: np.ndarray, depth: int) -> np.ndarray:
    peak = np.float32(65535.0 if depth == 16 else 255.0)
    out = np.clip(x, 0.0, 1.0)  # one float32 temporary, scaled in place
    out *= peak
    out += np.float32(0.5)
    return out.astype(np.uint16 if depth == 16 else np.uint8)


def encode_photo(photo: Photo, rgb: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    """Encoded bytes of `rgb` (float H×W×3 in [0, 1]) with `photo`'s depth, gray/alpha and metadata."""
    if fmt not in FORMAT_SUFFIX:
        raise ValueError(f"unknown output format {fmt!r}")
    depth = 16 if photo.bit_depth == 16 and fmt in ("png", "tiff") else 8
    alpha = photo.alpha if fmt != "jpeg" else None
    if alpha is not None and alpha.shape != rgb.shape[:2]:
        raise ValueError(f"alpha {alpha.shape} and image {rgb.shape[:2]} differ in size")
    if alpha is not None and alpha.dtype != (np.uint16 if depth == 16 else np.uint8):
        alpha = (alpha.astype(np.float32) * (65535.0 / 255.0 if depth == 16 else 255.0 / 65535.0) + 0.5).astype(
            np.uint16 if depth == 16 else np.uint8)
    if photo.gray:
        channels = _quantise(cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.float32), cv2.COLOR_RGB2GRAY), depth)
    else:
        channels = _quantise(rgb, depth)
    if alpha is not None:
        channels = np.dstack([channels, alpha])
    if depth == 8:
        return _encode_pillow(channels, fmt, quality, photo)
    if fmt == "png":
        return _encode_png16(channels, photo)
    return _encode_tiff16(channels, photo)


def write_photo(path: str | Path, photo: Photo, rgb: np.ndarray, fmt: str, quality: int = 95) -> None:
    """Encode (`encode_photo`) and write `path` atomically."""
    write_bytes(path, encode_photo(photo, rgb, fmt, quality))


def _encode_pillow(pixels: np.ndarray, fmt: str, quality: int, photo: Photo) -> bytes:
    image = Image.fromarray(pixels)  # uint8 H×W -> L, ×2 -> LA, ×3 -> RGB, ×4 -> RGBA
    options: dict = {}
    if photo.exif:
        options["exif"] = photo.exif
    if photo.icc:
        options["icc_profile"] = photo.icc
    if fmt == "jpeg":
        options.update(quality=quality, optimize=False)
    elif fmt == "png":
        options.update(compress_level=3)
    buf = io.BytesIO()
    # TIFF: uncompressed, the one way Pillow writes an Exif sub-IFD into a TIFF.
    image.save(buf, {"jpeg": "JPEG", "png": "PNG", "tiff": "TIFF"}[fmt], **options)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data (PNG specification, section 5.3)."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _encode_png16(pixels: np.ndarray, photo: Photo) -> bytes:
    if pixels.ndim == 3 and pixels.shape[2] == 2:
        # 16-bit gray + alpha: neither OpenCV nor Pillow writes it; stored as RGBA with equal channels.
        pixels = np.dstack([pixels[..., 0], pixels[..., 0], pixels[..., 0], pixels[..., 1]])
    elif pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA if pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ImageError("OpenCV could not encode the 16-bit PNG")
    data = buf.tobytes()
    extra = b""
    if photo.icc:  # iCCP: profile name, NUL, compression method 0, zlib stream
        extra += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(photo.icc))
    if photo.exif:  # eXIf: the TIFF-structured EXIF without JPEG's "Exif\0\0" marker
        extra += _png_chunk(b"eXIf", photo.exif.removeprefix(EXIF_HEADER))
    ihdr_end = 8 + 8 + 13 + 4  # signature, then IHDR (always first, 13 data bytes)
    return data[:ihdr_end] + extra + data[ihdr_end:]


def _encode_tiff16(pixels: np.ndarray, photo: Photo) -> bytes:
    import tifffile

    extratags = []
    if photo.exif:
        exif = Image.Exif()
        exif.load(photo.exif)
        for code in TIFF_TEXT_TAGS:
            value = exif.get(code)
            if isinstance(value, str) and value:
                extratags.append((code, "s", 0, value, True))
    extratags.append((ORIENTATION, "H", 1, 1, True))
    gray = pixels.ndim == 2 or pixels.shape[2] == 2
    options = {"photometric": "minisblack" if gray else "rgb", "compression": "zlib", "extratags": extratags}
    if pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        options["extrasamples"] = ["unassalpha"]
    if photo.icc:
        options["iccprofile"] = photo.icc
    buf = io.BytesIO()
    tifffile.imwrite(buf, pixels, **options)
    return buf.getvalue()

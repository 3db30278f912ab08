"""Photo reading and writing: every input kind round-trips with its size, orientation, alpha, gray, bit
depth, EXIF and ICC profile; bad files fail with one error naming them."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import tifffile
from PIL import Image, ImageCms, ImageOps

from expocorr.imaging.images import ImageError
from expocorr.imaging.photo_io import (
    Photo,
    apply_orientation,
    output_format,
    read_photo,
    write_photo,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture(scope="module")
def real8() -> np.ndarray:
    """A crop of a real photo (scikit-image's astronaut), 48×64 RGB uint8: non-square, so rotations show."""
    return np.ascontiguousarray(skimage.data.astronaut()[100:148, 180:244])


def exif_block(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "expocorr camera"  # Make
    exif[0x0110] = "model X"  # Model
    exif.get_ifd(0x8769)[0x829A] = (1, 250)  # ExposureTime 1/250 s, in the Exif sub-IFD
    return exif


def make_file(path: Path, kind: str, real8: np.ndarray) -> dict:
    """Write one input of `kind` (format-depth-channels); return what read_photo should see."""
    fmt, depth, channels = kind.split("-")
    rgb8 = real8
    rgb = rgb8.astype(np.uint16) * 257 if depth == "16" else rgb8
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    alpha = (np.linspace(0, 1, rgb.shape[1])[None, :] * np.ones((rgb.shape[0], 1)) * (65535 if depth == "16" else 255))
    alpha = alpha.astype(rgb.dtype)
    pixels = {"rgb": rgb, "rgba": np.dstack([rgb, alpha]), "gray": gray}[channels]
    if depth == "8":
        Image.fromarray(pixels).save(path, {"jpg": "JPEG", "png": "PNG", "tif": "TIFF"}[fmt],
                                     exif=exif_block().tobytes(), icc_profile=SRGB_ICC,
                                     **({"quality": 95} if fmt == "jpg" else {}))
    else:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA if channels == "rgba" else cv2.COLOR_RGB2BGR) \
            if channels != "gray" else pixels
        assert cv2.imwrite(str(path), bgr)
    return {"shape": rgb.shape, "alpha": alpha if channels == "rgba" else None, "gray": channels == "gray",
            "depth": int(depth), "rgb": rgb8.astype(np.float32) / 255 if channels != "gray" else None,
            "metadata": depth == "8"}


KINDS = ["jpg-8-rgb", "jpg-8-gray", "png-8-rgb", "png-8-rgba", "png-8-gray", "png-16-rgb", "png-16-rgba",
         "png-16-gray", "tif-8-rgb", "tif-8-rgba", "tif-8-gray", "tif-16-rgb", "tif-16-rgba", "tif-16-gray"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_input_kind_round_trips(tmp_path, kind, real8):
    path = tmp_path / f"in.{kind.split('-')[0]}"
    expect = make_file(path, kind, real8)
    photo = read_photo(path)
    assert photo.rgb.shape == expect["shape"] and photo.rgb.dtype == np.float32
    assert photo.gray == expect["gray"] and photo.bit_depth == expect["depth"]
    assert photo.format == {"jpg": "jpeg", "png": "png", "tif": "tiff"}[kind.split("-")[0]]
    if expect["alpha"] is None:
        assert photo.alpha is None
    else:
        np.testing.assert_array_equal(photo.alpha, expect["alpha"])
    if expect["rgb"] is not None and kind.startswith("jpg"):  # lossy: the pixels, on average
        assert np.abs(photo.rgb - expect["rgb"]).mean() < 4 / 255
    elif expect["rgb"] is not None:
        np.testing.assert_allclose(photo.rgb, expect["rgb"], atol=1e-6)
    if expect["metadata"]:
        assert photo.icc == SRGB_ICC and photo.exif is not None

    # Write the same pixels back in the same format: everything is kept.
    out = tmp_path / f"out{path.suffix}"
    write_photo(out, photo, photo.rgb, output_format(photo, "same"))
    again = read_photo(out)
    assert again.rgb.shape == photo.rgb.shape and again.gray == photo.gray and again.bit_depth == photo.bit_depth
    if photo.alpha is not None:
        np.testing.assert_array_equal(again.alpha, photo.alpha)  # untouched
    if kind.startswith("jpg"):
        assert np.abs(again.rgb - photo.rgb).mean() < 3 / 255
    else:  # lossless: the same samples
        np.testing.assert_allclose(again.rgb, photo.rgb, atol=0.51 / (65535 if photo.bit_depth == 16 else 255))
    if expect["metadata"]:
        assert again.icc == SRGB_ICC
        exif = Image.open(out).getexif()
        assert exif[0x010F] == "expocorr camera" and exif.get_ifd(0x8769)[0x829A] == (1, 250)


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_16_bit_outputs_carry_icc_and_exif(tmp_path, fmt, real8):
    path = tmp_path / f"in.{fmt}"
    make_file(path, f"{fmt}-16-rgb", real8)
    photo = read_photo(path)
    photo.icc, photo.exif = SRGB_ICC, exif_block().tobytes()
    write_photo(tmp_path / f"out.{fmt}", photo, photo.rgb, output_format(photo, "same"))
    again = read_photo(tmp_path / f"out.{fmt}")
    assert again.bit_depth == 16 and again.icc == SRGB_ICC
    exif = Image.open(tmp_path / f"out.{fmt}").getexif()
    assert exif[0x010F] == "expocorr camera" and exif.get(0x0112, 1) == 1
    if fmt == "png":  # the whole EXIF block, sub-IFD included
        assert exif.get_ifd(0x8769)[0x829A] == (1, 250)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF"])
def test_exif_orientation_is_applied_and_reset(tmp_path, orientation, fmt, real8):
    path = tmp_path / f"o.{fmt.lower()}"
    Image.fromarray(real8).save(path, fmt, exif=exif_block(orientation).tobytes(), icc_profile=SRGB_ICC,
                                **({"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}))
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    photo = read_photo(path)
    assert photo.orientation == orientation
    np.testing.assert_allclose(photo.rgb, upright.astype(np.float32) / 255, atol=1e-6)
    out = tmp_path / f"out.{fmt.lower()}"
    write_photo(out, photo, photo.rgb, output_format(photo, "same"))
    written = Image.open(out)
    assert written.getexif().get(0x0112, 1) == 1  # pixels are upright now: orientation reset
    assert written.size == (upright.shape[1], upright.shape[0])
    assert read_photo(out).rgb.shape == upright.shape


def test_apply_orientation_matches_pillow(real8):
    for orientation in range(1, 9):
        exif = exif_block(orientation)
        buf = io.BytesIO()
        Image.fromarray(real8).save(buf, "PNG", exif=exif.tobytes())
        expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))))
        np.testing.assert_array_equal(apply_orientation(real8, orientation), expected)


def test_format_conversions_keep_what_the_format_can_hold(tmp_path, real8):
    path = tmp_path / "in.png"
    make_file(path, "png-16-rgba", real8)
    photo = read_photo(path)
    write_photo(tmp_path / "o.jpg", photo, photo.rgb, output_format(photo, "jpg"))
    jpeg = read_photo(tmp_path / "o.jpg")
    assert jpeg.bit_depth == 8 and jpeg.alpha is None and jpeg.rgb.shape == photo.rgb.shape
    write_photo(tmp_path / "o.tif", photo, photo.rgb, output_format(photo, "tif"))
    tiff = read_photo(tmp_path / "o.tif")
    assert tiff.bit_depth == 16 and np.array_equal(tiff.alpha, photo.alpha)
    assert tifffile.TiffFile(tmp_path / "o.tif").pages[0].dtype == np.uint16


def test_raw_file_is_developed_at_ev0(tmp_path, make_dng):
    rgb = np.zeros((64, 96, 3))
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 0.2, 0.4, 0.1
    make_dng(tmp_path / "shot.dng", rgb)
    photo = read_photo(tmp_path / "shot.dng")
    assert photo.format == "raw" and photo.bit_depth == 16 and photo.rgb.dtype == np.float32
    assert photo.rgb.shape[2] == 3 and abs(photo.rgb.shape[0] - 64) <= 8 and abs(photo.rgb.shape[1] - 96) <= 8
    assert output_format(photo, "same") == "tiff"
    write_photo(tmp_path / "shot.tif", photo, photo.rgb, "tiff")
    assert read_photo(tmp_path / "shot.tif").bit_depth == 16


@pytest.mark.shared_data
def test_real_camera_raw_file(tmp_path):
    kdc = SHARED / "raw" / "kodak_dc50" / "RAW_KODAK_DC50.KDC"
    if not kdc.exists():
        pytest.skip("shared data absent")
    photo = read_photo(kdc)
    assert photo.format == "raw" and photo.rgb.ndim == 3 and min(photo.rgb.shape[:2]) > 100


@pytest.mark.shared_data
def test_real_camera_jpegs_round_trip(tmp_path):
    folder = SHARED / "photos" / "camera_jpegs"
    if not folder.exists():
        pytest.skip("shared data absent")
    for path in sorted(folder.glob("*.jpg"))[:5]:
        photo = read_photo(path)
        out = tmp_path / path.name
        write_photo(out, photo, photo.rgb, "jpeg")
        assert Image.open(out).size == Image.open(path).size
        assert dict(Image.open(out).getexif()).get(0x010F) == dict(Image.open(path).getexif()).get(0x010F)
        assert (read_photo(out).icc is None) == (photo.icc is None)


@pytest.mark.parametrize("content", ["empty", "text", "truncated-jpeg", "truncated-png", "truncated-tiff"])
def test_bad_files_fail_with_their_name(tmp_path, content, real8):
    path = tmp_path / f"bad_{content}.{'png' if 'png' in content else 'tif' if 'tiff' in content else 'jpg'}"
    if content == "empty":
        path.write_bytes(b"")
    elif content == "text":
        path.write_text("not an image at all\n")
    else:
        buf = io.BytesIO()
        big = cv2.resize(real8, (640, 480))
        fmt = {"jpeg": "JPEG", "png": "PNG", "tiff": "TIFF"}[content.split("-")[1]]
        Image.fromarray(big).save(buf, fmt)
        data = buf.getvalue()
        path.write_bytes(data[: len(data) * 2 // 3] if fmt != "TIFF" else data[: len(data) - 200])
    with pytest.raises(ImageError, match=str(path.name)):
        read_photo(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="missing.jpg"):
        read_photo(tmp_path / "missing.jpg")


def test_photo_defaults():
    photo = Photo(rgb=np.zeros((2, 2, 3), np.float32), format="png")
    assert photo.bit_depth == 8 and not photo.gray and photo.alpha is None and photo.orientation == 1

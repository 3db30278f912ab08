"""Shared pytest fixtures."""

from __future__ import annotations

import copy
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from expocorr import params

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
# The longest test files, longest first (whole-DAG runs of both engines; 24-megapixel photos through every
# method; real trainings), start first, so that under `make test`'s pytest-xdist workers (--dist loadfile)
# they run beside the many short files instead of alone at the end.
LONGEST_FIRST = ("test_engines.py", "test_correct.py", "test_train.py", "test_reliability.py",
                 "test_engine_plans.py", "test_plugins.py", "test_dvc_remote.py", "test_external.py")


def pytest_collection_modifyitems(items: list) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept otherwise


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """An empty repository root as the working directory (the stages write data/ relative to it)."""
    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


@pytest.fixture(scope="session")
def base() -> dict:
    """The repository's params.yaml, loaded and validated once: deep-copy it before changing it."""
    return params.load(REPO_PARAMS)


@pytest.fixture
def p(base) -> dict:
    """A copy of the repository's params for one test to change."""
    return copy.deepcopy(base)


# ---------------------------------------------------------------------------------------------
# Fixtures of the download / archives tests (tests/test_download.py, tests/test_archives.py):
# `http_server` (loopback HTTP server) and `make_dng` (real Bayer DNGs, for the render tests too).
# ---------------------------------------------------------------------------------------------

_CFA_COLOURS = {"R": 0, "G": 1, "B": 2}
# XYZ (D65) -> linear sRGB: as a DNG ColorMatrix1 it makes the camera's native space linear sRGB.
_XYZ_TO_SRGB = [
    [3.2404542, -1.5371385, -0.4985314],
    [-0.9692660, 1.8760108, 0.0415560],
    [0.0556434, -0.2040259, 1.0572252],
]


def mosaic(rgb_float_linear: np.ndarray, pattern: str = "RGGB") -> np.ndarray:
    """A Bayer mosaic (float, HxW) of linear RGB: each pixel keeps the channel its CFA site sees."""
    rgb = np.asarray(rgb_float_linear, dtype=np.float64)
    out = np.empty(rgb.shape[:2])
    for i, colour in enumerate(pattern.upper()):
        dy, dx = divmod(i, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, _CFA_COLOURS[colour]]
    return out


def build_dng(
    path: str | Path,
    rgb_float_linear: np.ndarray,
    pattern: str = "RGGB",
    black_level: int = 512,
    white_level: int = 16383,
    exposure_time: float | None = None,
) -> np.ndarray:
    """Write a real Bayer DNG of a linear-light RGB image (floats in [0, 1], even height and width).

    The image is mosaiced with `pattern` (RGGB, BGGR, GRBG or GBRG) into 16-bit samples
    `black_level + x * (white_level - black_level)`; the DNG declares that black and white level,
    a camera space equal to linear sRGB (ColorMatrix1) and a neutral (1, 1, 1) white balance, so
    LibRaw develops it back to (approximately) the input; `exposure_time` (seconds), when given, is
    recorded as ExposureTime (LibRaw reads it as the shutter time). Returns the uint16 sensor array
    written, which `rawpy.imread(path).raw_image_visible` gives back exactly.
    """
    from pidng import defs
    from pidng.core import RAW2DNG, DNGTags, Tag

    rgb = np.clip(np.asarray(rgb_float_linear, dtype=np.float64), 0.0, 1.0)
    height, width = rgb.shape[:2]
    if rgb.ndim != 3 or rgb.shape[2] != 3 or height % 2 or width % 2:
        raise ValueError(f"need an RGB image of even height and width, got shape {rgb.shape}")
    if not 0 <= black_level < white_level <= 65535:
        raise ValueError(f"need 0 <= black_level < white_level <= 65535, got {black_level}, {white_level}")
    raw = np.round(black_level + mosaic(rgb, pattern) * (white_level - black_level)).astype(np.uint16)

    tags = DNGTags()
    tags.set(Tag.ImageWidth, width)
    tags.set(Tag.ImageLength, height)
    tags.set(Tag.TileWidth, width)
    tags.set(Tag.TileLength, height)
    tags.set(Tag.Orientation, defs.Orientation.Horizontal)
    tags.set(Tag.PhotometricInterpretation, defs.PhotometricInterpretation.Color_Filter_Array)
    tags.set(Tag.SamplesPerPixel, 1)
    tags.set(Tag.BitsPerSample, 16)
    tags.set(Tag.CFARepeatPatternDim, [2, 2])
    tags.set(Tag.CFAPattern, getattr(defs.CFAPattern, pattern.upper()))
    tags.set(Tag.BlackLevel, black_level)
    tags.set(Tag.WhiteLevel, white_level)
    tags.set(Tag.ColorMatrix1, [[round(v * 10000), 10000] for row in _XYZ_TO_SRGB for v in row])
    tags.set(Tag.CalibrationIlluminant1, defs.CalibrationIlluminant.D65)
    tags.set(Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]])
    tags.set(Tag.Make, "expocorr")
    tags.set(Tag.Model, "test sensor")
    tags.set(Tag.UniqueCameraModel, "expocorr test sensor")
    if exposure_time is not None:
        from fractions import Fraction

        exposure = Fraction(exposure_time).limit_denominator(100000)
        tags.set(Tag.ExposureTime, [[exposure.numerator, exposure.denominator]])

    writer = RAW2DNG()
    writer.options(tags, path="", compress=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(writer.convert(raw)))  # no filename: returns the bytes (any suffix allowed)
    return raw


@pytest.fixture
def make_dng():
    """`make_dng(path, rgb_float_linear, pattern='RGGB', black_level=512, white_level=16383,
    exposure_time=None)` -> raw array."""
    return build_dng


class LoopbackServer:
    """A static HTTP server on 127.0.0.1 serving `root`; `requests` lists the paths asked for."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def send_head(self):
                server.requests.append(self.path)
                return super().send_head()

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """A loopback HTTP server serving a fresh folder (`.root`); no proxy is used to reach it."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "served"
    root.mkdir()
    server = LoopbackServer(root)
    yield server
    server.close()


# ------------------------------------- end of download / archives fixtures -------------------

"""Camera raw files developed with LibRaw (rawpy): the EV renders of the render stages and the EV 0
decode of `expocorr.imaging.photo_io`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rawpy

from expocorr.imaging.images import ImageError

LIBRAW_EXP_SHIFT = (0.25, 8.0)  # the range LibRaw accepts for exp_shift (-2 .. +3 EV)


def raw_exp_shift(ev: float, tau: float = 1.0) -> float:
    """LibRaw's linear exp_shift for an EV; for ev > 0 and tau < 1 the highlights clip at tau and rescale
    (min(x * 2**ev, tau) / tau == min(x * 2**ev / tau, 1)), as `expose` does for sRGB photos."""
    return 2.0**ev / tau if ev > 0 and tau < 1 else 2.0**ev


def develop_raw(path: Path, evs: list[float], half_size: bool, tau: float = 1.0) -> dict[float, np.ndarray]:
    """LibRaw renders at each EV (exp_shift, camera white balance, no auto-brightening, sRGB), plus EV 0."""
    try:
        with rawpy.imread(str(path)) as raw:
            return {
                ev: raw.postprocess(
                    exp_shift=raw_exp_shift(ev, tau), exp_preserve_highlights=0.0, no_auto_bright=True,
                    use_camera_wb=True, output_color=rawpy.ColorSpace.sRGB, gamma=(2.4, 12.92), output_bps=16,
                    half_size=half_size,
                ).astype(np.float32) / 65535.0
                for ev in sorted(set(evs) | {0.0})
            }
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        raise ImageError(f"{path}: LibRaw cannot develop it: {exc}") from None

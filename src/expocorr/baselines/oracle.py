"""Oracle baseline: the exact inverse of the render stage's synthesis, given the known EV and tau.

It knows what no real method knows (the EV an input was rendered at, the clipping threshold), so
reports label it an oracle: it bounds what a global exposure correction can reach on synthesised data.
"""

from __future__ import annotations

import numpy as np

from expocorr.baselines.registry import BaselineError, camera_curve, register
from expocorr.imaging.colour import decode_curve, encode_curve


@register("inverse_synthesis", oracle=True)
def inverse_synthesis(rgb: np.ndarray, ctx: dict) -> np.ndarray:
    """Invert ``colour.expose`` with the known ``ctx["ev"]`` and tau (``ctx["tau"]``, the scene's draw from a
    ``render.tau`` range, else ``ctx["render"]["tau"]``): decode the
    camera curve, multiply by tau when ev > 0 and tau < 1 (undoing the rescale after clipping at tau),
    divide by 2**ev, clip to [0, 1], re-encode. Highlights clipped by the synthesis stay clipped, and
    noise and 8-bit quantisation are amplified with the shadows (by design: that is what the oracle shows)."""
    ev = ctx.get("ev")
    if ev is None:
        raise BaselineError("inverse_synthesis is an oracle: it needs the known EV of the input (ctx['ev']), "
                         "and this input has none")
    curve, gamma = camera_curve(ctx)
    ev = float(ev)
    tau = ctx.get("tau", ctx["render"].get("tau", 1.0))
    if not isinstance(tau, (int, float)):
        raise BaselineError(f"inverse_synthesis: render.tau is a range {tau}, and this input's row has no "
                            "tau of its own (the render stage's manifest records each scene's draw)")
    linear = decode_curve(rgb.astype(np.float64), curve, gamma)
    if ev > 0 and tau < 1:
        linear = linear * tau
    linear = np.clip(linear / 2.0**ev, 0.0, 1.0)
    return encode_curve(linear, curve, gamma).astype(np.float32)

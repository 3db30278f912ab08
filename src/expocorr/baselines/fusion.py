"""Exposure-fusion and HDR baselines: Mertens fusion of a bracket synthesised from one photo (or of a
real exposure stack when the dataset has one), and Debevec-Malik radiance recovery + Reinhard tone
mapping of a real exposure stack (OpenCV's photo module)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import cv2
import numpy as np

from expocorr.baselines.registry import BaselineError, camera_curve, register
from expocorr.imaging.images import to_uint8
from expocorr.imaging.colour import decode_curve, encode_curve

MERTENS_EVS = (-2.0, -1.0, 0.0, 1.0, 2.0)  # the synthetic bracket, in stops relative to the input
REINHARD_GAMMA = 2.2  # display gamma of the tone-mapped output (render.gamma when render.curve is gamma)


@register("mertens")
def mertens(rgb: np.ndarray, ctx: dict) -> np.ndarray:
    """Exposure fusion (Mertens, Kautz & Van Reeth 2007) of a bracket synthesised from the one input:
    decode the camera curve of ``ctx["render"]``, scale linear light by 2**e for e in ``MERTENS_EVS``,
    clip, re-encode to 8 bits, fuse with ``cv2.createMergeMertens()`` (default weights 1, 1, 1), clip.
    On an exposure-stack dataset (``ctx["stack"]`` given) it fuses the scene's real registered exposures
    instead: all exposures of the scene in, one image out (the same for every input of the scene)."""
    stack = ctx.get("stack")
    if stack:
        shapes = {np.shape(image) for image, _ in stack}
        if shapes != {rgb.shape}:
            raise BaselineError(f"mertens: stack images have shapes {sorted(shapes)}, the input {rgb.shape}")
        return fuse_stack([image for image, _ in stack])
    curve, gamma = camera_curve(ctx)
    return fuse_synthetic_bracket(rgb, curve, gamma, MERTENS_EVS)


def fuse_synthetic_bracket(rgb: np.ndarray, curve: str, gamma: float, evs: Sequence[float] = MERTENS_EVS) -> np.ndarray:
    """Mertens fusion of `rgb` re-exposed by each of `evs` stops in linear light (see `mertens`)."""
    linear = decode_curve(rgb.astype(np.float64), curve, gamma)
    return fuse_stack([encode_curve(np.clip(linear * 2.0**ev, 0.0, 1.0), curve, gamma) for ev in evs])


@contextmanager
def _one_opencv_thread():
    """OpenCV on one thread inside the block (its earlier setting restored after)."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def fuse_stack(images: Sequence[np.ndarray]) -> np.ndarray:
    """Mertens fusion (``cv2.createMergeMertens()``, default weights) of RGB images in [0, 1], as 8 bits.

    On one OpenCV thread: with several, MergeMertens' output varies from run to run in the last bits
    (seen as 8-bit pixels rounding differently, so metrics changed between identical runs)."""
    with _one_opencv_thread():
        fused = cv2.createMergeMertens().process(
            [cv2.cvtColor(to_uint8(image), cv2.COLOR_RGB2BGR) for image in images])
    return np.clip(cv2.cvtColor(fused, cv2.COLOR_BGR2RGB), 0.0, 1.0).astype(np.float32)


@register("debevec_reinhard", needs_stack=True)
def debevec_reinhard(rgb: np.ndarray, ctx: dict) -> np.ndarray:
    """HDR from a real exposure stack, tone-mapped: camera response by Debevec & Malik (1997)
    (``cv2.createCalibrateDebevec()``, defaults: 70 grid samples, lambda 10), radiance by
    ``cv2.createMergeDebevec()``, global-local operator of Reinhard & Devlin (2005)
    (``cv2.createTonemapReinhard(gamma)``, other settings default) with gamma = render.gamma when
    render.curve is gamma, else 2.2. The result depends on the stack only (the same for every input of
    one scene); `rgb` fixes the expected shape."""
    stack = ctx.get("stack")
    if not stack:
        raise BaselineError("debevec_reinhard needs an exposure stack with exposure times (ctx['stack']); "
                         "this dataset has no exposure stacks")
    shapes = {np.shape(image) for image, _ in stack}
    if shapes != {rgb.shape}:
        raise BaselineError(f"debevec_reinhard: stack images have shapes {sorted(shapes)}, the input {rgb.shape}")
    curve, gamma = camera_curve(ctx)
    radiance, _ = merge_debevec(stack)
    tonemap = cv2.createTonemapReinhard(gamma=gamma if curve == "gamma" else REINHARD_GAMMA)
    ldr = tonemap.process(radiance)
    ldr = np.nan_to_num(ldr, nan=0.0, posinf=1.0, neginf=0.0)  # log(0) inside the operator on black pixels
    return np.clip(cv2.cvtColor(ldr, cv2.COLOR_BGR2RGB), 0.0, 1.0).astype(np.float32)


def merge_debevec(stack: Sequence[tuple[np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Radiance (float32 H×W×3, BGR, OpenCV's relative units) and camera response (float32 256×1×3, BGR;
    the linear exposure each 8-bit code stands for) of an exposure stack of (RGB in [0, 1], seconds)."""
    times = np.array([t for _, t in stack], dtype=np.float32)
    if len(stack) < 2 or not (np.isfinite(times).all() and (times > 0).all()) or len(set(times.tolist())) < 2:
        raise BaselineError(
            f"an exposure stack needs at least two distinct positive exposure times, got {times.tolist()}")
    images = [cv2.cvtColor(to_uint8(image), cv2.COLOR_RGB2BGR) for image, _ in stack]
    response = cv2.createCalibrateDebevec().process(images, times)
    radiance = cv2.createMergeDebevec().process(images, times, response)
    return radiance, response

"""`--precision`: fp32 is the former path bit for bit; bf16 and fp16 stay within the PSNR bound; `auto`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from expocorr import cli, inference, models, params
from expocorr.stages import render
from expocorr.imaging.images import to_uint8
from expocorr.methods import MethodError
from expocorr.metrics.psnr import psnr

REPO = Path(__file__).resolve().parents[1]
PARAMS = params.load(str(REPO / "params.yaml"))
CPU = torch.device("cpu")


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.build(name, PARAMS["train"][name]["arch"]).eval()


@pytest.fixture(scope="module")
def split() -> list[tuple[np.ndarray, np.ndarray]]:
    """A small synthetic split: three real photos at 64×48, rendered at every EV ≠ 0 of params.yaml."""
    pairs = []
    for scene in ("astronaut", "coffee", "chelsea"):
        ref = cv2.resize(getattr(skimage.data, scene)(), (64, 48), interpolation=cv2.INTER_AREA).astype(np.float32)
        ref /= 255
        renders = render.render_evs(ref, scene, PARAMS["render"])
        pairs += [(x.astype(np.float32), ref) for ev, x in renders.items() if ev]
    return pairs


def mean_psnr(model, pairs, precision: str) -> float:
    return float(np.mean([psnr(to_uint8(inference.run_model(model, x, CPU, precision=precision)), to_uint8(ref))
                          for x, ref in pairs]))


OFFICIAL_ZERODCE_PP = REPO.parent / "shared/data/weights/zerodce_pp/Epoch99.pth"


@pytest.mark.parametrize("name", ["exponet", "zerodce_pp (official weights)"])
def test_reduced_precision_stays_within_the_bound(split, name):
    """Mean PSNR within PRECISION_BOUND_DB of fp32: ExpoNet (random init), the published Zero-DCE++ (at its
    scale 12; random-init Zero-DCE++ at scale 1 takes half a minute in emulated bf16)."""
    if name == "exponet":
        model = build(name)
    elif OFFICIAL_ZERODCE_PP.exists():
        model, _ = inference.load_model(OFFICIAL_ZERODCE_PP)
    else:
        pytest.skip(f"{OFFICIAL_ZERODCE_PP} absent")
    fp32 = mean_psnr(model, split, "fp32")
    for precision in ("bf16", "fp16"):  # fp16 emulated on the CPU: CUDA's numbers, not its speed
        assert abs(mean_psnr(model, split, precision) - fp32) < inference.PRECISION_BOUND_DB, precision


@pytest.mark.parametrize("name", ["zerodce", "msec"])
def test_fp32_is_the_former_path_bit_for_bit(name):
    model = build(name)
    rgb = cv2.resize(skimage.data.coffee(), (128, 96)).astype(np.float32) / 255
    with torch.no_grad():  # the former `_forward` on the CPU: autocast off
        former = model(torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(inference.run_model(model, rgb, CPU, precision="fp32"), former)
    if not inference.cpu_has_native_bf16():  # auto on this CPU is fp32
        np.testing.assert_array_equal(inference.run_model(model, rgb, CPU), former)


def test_auto_takes_bf16_only_on_a_cpu_with_native_bfloat16(tmp_path):
    for flags, native in [("fpu sse avx2 avx512f avx512bw", False), ("fpu avx512f avx512_bf16", True),
                          ("fpu amx_bf16 amx_tile", True)]:
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n\n")
        assert inference.cpu_has_native_bf16(tmp_path / "cpuinfo") is native
    assert not inference.cpu_has_native_bf16(tmp_path / "absent")
    expected = "bf16" if inference.cpu_has_native_bf16() else "fp32"
    assert inference.pick_precision("auto", "cpu", "zerodce")[0] == expected
    assert inference.pick_precision("auto", "cpu", "a_plugin_model") == ("fp32", "auto: no reduced precision "
                                                                           "measured for this model")
    assert inference.pick_precision("bf16", "cpu", "zerodce")[0] == "bf16"


def test_fp16_on_the_cpu_is_refused_naming_the_option(tmp_path, caplog):
    with pytest.raises(MethodError, match="--precision fp16"):
        inference.pick_precision("fp16", "cpu", "zerodce")
    path = tmp_path / "zerodce_pp" / "model.pt"
    path.parent.mkdir()
    torch.save({"model": "zerodce_pp", "arch": PARAMS["train"]["zerodce_pp"]["arch"],
                "state_dict": build("zerodce_pp").state_dict(), "params": {}}, path)
    photo = tmp_path / "a.jpg"
    cv2.imwrite(str(photo), cv2.resize(skimage.data.coffee(), (64, 48)))
    assert cli.main(["correct", str(photo), "--model", str(path), "--device", "cpu", "--precision", "fp16"]) != 0
    assert "--precision fp16" in caplog.text and not (tmp_path / "a_corrected.jpg").exists()

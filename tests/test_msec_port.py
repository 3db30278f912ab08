"""MSEC's PyTorch port (LZ-CH/Exposure_Correction-pytorch): its snapshot, served over loopback, converts
into expocorr's ``msec`` (variant pytorch_port) and gives the port's own forward pass; OpenCV's pyramid
in torch equals cv2's. The reference below restates the port's model.py (MSPEC_Net, generator only: its
published MSPECnet_woadv.pth) and tools/decomposition.py + mspec_test.py's exposure_correction, with its
layer names, so its state_dict has the port's keys."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata
from torch import nn

from expocorr import cli, inference, methods
from expocorr import checkpoints
from expocorr.models import msec
from test_pretrained import params_with, sha256


class cnnblock(nn.Module):  # noqa: N801 - the port's names make its state_dict keys
    def __init__(self, c_in, c_out):
        super().__init__()
        self.cnn_conv1, self.ac1 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.LeakyReLU()
        self.cnn_conv2, self.ac2 = nn.Conv2d(c_out, c_out, 3, 1, 1), nn.LeakyReLU()

    def forward(self, x):
        return self.ac2(self.cnn_conv2(self.ac1(self.cnn_conv1(x))))


class Upsample(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.up, self.ac = nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2), nn.LeakyReLU()

    def forward(self, x, h, w):
        x = self.ac(self.up(x))
        dy, dx = h - x.shape[2], w - x.shape[3]
        return F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])


class SubNet(nn.Module):
    """SubNet_3layers (layers 3) and SubNet_4layers (layers 4)."""

    def __init__(self, f, layers):
        super().__init__()
        self.layers = layers
        widths = [f * 2**i for i in range(layers + 1)]
        for i in range(layers + 1):  # block1..layers encode, block layers+1 is the bottom
            setattr(self, f"block{i + 1}", cnnblock(3 if i == 0 else widths[i - 1], widths[i]))
        for j in range(1, layers + 1):  # up j then block layers+1+j decode
            setattr(self, f"up{j}", Upsample(widths[layers + 1 - j], widths[layers - j]))
            setattr(self, f"block{layers + 1 + j}", cnnblock(widths[layers + 1 - j], widths[layers - j]))
        self.finalconv = nn.Conv2d(f, 3, 1, 1, 0)

    def forward(self, x):
        outs = [self.block1(x)]
        for i in range(2, self.layers + 2):
            outs.append(getattr(self, f"block{i}")(F.max_pool2d(outs[-1], 2)))
        y = outs.pop()
        for j in range(1, self.layers + 1):
            skip = outs.pop()
            y = getattr(self, f"up{j}")(y, skip.shape[2], skip.shape[3])
            y = getattr(self, f"block{self.layers + 1 + j}")(torch.cat([y, skip], 1))
        return self.finalconv(y)


class MSPEC_Net(nn.Module):  # noqa: N801
    def __init__(self):
        super().__init__()
        self.subnet1, self.subnet2 = SubNet(24, 4), SubNet(24, 3)
        self.subnet3, self.subnet4 = SubNet(24, 3), SubNet(16, 3)
        self.up1, self.up2, self.up3 = Upsample(3, 3), Upsample(3, 3), Upsample(3, 3)

    def forward(self, L):
        y = self.subnet1(L[0])
        for k in (1, 2, 3):
            u = getattr(self, f"up{k}")(y, L[k].shape[2], L[k].shape[3])
            y = getattr(self, f"subnet{k + 1}")(u + L[k]) + u
        return y


def port_correct(net: MSPEC_Net, bgr: np.ndarray) -> np.ndarray:
    """mspec_test.py's exposure_correction: lplas_decomposition (cv2, float64) of the BGR image, coarsest
    first, through the network; the BGR output."""
    g = [bgr]
    for _ in range(3):
        g.append(cv2.pyrDown(g[-1]))
    bands = [g[j] - cv2.pyrUp(g[j + 1], dstsize=(g[j].shape[1], g[j].shape[0])) for j in range(3)] + [g[3]]
    tensors = [torch.from_numpy(b).float().permute(2, 0, 1).unsqueeze(0) for b in reversed(bands)]
    with torch.no_grad():
        return net(tensors)[0].permute(1, 2, 0).numpy()


def port_snapshot(path, seed: int = 0) -> MSPEC_Net:
    """A snapshot as the port's mspec_train.py saves it (nn.DataParallel: ``module.`` keys), random weights."""
    torch.manual_seed(seed)
    net = MSPEC_Net().eval()
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    return net


@pytest.mark.parametrize("size", [(16, 16), (15, 17), (64, 48), (7, 9)])
def test_opencv_pyramid_in_torch_is_cv2s(size):
    rgb = np.random.default_rng(0).random((*size, 3))
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    down = cv2.pyrDown(rgb)
    assert np.abs(msec.cv_pyr_down(x)[0].permute(1, 2, 0).numpy() - down).max() < 1e-12
    up = cv2.pyrUp(down, dstsize=size[::-1])
    got = msec.cv_pyr_up(torch.from_numpy(down).permute(2, 0, 1)[None], size)
    assert np.abs(got[0].permute(1, 2, 0).numpy() - up).max() < 1e-12


def test_port_keys_cover_the_port_snapshot():
    names = checkpoints.port_keys(msec.PORT_ARCH)
    assert set(names.values()) == set(MSPEC_Net().state_dict())
    generator = {k for k in msec.MSEC(**msec.PORT_ARCH).state_dict() if not k.startswith("discriminator.")}
    assert set(names) == generator


def test_port_snapshot_over_loopback_gives_the_ports_forward(http_server, tmp_path, monkeypatch):
    """`pretrained` with format pytorch_port: the served snapshot becomes models/NAME/model.pt whose model,
    on a real photo (RGB in, RGB out), is the port's forward (BGR in, BGR out) within float32 rounding; the
    same file loaded directly (`inference.load_model`, as `expocorr correct --model` does: format told by
    its keys) gives the same model."""
    net = port_snapshot(http_server.root / "MSPECnet_woadv.pth")
    url = http_server.url("MSPECnet_woadv.pth")
    file = params_with(tmp_path, {"msec-port": {"model": "msec", "format": "pytorch_port", "url": url,
                                                "sha256": sha256(http_server.root / "MSPECnet_woadv.pth")}})
    monkeypatch.chdir(tmp_path)
    assert cli.main(["pretrained", "--name", "msec-port", "--params", str(file)]) == 0
    saved = torch.load(tmp_path / "models/msec-port/model.pt", weights_only=True)
    assert saved["arch"] == msec.PORT_ARCH and saved["metadata"]["pretrained"]["format"] == "pytorch_port"
    rgb = cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA).astype(np.float64) / 255
    ref = port_correct(net, np.ascontiguousarray(rgb[..., ::-1]))[..., ::-1]
    model, _ = inference.load_model(tmp_path / "models/msec-port/model.pt")
    with torch.no_grad():
        ours = model.generate(torch.from_numpy(rgb).float().permute(2, 0, 1)[None])[0][0].permute(1, 2, 0).numpy()
    assert np.abs(ref).max() > 0.1 and np.abs(ours - ref).max() < 1e-4
    assert methods.load_method("msec-port").kind == "pretrained"
    direct, checkpoint = inference.load_model(http_server.root / "MSPECnet_woadv.pth")
    assert checkpoint["metadata"]["pretrained"]["format"] == "pytorch_port"
    assert all(torch.equal(a, b) for a, b in zip(direct.state_dict().values(), model.state_dict().values()))


def test_a_zerodce_file_is_not_a_port_snapshot(tmp_path):
    from test_pretrained import official_file

    path = official_file(tmp_path / "Epoch99.pth", "zerodce")
    with pytest.raises(inference.MethodError, match="are not the pytorch_port msec layout"):
        inference.load_model(path, checkpoint_format="pytorch_port")


def test_correct_takes_the_port_snapshot_directly(tmp_path, monkeypatch):
    """`expocorr correct --model MSPECnet_woadv.pth` (auto and --checkpoint-format pytorch_port): the photo
    corrected by the converted model, the same with either option."""
    from PIL import Image

    port_snapshot(tmp_path / "MSPECnet_woadv.pth")
    Image.fromarray(skdata.chelsea()[::2, ::2]).save(tmp_path / "cat.png")
    monkeypatch.chdir(tmp_path)
    outputs = []
    for extra in ([], ["--checkpoint-format", "pytorch_port"]):
        assert cli.main(["correct", "cat.png", "--model", "MSPECnet_woadv.pth", "--overwrite", *extra]) == 0
        outputs.append(np.asarray(Image.open(tmp_path / "cat_corrected.png")))
    rgb = np.asarray(Image.open(tmp_path / "cat.png")).astype(np.float32) / 255
    expected = methods.load_method("msec", path=tmp_path / "MSPECnet_woadv.pth")(rgb, {})
    assert np.array_equal(outputs[0], outputs[1])
    assert np.abs(outputs[0] / 255.0 - expected).max() <= 0.5 / 255 + 1e-6

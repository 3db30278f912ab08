"""Published checkpoints (`pretrained`): fetched over a loopback server and converted into expocorr's model
file, refused on a wrong sha256 or layout, taken directly by `expocorr correct --model`; the shared official
Zero-DCE / Zero-DCE++ files give the official forward pass. Both engines score one beside the retrained models:
tests/test_engines.py::test_published_checkpoint_is_scored_beside_the_retrained_model."""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from skimage import data as skdata

import workspace
from expocorr import checkpoints, cli, inference, methods, params
from expocorr.models import build
from test_model_zerodce import official_zerodce, official_zerodce_pp

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO.parent / "shared" / "data" / "weights"  # README there: the official files and their sha256


def official_file(path: Path, model: str, seed: int = 0) -> Path:
    """A checkpoint in the authors' layout (a bare state_dict, as their lowlight_train.py saves it), with
    random weights."""
    torch.manual_seed(seed)
    net = build(model, checkpoints.published_arch(model))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def params_with(tmp_path: Path, entries: dict) -> Path:
    """params.yaml of the repository with `pretrained` set, in `tmp_path` (the stage's working folder)."""
    loaded = yaml.safe_load((REPO / "params.yaml").read_text())
    loaded["pretrained"] = entries
    loaded["data"]["cache_dir"] = str(tmp_path / "cache")
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(loaded, sort_keys=False))
    return out


def test_official_files_fetched_over_loopback_convert_to_the_official_forward(http_server, tmp_path, monkeypatch):
    """Both official layouts served over HTTP: the stage writes models/NAME/model.pt (weights_only, where it
    came from recorded), whose model gives the official forward of the served weights (Zero-DCE++ at the
    official test script's scale 12)."""
    for model in ("zerodce", "zerodce_pp"):
        official_file(http_server.root / model / "Epoch99.pth", model)
    entries = {f"{m}-mine": {"model": m, "format": "official", "url": http_server.url(f"{m}/Epoch99.pth"),
                             "sha256": sha256(http_server.root / m / "Epoch99.pth")} for m in ("zerodce", "zerodce_pp")}
    file = params_with(tmp_path, entries)
    monkeypatch.chdir(tmp_path)
    x = torch.rand(1, 3, 48, 72, generator=torch.Generator().manual_seed(1))  # multiples of Zero-DCE++'s scale 12
    for name, model in (("zerodce-mine", "zerodce"), ("zerodce_pp-mine", "zerodce_pp")):
        assert cli.main(["pretrained", "--name", name, "--params", str(file)]) == 0
        saved = torch.load(tmp_path / "models" / name / "model.pt", weights_only=True)
        assert saved["model"] == model and saved["metadata"]["pretrained"] == {
            "name": name, "url": entries[name]["url"], "sha256": entries[name]["sha256"], "format": "official"}
        method = methods.load_method(name)
        assert (method.name, method.kind) == (name, "pretrained")
        sd = torch.load(http_server.root / model / "Epoch99.pth", weights_only=True)
        ref = (official_zerodce(sd, x) if model == "zerodce" else official_zerodce_pp(sd, x, 12)).clamp(0, 1)
        out = method(x[0].permute(1, 2, 0).numpy(), {})
        assert np.abs(out - ref[0].permute(1, 2, 0).numpy()).max() < 1e-6
    assert sorted(http_server.requests) == ["/zerodce/Epoch99.pth", "/zerodce_pp/Epoch99.pth"]


def test_an_expocorr_model_file_from_elsewhere_is_taken_as_it_is(http_server, tmp_path, monkeypatch, caplog):
    """format expocorr: another run's model.pt keeps its arch and weights; one recording another model than
    `pretrained.NAME.model` is refused, naming the URL."""
    sd = torch.load(official_file(tmp_path / "Epoch99.pth", "zerodce_pp"), weights_only=True)
    arch = {**checkpoints.published_arch("zerodce_pp"), "inference_scale": 1}
    torch.save({"model": "zerodce_pp", "arch": arch, "state_dict": sd, "params": {}}, http_server.root / "model.pt")
    url = http_server.url("model.pt")
    file = params_with(tmp_path, {"theirs-run": {"model": "zerodce_pp", "url": url},
                                  "wrong-model": {"model": "zerodce", "url": url}})
    monkeypatch.chdir(tmp_path)
    assert cli.main(["pretrained", "--name", "theirs-run", "--params", str(file)]) == 0
    saved = torch.load(tmp_path / "models/theirs-run/model.pt", weights_only=True)
    assert saved["arch"] == arch and all(torch.equal(saved["state_dict"][k], v) for k, v in sd.items())
    assert saved["metadata"]["pretrained"]["format"] == "expocorr"
    caplog.clear()
    assert cli.main(["pretrained", "--name", "wrong-model", "--params", str(file)]) == 1
    assert any(f"pretrained.wrong-model: {url!r}: records model 'zerodce_pp', not 'zerodce' as asked" in r.getMessage()
               for r in caplog.records)
    assert not (tmp_path / "models/wrong-model").exists()


def test_wrong_sha256_or_layout_leaves_nothing_behind(http_server, tmp_path, monkeypatch, caplog):
    official_file(http_server.root / "Epoch99.pth", "zerodce")
    torch.save({"conv.weight": torch.zeros(3, 3, 1, 1)}, http_server.root / "other.pth")
    url, other = http_server.url("Epoch99.pth"), http_server.url("other.pth")
    file = params_with(tmp_path, {
        "bad-sum": {"model": "zerodce", "format": "official", "url": url, "sha256": "0" * 64},
        "bad-layout": {"model": "zerodce_pp", "format": "official", "url": url, "sha256": None},
        "not-official": {"model": "zerodce", "format": "official", "url": other, "sha256": None},
    })
    monkeypatch.chdir(tmp_path)
    expected = {"bad-sum": f"{url}: ", "bad-layout": "are not the official zerodce_pp layout",
                "not-official": "(conv.weight, …; 1 tensors) are not the official zerodce layout"}
    for name, message in expected.items():
        caplog.clear()
        assert cli.main(["pretrained", "--name", name, "--params", str(file)]) == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and message in errors[0], errors
        assert not (tmp_path / "models" / name).exists()
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert all("Epoch99" in n or "other" in n for n in cached) and len(cached) == 2  # no file of the bad sum


def test_params_name_the_entry_that_cannot_resolve(tmp_path):
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    for entry, message in (({"model": "zerodce"}, "pretrained.a-b.url: missing"),
                           ({"model": "msec", "url": "file:///x.pth", "format": "official"},
                            "pretrained.a-b.model: 'msec' has no official format"),
                           ({"preset": "nope"}, "pretrained.a-b.preset: 'nope' is not allowed")):
        with pytest.raises(params.ParamsError, match=message.replace(".", r"\.").replace("(", r"\(")):
            params.validate({**base, "pretrained": {"a-b": entry}})
    with pytest.raises(params.ParamsError, match="does not match the allowed pattern"):  # a model's name
        params.validate({**base, "pretrained": {"zerodce": {"preset": "zerodce-official"}}})
    assert checkpoints.resolve("x-y", {"preset": "zerodce-official", "url": "file:///mirror/Epoch99.pth"}) == {
        **checkpoints.PRESETS["zerodce-official"], "url": "file:///mirror/Epoch99.pth"}  # the preset's sha256 kept


def test_correct_takes_an_official_file_directly(tmp_path, monkeypatch, caplog):
    """`expocorr correct --model Epoch99.pth`: the layout told by the keys (or --checkpoint-format official);
    a file matching no known layout is one error line naming it, and nothing is written."""
    official = official_file(tmp_path / "zerodce" / "Epoch99.pth", "zerodce")
    torch.save({"conv.weight": torch.zeros(3, 3, 1, 1)}, tmp_path / "other.pth")
    Image.fromarray(skdata.chelsea()[::4, ::4]).save(tmp_path / "cat.png")
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--checkpoint-format", "official"]):
        assert cli.main(["correct", "cat.png", "--model", str(official), "--overwrite", *extra]) == 0
        assert (tmp_path / "cat_corrected.png").exists()
    (tmp_path / "cat_corrected.png").unlink()
    for model, extra, message in (
            ("other.pth", [], "'other.pth': not an expocorr model file (model, arch, state_dict); its keys"),
            (str(official), ["--checkpoint-format", "expocorr"], "not an expocorr model file (needs model, arch")):
        caplog.clear()
        assert cli.main(["correct", "cat.png", "--model", model, *extra]) == 1
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and message in errors[0], errors
        assert not (tmp_path / "cat_corrected.png").exists()


@pytest.mark.shared_data
def test_presets_pin_the_shared_official_files_and_reproduce_their_forward(tmp_path, monkeypatch):
    """The presets' sha256 are the shared official files' (their README), and a preset pointed at the local
    copy (file:// URL, the preset's sha256 still checked) converts to the official forward on a real photo."""
    if not WEIGHTS.is_dir():
        pytest.skip(f"official checkpoints absent: {WEIGHTS}")
    entries = {}
    for preset, spec in checkpoints.PRESETS.items():
        local = WEIGHTS / spec["model"] / "Epoch99.pth"
        assert sha256(local) == spec["sha256"]
        assert spec["url"].endswith("/Epoch99.pth") and spec["url"].startswith("https://raw.githubusercontent.com/")
        entries[preset] = {"preset": preset, "url": local.as_uri()}
    file = params_with(tmp_path, entries)
    monkeypatch.chdir(tmp_path)
    photo = np.asarray(Image.open(REPO.parent / "shared/data/sice_part1_512" / sorted(
        p.name for p in (REPO.parent / "shared/data/sice_part1_512").iterdir())[0]).convert("RGB"))
    rgb = (photo[:192, :288] / 255.0).astype(np.float32)  # multiples of Zero-DCE++'s official test scale 12
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()
    torch.set_flush_denormal(True)  # as load_model leaves it
    for preset, spec in checkpoints.PRESETS.items():
        assert cli.main(["pretrained", "--name", preset, "--params", str(file)]) == 0
        sd = torch.load(WEIGHTS / spec["model"] / "Epoch99.pth", map_location="cpu", weights_only=True)
        with torch.no_grad():
            ref = (official_zerodce(sd, x) if spec["model"] == "zerodce" else official_zerodce_pp(sd, x, 12)).clamp(0, 1)
        model, _ = inference.load_model(tmp_path / "models" / preset / "model.pt")
        out = inference.run_model(model, rgb, torch.device("cpu"))
        assert np.abs(out - ref[0].permute(1, 2, 0).numpy()).max() <= 1e-6, preset


@pytest.mark.shared_data
def test_readme_points_the_presets_at_local_copies(tmp_path):
    """README's commands for the default pipeline with both presets from ../shared/data/weights: params.yaml
    edited as shown, both checkpoints converted by the stage, and both engines plan their evaluations."""
    if not WEIGHTS.is_dir():
        pytest.skip(f"official checkpoints absent: {WEIGHTS}")
    block = re.search(r"The default pipeline with both presets.*?```bash\n(.*?)```", (REPO / "README.md").read_text(),
                      re.S)[1]
    lines = [line for line in block.splitlines() if not line.startswith("make run")]
    repo = workspace.make(tmp_path)
    (tmp_path / "shared").symlink_to(REPO.parent / "shared")
    subprocess.run(["bash", "-euc", "\n".join(lines)], cwd=repo, check=True)
    for name in checkpoints.PRESETS:
        workspace.run(["expocorr", "pretrained", "--name", name], repo)
        assert methods.load_method(name, path=repo / "models" / name / "model.pt").kind == "pretrained"
    plan = workspace.snakemake_plan(repo)
    assert {f"evaluate_pretrained@{name}" for name in checkpoints.PRESETS} <= set(plan)
    assert {f"evaluate_pretrained@{name}" for name in checkpoints.PRESETS} <= workspace.dvc_planned(repo)

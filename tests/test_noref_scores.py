"""The Inception Score (network layout, formula, weights files) and what evaluate writes for the
set-level and not-implemented no-reference scores. Random weights made here; CPU, 2-4 images at 299²."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from skimage import data

from expocorr.stages import evaluate
from expocorr.errors import UserError
from expocorr.imaging.images import write_rgb
from expocorr.metrics import NoReference
from expocorr.metrics import inception_score as IS
from expocorr.tables import read_csv, write_csv

PARAM = "evaluate.noref.inception_weights"


@pytest.fixture(scope="module")
def photos():
    """Three different real photos, downscaled (the network resizes everything to 299×299 anyway)."""
    return [np.ascontiguousarray(img[::4, ::4]) for img in (data.astronaut(), data.chelsea(), data.coffee())]


@pytest.fixture(scope="module")
def random_state():
    """A randomly initialised Inception v3 state_dict. He-initialised convolutions and a larger fc keep
    the activations alive through the 94 layers (PyTorch's default init shrinks them to ~1e-8 and
    every image then gets the same, near-uniform softmax)."""
    torch.manual_seed(0)
    model = IS.InceptionV3()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    state = model.state_dict()
    state["fc.weight"] = state["fc.weight"] * 10
    return state


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, random_state):
    path = tmp_path_factory.mktemp("inception") / "inception_v3.pth"
    torch.save(random_state, path)
    return path


# ------------------------------------------------------------------------------ network layout


def test_inception_v3_has_torchvision_layout():
    """torchvision's inception_v3 (aux_logits=True) has 27,161,264 parameters (its weights' metadata)."""
    model = IS.InceptionV3()
    assert sum(p.numel() for p in model.parameters()) == 27_161_264
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3) and "Conv2d_1a_3x3.conv.bias" not in shapes
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["Mixed_7c.branch3x3dbl_3b.conv.weight"] == (384, 384, 3, 1)
    assert shapes["AuxLogits.fc.weight"] == (1000, 768) and shapes["fc.weight"] == (1000, 2048)
    assert model.Conv2d_1a_3x3.bn.eps == 0.001


def test_preprocess_is_imagenet_normalisation_then_transform_input():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 299, 299)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    normalised = (x - mean) / std
    torchvision = normalised * (std / 0.5) + (mean - 0.5) / 0.5  # Inception3._transform_input
    torch.testing.assert_close(IS.preprocess(x), torchvision, atol=1e-6, rtol=0)
    assert IS.preprocess(torch.rand(1, 3, 40, 70)).shape == (1, 3, 299, 299)


# ----------------------------------------------------------------------------------- formula


def test_inception_score_known_values():
    classes = 1000
    one_hot = np.eye(classes)[np.arange(50) % 5]  # each consecutive split of 5 holds classes 0..4 once
    assert IS.inception_score(one_hot, 10) == (pytest.approx(5.0, abs=1e-12), pytest.approx(0.0, abs=1e-12))
    a = 0.8  # two classes, alternating (a, 1-a), (1-a, a): marginal uniform, IS = 2 a^a (1-a)^(1-a)
    pairs = np.array([[a, 1 - a], [1 - a, a]] * 4)
    assert IS.inception_score(pairs, 1)[0] == pytest.approx(2 * a**a * (1 - a) ** (1 - a), abs=1e-12)
    assert IS.inception_score(np.full((4, classes), 1 / classes), 2)[0] == pytest.approx(1.0, abs=1e-12)
    random = np.random.default_rng(0).dirichlet(np.full(classes, 0.05), size=40)
    mean, std = IS.inception_score(random, 10)
    assert 1 <= mean <= classes and std > 0
    with pytest.raises(ValueError, match="3 images cannot make 10 splits"):
        IS.inception_score(random[:3], 10)


# ---------------------------------------------------------------------------------- weights


def test_random_weights_load_strictly_and_score_in_range(weights_file, photos):
    noref = NoReference({"inception_weights": str(weights_file)}, "cpu")
    assert noref.status()["inception_score"].startswith("computed: Inception Score")
    assert noref.names == () and "inception_score" not in noref.score(photos[0])  # not a per-image score
    for image in photos:
        noref.add(image)
    result = noref.result()
    assert result["inception_score_splits"] == 1 and math.isnan(result["inception_score_std"])  # 3 < 10 images
    assert 1 + 1e-3 < result["inception_score"] <= IS.N_CLASSES


def test_identical_images_score_one(weights_file, photos):
    scorer = IS.InceptionScore(weights_file)
    for _ in range(3):
        scorer.add(photos[1])
    assert scorer.result()["inception_score"] == pytest.approx(1.0, abs=1e-9)


def test_file_without_batchnorm_counters_loads(tmp_path, random_state, weights_file, photos):
    """torchvision's published file has no num_batches_tracked entries: it loads strictly all the same."""
    path = tmp_path / "inception_v3_google.pth"
    torch.save({k: v for k, v in random_state.items() if not k.endswith("num_batches_tracked")}, path)
    x = IS.preprocess(torch.from_numpy(photos[0]).permute(2, 0, 1)[None].float() / 255)
    with torch.no_grad():
        torch.testing.assert_close(IS.load_inception(path)(x), IS.load_inception(weights_file)(x), atol=0, rtol=0)


class _NotATensor:
    pass


@pytest.mark.parametrize("kind, message", [
    ("wrong_key", "not torchvision inception_v3 weights: missing fc.weight; unexpected classifier.weight"),
    ("wrong_shape", "wrong shapes: fc.weight (10, 2048) (expected (1000, 2048))"),
    ("pickled", "holds pickled Python objects, refused (loaded with weights_only=True)"),
    ("garbage", "corrupt or not a PyTorch file"),
    ("tensor", "not a state_dict of tensors"),
])
def test_bad_weights_file_is_one_clear_error(tmp_path, random_state, kind, message):
    path = tmp_path / f"{kind}.pth"
    if kind == "wrong_key":
        torch.save({("classifier.weight" if k == "fc.weight" else k): v for k, v in random_state.items()}, path)
    elif kind == "wrong_shape":
        torch.save({**random_state, "fc.weight": torch.zeros(10, 2048)}, path)
    elif kind == "pickled":
        torch.save({"model": _NotATensor()}, path)
    elif kind == "garbage":
        path.write_bytes(b"not a checkpoint")
    else:
        torch.save(torch.zeros(3), path)
    with pytest.raises(UserError) as err:
        NoReference({"inception_weights": str(path)})
    text = str(err.value)
    assert text.startswith(f"{PARAM}: {path}: ") and message in text and "\n" not in text


# ---------------------------------------------------------------------------------- evaluate


def _evaluate(p, tmp_path, monkeypatch, photos, inception_weights):
    """evaluate --method identity on a 3-image test split written here; returns (JSON, CSV rows)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(evaluate, "_log_to_mlflow", lambda *args: None)  # tracking is tested elsewhere
    rows = []
    for i, image in enumerate(photos):
        path = tmp_path / "data" / "rendered" / f"s{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_rgb(path, image)
        rows.append({"scene": f"s{i}", "ev": "0.0", "input": path.as_posix(), "reference": path.as_posix()})
    (tmp_path / "data" / "splits").mkdir(parents=True)
    write_csv(tmp_path / "data" / "splits" / "test.csv", rows, list(rows[0]))
    p["evaluate"].update(device="cpu", n_examples=1)
    p["evaluate"]["noref"].update(brisque=False, niqe_params=None, inception_weights=inception_weights)
    evaluate.run(p, "identity")
    summary = {**json.loads((tmp_path / "metrics" / "details" / "identity.json").read_text()),
               **json.loads((tmp_path / "metrics" / "identity.json").read_text())}  # the scores and the rest
    return summary, read_csv(tmp_path / "metrics" / "identity_per_image.csv")


def test_evaluate_without_weights_states_each_reason(p, tmp_path, monkeypatch, photos, caplog):
    caplog.set_level(logging.INFO, logger="expocorr.stages.evaluate")
    summary, table = _evaluate(p, tmp_path, monkeypatch, photos, None)
    assert not {"brisque", "niqe", "lpips", "pi", "inception_score"} & set(summary["overall"])  # numbers only
    reasons = summary["noref"]
    assert reasons["inception_score"] == ("not computed: no inception_weights file given "
                                          "(evaluate.noref.inception_weights is null)")
    assert "Ma et al." in reasons["pi"] and "LPIPS is not implemented" in reasons["lpips"]
    for name, reason in reasons.items():  # one log line per score, with its reason
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"evaluate identity: {name}: ")]
        assert lines == [f"evaluate identity: {name}: {reason}"]
    assert not {"brisque", "niqe", "lpips", "pi", "inception_score"} & set(table[0])


def test_evaluate_with_weights_writes_the_set_score(p, tmp_path, monkeypatch, photos, weights_file):
    summary, table = _evaluate(p, tmp_path, monkeypatch, photos, str(weights_file))
    overall = summary["overall"]
    assert isinstance(overall["inception_score"], float) and 1 < overall["inception_score"] <= 1000
    assert summary["inception_score_splits"] == 1 and "inception_score_std" not in overall  # 3 images < 10
    assert summary["noref"]["inception_score"].startswith("computed")
    assert "inception_score" not in table[0]  # a set-level score: metrics JSON only

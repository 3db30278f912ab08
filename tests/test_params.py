"""params.yaml validation: every invalid edit of the real file, and every file that is more than plain YAML
data, is one ParamsError naming the file and key path. Also what `expocorr train` checks before training
(GPUs, memory) and its one-line failures (VGG weights holding pickled objects, a full disk under MLflow)."""

from __future__ import annotations

import copy
import logging
import os
import re
import resource
import signal
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from expocorr import cli, machine, params
from expocorr.models.vgg import load_features, vgg_features
from expocorr.tables import write_csv
from workspace import setter as _set

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
EXPOCORR = REPO / ".venv" / "bin" / "expocorr"


def _del(path: str):
    def edit(p):
        *parents, leaf = path.split(".")
        node = p
        for key in parents:
            node = node[key]
        del node[leaf]

    return edit


def _many(*edits):
    def edit(p):
        for e in edits:
            e(p)

    return edit


# (id, edit of the parsed real params.yaml, substring naming the key path, further substrings)
DICT_CASES = [
    ("unknown-top-level-key", _set("colour", 1), "colour: unknown key", ["data", "render", "tracking"]),
    ("unknown-nested-key", _set("render.noise.colour", 0.1), "render.noise.colour: unknown key", ["read, shot"]),
    ("unknown-deep-key", _set("data.msec.training.md5", "x"), "data.msec.training.md5: unknown key", []),
    ("wrong-type-string", _set("render.max_side", "big"), "render.max_side: expected integer or null", ["'big'"]),
    ("wrong-type-bool-for-int", _set("render.max_side", True), "render.max_side: expected integer or null", []),
    ("wrong-type-boolean", _set("render.raw.half_size", "yes"), "render.raw.half_size: expected boolean", []),
    ("wrong-type-section", _set("render", 5), "render: expected object", []),
    ("wrong-type-list", _set("render.evs", 1.0), "render.evs: expected array", []),
    ("enum-curve", _set("render.curve", "log"), "render.curve: 'log' is not allowed", ["srgb, gamma"]),
    ("enum-source", _set("data.source", "ftp"), "data.source: 'ftp' is not allowed",
     ["bundled, folder, raw, msec, lol, sice, lcdp, url"]),
    ("out-of-range-tau-high", _set("render.tau", 1.5), "render.tau: 1.5 is out of range", ["<= 1"]),
    ("out-of-range-tau-zero", _set("render.tau", 0), "render.tau: 0 is out of range", ["> 0"]),
    ("out-of-range-ev-item", _set("render.evs", [-1.0, 0.0, 7.0]), "render.evs.2: 7.0 is out of range", ["<= 6"]),
    ("out-of-range-max-side", _set("render.max_side", 8), "render.max_side: 8 is out of range", [">= 16"]),
    ("out-of-range-seed", _set("split.seed", -1), "split.seed: -1 is out of range", [">= 0"]),
    ("out-of-range-gamma", _set("render.gamma", 9), "render.gamma: 9 is out of range", ["<= 4"]),
    ("nan-tau", _set("render.tau", float("nan")), "render.tau: must be a finite number", []),
    ("nan-ev", _set("render.evs", [0.0, float("nan")]), "render.evs.1: must be a finite number", []),
    ("empty-evs", _set("render.evs", []), "render.evs: needs at least 1 item", []),
    ("duplicate-evs", _set("render.evs", [-1.0, 0.0, 1, 1.0]), "render.evs: items must be unique", []),
    ("fractions-not-summing-to-1", _set("split.fractions.train", 0.5), "split.fractions: train + val + test must sum to 1",
     ["0.9"]),
    ("fraction-train-zero", _many(_set("split.fractions.train", 0), _set("split.fractions.val", 0.8)),
     "split.fractions.train: 0 is out of range", []),
    ("missing-section", _del("evaluate"), "evaluate: missing required key", []),
    ("missing-nested-key", _del("render.noise.read"), "render.noise.read: missing required key", []),
    ("missing-data-key", _del("data.cache_dir"), "data.cache_dir: missing required key", []),
    ("folder-source-without-folder", _set("data.source", "folder"), "data.folder: required when data.source is 'folder'",
     []),
    ("raw-source-without-folder", _set("data.source", "raw"), "data.folder: required when data.source is 'raw'", []),
    ("empty-folder", _many(_set("data.source", "folder"), _set("data.folder", "")), "data.folder: must not be empty",
     []),
    ("url-without-sha256", _many(_set("data.source", "url"), _set("data.url", "https://example.org/photos.zip")),
     "data.sha256: required when data.source is 'url'", []),
    ("url-source-without-url", _many(_set("data.source", "url"), _set("data.sha256", "a" * 64)),
     "data.url: required when data.source is 'url'", []),
    ("bad-url-scheme", _set("data.url", "photos.zip"), "data.url: 'photos.zip' does not match", []),
    ("bad-sha256-pattern", _set("data.sha256", "abc123"), "data.sha256: 'abc123' does not match the allowed pattern",
     []),
    ("bad-sha256-non-hex", _set("data.sha256", "g" * 64), "data.sha256:", ["does not match"]),
    ("bad-msec-sha256", _set("data.msec.testing.sha256", "zz"), "data.msec.testing.sha256: 'zz' does not match", []),
    ("msec-without-url", _many(_set("data.source", "msec"), _set("data.msec.validation.url", None)),
     "data.msec.validation.url: required when data.source is 'msec'", []),
    ("bad-headline-reference", _set("evaluate.headline_reference", "expert c"), "evaluate.headline_reference:", []),
    ("empty-experiment", _set("tracking.experiment", ""), "tracking.experiment: must not be empty", []),
    # upper bounds: each of these was accepted, then climbed in memory, spawned without end or crashed
    ("huge-batch", _set("train.common.batch_size", 1_000_000), "train.common.batch_size: 1000000 is out of range",
     ["<= 1024"]),
    ("huge-arch-width", _set("train.zerodce.arch.width", 10_000_000), "train.zerodce.arch.width: 10000000 is out",
     ["<= 256"]),
    ("huge-exponet-base", _set("train.exponet.arch.base", 100_000), "train.exponet.arch.base: 100000 is out", []),
    ("huge-gpus", _set("train.common.gpus", 10_000), "train.common.gpus: 10000 is out of range", ["<= 64"]),
    ("huge-num-workers", _set("train.common.num_workers", 1_000_000), "train.common.num_workers: 1000000 is out",
     ["<= 64"]),
    ("huge-max-side", _set("render.max_side", 10**9), "render.max_side: 1000000000 is out of range", ["<= 16384"]),
    ("huge-epochs", _set("train.common.epochs", 10**9), "train.common.epochs: 1000000000 is out of range", []),
    ("huge-steps", _set("train.common.steps_per_epoch", 10**9), "train.common.steps_per_epoch: 1000000000 is out", []),
    ("huge-curriculum-patch", _set("train.msec.patch_curriculum", [[0, 100_000]]),
     "train.msec.patch_curriculum.0.1: 100000 is out of range", ["<= 4096"]),
    ("huge-curriculum-batch", _set("train.msec.patch_curriculum", [[0, 64, 1_000_000]]),
     "train.msec.patch_curriculum.0.2: 1000000 is out of range", ["<= 1024"]),
    ("huge-msec-channels", _set("train.msec.arch.channels", [8, 12, 12, 100_000]),
     "train.msec.arch.channels.3: 100000 is out of range", []),
    ("huge-seed", _set("train.common.seed", 2**64), "train.common.seed:", ["out of range"]),
    ("key-with-newline", _set("split.se\nERROR forged", 1), "split.'se\\nERROR forged': unknown key", []),
]


@pytest.mark.parametrize("edit, key, extra", [c[1:] for c in DICT_CASES], ids=[c[0] for c in DICT_CASES])
def test_invalid_edit_names_key_path(base, tmp_path, edit, key, extra):
    p = copy.deepcopy(base)
    edit(p)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    with pytest.raises(params.ParamsError) as info:
        params.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert key in message, message
    for text in extra:
        assert text in message, message
    assert "\n" not in message
    # validate() on the dict gives the same message (with its default source name)
    with pytest.raises(params.ParamsError, match="^params.yaml: ") as again:
        params.validate(p)
    assert key in str(again.value)


TEXT_CASES = [
    ("yaml-syntax-error", lambda text: text.replace("  seed: 0\n  fractions:", "  seed: [0\n  fractions:"),
     "not valid YAML", ["line "]),
    ("yaml-tab-indent", lambda text: text.replace("\n  source: bundled", "\n\tsource: bundled"), "not valid YAML",
     ["line "]),
    ("non-mapping-list", lambda text: "- data\n- render\n", "expected a mapping of sections at the top level", []),
    ("non-mapping-scalar", lambda text: "just a string\n", "expected a mapping of sections at the top level", []),
    ("empty-file", lambda text: "# nothing here\n", "expected a mapping of sections at the top level", []),
    ("duplicate-top-key", lambda text: text + "\nsplit:\n  seed: 1\n", "split (line", ["key given twice"]),
    ("duplicate-nested-key", lambda text: text.replace("  seed: 0\n  fractions:", "  seed: 0\n  seed: 3\n  fractions:"),
     "split.seed (line", ["key given twice"]),
    ("missing-section-in-text", lambda text: re.sub(r"\nreport:\n(?:  .*\n)+", "\n", text),
     "report: missing required key", []),
    # not plain data: refused before anything is built (each was loaded, run or expanded before)
    ("billion-laughs", lambda text: _lol(9) + text.replace("  evs:", "  evs: *a8\n  old_evs:", 1),
     "not plain YAML data: line 1: YAML anchors and aliases", []),
    ("one-alias", lambda text: text.replace("  seed: 0\n  fractions:", "  seed: &s 0\n  fractions:", 1),
     "not plain YAML data:", ["anchors and aliases"]),
    ("deep-nesting", lambda text: text + "deep: " + "[" * 100_000 + "]" * 100_000 + "\n",
     "not plain YAML data:", ["nested deeper than 16 levels"]),
    ("yte", lambda text: "__use_yte__: true\n" + text.replace("title: expocorr report",
                                                              "title: ?__import__('os').getpid()"),
     "__use_yte__: YTE templating is not supported", []),
    ("python-tag", lambda text: text.replace("seed: 0                    # noise seed",
                                             "seed: !!python/object/apply:os.getpid []"),
     "not plain YAML data:", ["YAML tags", "python/object/apply:os.getpid"]),
    ("str-tag", lambda text: text.replace("title: expocorr report", "title: !!str expocorr report"),
     "not plain YAML data:", ["YAML tags"]),
    ("local-tag", lambda text: text.replace("title: expocorr report", "title: !custom expocorr report"),
     "not plain YAML data:", ["YAML tags ('!custom')"]),
    ("merge-key", lambda text: text.replace("  noise:\n", "  noise:\n    <<: {shot: 0.0}\n", 1),
     "not plain YAML data:", ["merge keys"]),
    ("oversized", lambda text: text + "#" * (1 << 20) + "\n", "larger than a params file can be", []),
]


def _lol(levels: int) -> str:
    """A "billion laughs": each anchor a list of ten aliases of the one before (10 ** (levels - 1) strings)."""
    lines = ['lol: [&a0 "lol", ' + ", ".join('"lol"' for _ in range(9)) + "]"]
    lines += [f"lol{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(10))}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("edit, key, extra", [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES])
def test_invalid_text_names_problem(tmp_path, edit, key, extra):
    original = PARAMS.read_text()
    text = edit(original)
    assert text != original
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(params.ParamsError) as info:
        params.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert key in message, message
    for t in extra:
        assert t in message, message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(params.ParamsError, match="params file not found") as info:
        params.load(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)


def test_unreadable_paths_are_params_errors(tmp_path):
    with pytest.raises(params.ParamsError, match="cannot read the params file"):
        params.load(tmp_path)  # a directory
    binary = tmp_path / "params.yaml"
    binary.write_bytes(b"data:\n  source: \xff\xfe\x00\n")
    with pytest.raises(params.ParamsError, match="not a UTF-8 text file"):
        params.load(binary)


def test_real_params_valid_and_defaults(base):
    assert params.validate(copy.deepcopy(base)) == base
    assert base["render"]["evs"] == [-1.5, -1.0, 0.0, 1.0, 1.5]
    assert base["render"]["noise"] == {"shot": 0.0, "read": 0.0}
    assert sum(base["split"]["fractions"].values()) == pytest.approx(1.0)


def test_paper_params_are_a_complete_valid_params_file():
    """`cp params-paper.yaml params.yaml` (README "Paper-scale training") must give a params file both
    engines accept: every section present and valid, the same keys as params.yaml."""
    paper = params.load(REPO / "params-paper.yaml")

    def keys(node, prefix=""):
        if not isinstance(node, dict) or prefix == "pretrained" or prefix.endswith((".arch", ".weights", ".schedule")):
            return {prefix}
        return {k for key, value in node.items() for k in keys(value, f"{prefix}.{key}" if prefix else key)}

    assert keys(paper) == keys(yaml.safe_load(PARAMS.read_text()))

    hdr = params.load(REPO / "params-paper-hdr.yaml")  # the HDR autoencoder seed's data recipe
    assert keys(hdr) == keys(paper)
    assert hdr["train"]["models"] == ["hdr_autoencoder"]
    assert {k: v for k, v in hdr["train"].items() if k != "models"} == \
        {k: v for k, v in paper["train"].items() if k != "models"}
    assert hdr["data"]["source"] == "stacks" and hdr["data"]["stacks"]["preset"] == "fairchild"
    assert hdr["render"]["stacks"]["register"]["motion"] == "affine" and "debevec_reinhard" in hdr["evaluate"]["baselines"]


@pytest.mark.parametrize("edit", [
    _set("render.curve", "gamma"),
    _many(_set("data.source", "folder"), _set("data.folder", "~/photos")),
    _many(_set("data.source", "url"), _set("data.url", "https://example.org/p.zip"), _set("data.sha256", "A" * 64)),
    _many(_set("split.fractions.val", 0), _set("split.fractions.train", 0.8)),
    _set("render.max_side", None),
    _set("render.evs", [-6, 6]),
    _set("render.tau", 0.5),
], ids=["gamma", "folder", "url", "no-val", "no-resize", "ev-bounds", "tau"])
def test_valid_edits_pass(base, edit):
    p = copy.deepcopy(base)
    edit(p)
    assert params.validate(p) is p


def test_deepest_error_is_reported(base):
    """With errors at several depths the message names the most specific (leaf) key."""
    p = copy.deepcopy(base)
    p["colour"] = 1
    p["render"]["noise"]["shot"] = 5
    with pytest.raises(params.ParamsError, match=r"render\.noise\.shot: 5 is out of range"):
        params.validate(p)


def test_schema_copies_agree():
    """The packaged schema and the one the workflow validates against are the same document."""
    packaged = params.schema()
    workflow = yaml.safe_load((REPO / "workflow/schemas/params.schema.yaml").read_text())
    assert packaged == workflow


# --- the CLI: one error line, exit 1, nothing written ---------------------------------------------


def _manifest(folder: Path, scenes: int = 6) -> None:
    rows = [
        {"scene": f"s{i}", "ev": ev, "input": f"data/rendered/images/s{i}/ev{ev:+.1f}.png",
         "reference": f"data/rendered/images/s{i}/reference.png", "source": "srgb"}
        for i in range(scenes) for ev in (-1.0, 0.0, 1.0)
    ]
    write_csv(folder / "data/rendered/manifest.csv", rows, ["scene", "ev", "input", "reference", "source"])


CLI_CASES = [
    ("enum", lambda text: text.replace("curve: srgb", "curve: log"), "render.curve", "srgb, gamma"),
    ("range", lambda text: text.replace("tau: 1.0", "tau: 2.0"), "render.tau", "out of range"),
    ("fractions", lambda text: text.replace("train: 0.6", "train: 0.7"), "split.fractions", "sum to 1"),
    ("unknown", lambda text: text.replace("  seed: 0\n  fractions:", "  seed: 0\n  sede: 1\n  fractions:"),
     "split.sede", "unknown key"),
    ("syntax", lambda text: text.replace("  seed: 0\n  fractions:", "  seed: [0\n  fractions:"), "not valid YAML",
     "line "),
]


@pytest.mark.parametrize("edit, key, extra", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_params_one_line_exit_1(tmp_path, edit, key, extra):
    _manifest(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit(PARAMS.read_text()))
    proc = subprocess.run([str(EXPOCORR), "split", "--params", "bad.yaml"], cwd=tmp_path, capture_output=True, check=False,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "split failed" in lines[0] and "bad.yaml" in lines[0]
    assert key in lines[0] and extra in lines[0], lines[0]
    assert proc.stdout == ""
    assert not (tmp_path / "data/splits").exists()


def test_cli_missing_params_file(tmp_path):
    proc = subprocess.run([str(EXPOCORR), "split", "--params", "absent.yaml"], cwd=tmp_path, capture_output=True, check=False,
                          text=True, timeout=120)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "absent.yaml: params file not found" in lines[0], proc.stderr
    assert not (tmp_path / "data").exists()


def test_cli_good_params_writes_splits(tmp_path):
    """The control for the tests above: the same manifest with the real params.yaml is split."""
    _manifest(tmp_path)
    (tmp_path / "good.yaml").write_text(PARAMS.read_text())
    proc = subprocess.run([str(EXPOCORR), "split", "--params", "good.yaml"], cwd=tmp_path, capture_output=True, check=False,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("train", "val", "test"):
        assert (tmp_path / f"data/splits/{name}.csv").is_file()


def test_fifo_and_device_are_refused_unread(tmp_path):
    """A FIFO would block the read forever (no writer) and a device never ends: neither is read."""
    fifo = tmp_path / "params.yaml"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(params.ParamsError, match="cannot read the params file: not a regular file"):
            params.load(path)


# --- the machine: GPUs present and the memory of the largest batch, before training starts ----------


def test_machine_check_passes_the_default_params(base):
    for name in ("zerodce", "exponet"):
        machine.check_training(base, name)


def test_machine_check_refuses_a_batch_beyond_memory(base):
    p = copy.deepcopy(base)
    p["train"]["common"].update(batch_size=1024, patch_size=4096)  # each within the schema's bounds
    with pytest.raises(machine.MachineError, match=r"^train\.zerodce: a batch of 1024 at 4096 px needs at least "
                                                   r"[0-9.]+ GiB .* more than the [0-9.]+ GiB (available in RAM|free)"):
        machine.check_training(p, "zerodce")


def test_machine_check_refuses_more_gpus_than_visible(base):
    if torch.cuda.device_count() >= 4:
        pytest.skip("4 GPUs are visible")
    p = copy.deepcopy(base)
    p["train"]["common"]["gpus"] = 4
    with pytest.raises(machine.MachineError, match=r"^train\.common\.gpus: 4 "):
        machine.check_training(p, "zerodce")
    p["train"]["common"]["device"] = "cpu"  # 4 CPU processes (DDP over gloo) are what was asked for
    machine.check_training(p, "zerodce")


def _train_cli(tmp_path, monkeypatch, caplog, edit) -> tuple[int, list[str]]:
    """`expocorr train` (its entry point, in this process) on params edited by `edit`, in an empty folder:
    the exit code and the error lines it logged."""
    p = yaml.safe_load(PARAMS.read_text())
    edit(p)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    code = cli.main(["train", "--model", p["train"]["models"][0]])
    return code, [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_cli_train_refuses_a_batch_beyond_memory_with_one_line(tmp_path, monkeypatch, caplog):
    def edit(p):
        p["train"]["models"] = ["zerodce"]
        p["train"]["common"].update(batch_size=1024, patch_size=4096)

    code, errors = _train_cli(tmp_path, monkeypatch, caplog, edit)
    assert code == 1 and len(errors) == 1, errors
    assert errors[0].startswith("train failed: train.zerodce: a batch of 1024 at 4096 px needs at least"), errors
    assert not (tmp_path / "models").exists()


class Evil:
    """Unpickling this would run a shell command."""

    def __reduce__(self):
        return (os.system, ("echo PWNED > /tmp/expocorr-vgg-pwned",))


def test_pickled_vgg_weights_are_refused_with_one_line(tmp_path, monkeypatch, caplog):
    """A VGG weights file carrying a pickled object: one line naming the file, the payload never runs, and
    nothing suggests loading it unsafely."""
    torch.save({"features.0.weight": Evil()}, tmp_path / "vgg16.pth")

    def edit(p):
        p["train"]["models"] = ["hdr_autoencoder"]
        p["train"]["hdr_autoencoder"]["arch"]["vgg_weights"] = "vgg16.pth"

    code, errors = _train_cli(tmp_path, monkeypatch, caplog, edit)
    assert code == 1 and len(errors) == 1, errors
    assert errors[0] == ("train failed: train.hdr_autoencoder.arch: vgg16.pth: not loadable VGG weights: it holds "
                         "pickled Python objects, refused for safety"), errors
    assert "weights_only" not in caplog.text and "Traceback" not in caplog.text
    assert not Path("/tmp/expocorr-vgg-pwned").exists()


def test_bad_vgg_weights_files_are_one_line_errors(tmp_path):
    features = vgg_features("vgg16")
    cases = {"missing.pth": "no such VGG weights file", "text.pth": "not a PyTorch weights file",
             "list.pth": "not a state_dict of VGG weights", "vgg19.pth": "not torchvision VGG features weights"}
    (tmp_path / "text.pth").write_text("not weights\n")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    torch.save(vgg_features("vgg19").state_dict(), tmp_path / "vgg19.pth")
    for name, reason in cases.items():
        with pytest.raises(ValueError) as info:
            load_features(features, tmp_path / name)
        message = str(info.value)
        assert message.startswith(f"{tmp_path / name}: ") and reason in message and "\n" not in message, message
    torch.save(vgg_features("vgg16").state_dict(), tmp_path / "vgg16.pth")
    load_features(features, tmp_path / "vgg16.pth")  # the control: a real layout loads


def _tiny_splits(folder: Path) -> None:
    """data/splits/{train,val,test}.csv of one 32×32 pair each (real PNGs)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        images = folder / "data/rendered/images" / split
        images.mkdir(parents=True)
        for kind in ("input", "reference"):
            cv2.imwrite(str(images / f"{kind}.png"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        write_csv(folder / f"data/splits/{split}.csv",
                  [{"scene": split, "ev": -1.0, "input": str(images / "input.png"),
                    "reference": str(images / "reference.png"), "source": "srgb"}],
                  ["scene", "ev", "input", "reference", "source"])


def test_full_disk_under_mlflow_is_one_line(tmp_path, monkeypatch, caplog):
    """Writes past 64 kB fail (RLIMIT_FSIZE, as a full disk): MLflow's SQLite store raises "disk I/O error"
    through SQLAlchemy; `expocorr train` stops with one line naming the store, exit 1."""
    _tiny_splits(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # restored after the test (MLflow sets it)

    def edit(p):
        p["train"]["models"] = ["zerodce"]
        p["train"]["common"].update(epochs=1, steps_per_epoch=1, batch_size=1, patch_size=16)

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, hard))
    try:
        code, errors = _train_cli(tmp_path, monkeypatch, caplog, edit)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert code == 1 and len(errors) == 1, errors
    assert errors[0].startswith("train failed: cannot write the MLflow tracking store sqlite:///"), errors
    assert errors[0].endswith("mlflow.db: disk I/O error (is the disk full?)"), errors
    assert "Traceback" not in caplog.text

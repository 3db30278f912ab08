"""Other programs' outputs (`evaluate.external`): the matching rule, its errors, and a folder of outputs scored
by both engines into the same leaderboard as the baselines (README "Other methods' outputs")."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import skimage
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

import workspace
from expocorr import cli, external
from expocorr.tables import read_csv, write_csv

ROWS = [{"scene": "a", "ev": "-1.5", "input": "data/rendered/images/a/ev-1.5.png"},
        {"scene": "a", "ev": "0.0", "input": "data/rendered/images/a/ev+0.0.png"},
        {"scene": "b_2", "ev": "1.0", "input": "data/rendered/images/b_2/ev+1.0.png"}]


def test_outputs_match_the_test_rows_by_scene_and_ev_name(tmp_path):
    for name in ("a_ev-1.5.png", "b_2_ev+1.0.JPG", "stray.png", "notes.txt", ".DS_Store", "._a_ev+0.0.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    matched, missing, unmatched = external.match(tmp_path, ROWS)
    assert matched == {ROWS[0]["input"]: tmp_path / "a_ev-1.5.png", ROWS[2]["input"]: tmp_path / "b_2_ev+1.0.JPG"}
    assert missing == [ROWS[1]] and external.expected_stem(ROWS[1]) == "a_ev+0.0"
    assert unmatched == ["notes.txt", "stray.png"]
    assert external.stem("external:theirs") == "external-theirs" and external.stem("identity") == "identity"


def test_two_outputs_for_one_image_are_an_error(tmp_path):
    for name in ("a_ev-1.5.png", "a_ev-1.5.jpg"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(external.ExternalError, match="two outputs for one test image"):
        external.match(tmp_path, ROWS)


def _split_and_params(tmp_path, base, folders):
    """A one-row test split and a params.yaml naming `folders` as evaluate.external, in `tmp_path`."""
    write_csv(tmp_path / "data/splits/test.csv", [{**ROWS[0], "reference": "data/rendered/images/a/reference.png"}],
              ["scene", "ev", "input", "reference"])
    params = {**base, "evaluate": {**base["evaluate"], "external": folders}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.mark.parametrize("method, message", [
    ("external:theirs", "evaluate.external.theirs: {tmp}/nowhere: not a folder (missing, or a file)"),
    ("external:other", "--method external:other: evaluate.external has no 'other' (known: theirs)"),
])
def test_a_missing_folder_or_name_is_one_line_naming_the_key(tmp_path, base, monkeypatch, caplog, method, message):
    monkeypatch.chdir(tmp_path)
    _split_and_params(tmp_path, base, {"theirs": str(tmp_path / "nowhere")})
    with caplog.at_level(logging.ERROR):
        assert cli.main(["evaluate", "--method", method]) == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "evaluate failed: " + message.format(tmp=tmp_path)]


def test_a_folder_matching_no_test_image_is_an_error(tmp_path, base, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outs").mkdir()
    (tmp_path / "outs" / "IMG_0001.png").write_bytes(b"x")
    _split_and_params(tmp_path, base, {"theirs": "outs"})
    with caplog.at_level(logging.ERROR):
        assert cli.main(["evaluate", "--method", "external:theirs"]) == 1
    assert "evaluate.external.theirs: outs: no file matches a test image (expected names such as a_ev-1.5.png" \
        in caplog.text


def reduced(folder, photos):
    """The smoke budget (tests/test_engines.py): 128 px renders, no model, the identity, `folder` as the
    outputs of method external:theirs, and `photos` as an unpaired set (which it is not scored on)."""
    for name in ("astronaut", "coffee"):
        photos.mkdir(exist_ok=True)
        Image.fromarray(getattr(skimage.data, name)()).resize((96, 64)).save(photos / f"{name}.png")

    def edit(params):
        params["render"]["max_side"] = 128
        params["train"]["models"] = []
        params["evaluate"].update(baselines=["identity"], n_examples=2, external={"theirs": str(folder)},
                                  unpaired_sets={"real": {"folder": str(photos), "max_side": 96}})
    return edit


def _outputs_from_inputs(repo, folder):
    """The test inputs under the documented names, one left out, plus a stray file: (the row left out, the stray)."""
    rows = read_csv(repo / "data/splits/test.csv")
    folder.mkdir()
    for row in rows[1:]:
        shutil.copy(repo / row["input"], folder / f"{external.expected_stem(row)}.png")
    (folder / "IMG_0001.png").write_bytes((repo / rows[1]["input"]).read_bytes())
    return rows[0], "IMG_0001.png"


def _check_scored(repo, left_out, stray):
    """external:theirs scored like the identity on the images it has, the missing and unmatched listed,
    and in the leaderboard as kind external."""
    details = json.loads((repo / "metrics/details/external-theirs.json").read_text())
    assert details["method"] == "external:theirs" and details["kind"] == "external"
    assert details["n_missing"] == 1 and [m["input"] for m in details["missing"]] == [left_out["input"]]
    assert details["missing"][0]["expected"] == external.expected_stem(left_out)
    assert details["unmatched"] == [stray]
    assert details["unpaired_sets"]["real"]["status"] == ("not computed: another program's outputs "
                                                          "(evaluate.external) cover the test split only")
    identity = {r["input"]: r for r in read_csv(repo / "metrics/identity_per_image.csv")}
    theirs = read_csv(repo / "metrics/external-theirs_per_image.csv")
    assert len(theirs) == len(identity) - 1 == details["n_images"]
    for row in theirs:  # the outputs are the inputs: the identity's scores, by the same code
        assert row == identity[row["input"]]
    board = {r["method"]: r for r in json.loads((repo / "reports/leaderboard.json").read_text())}
    assert board["external:theirs"]["kind"] == "external" and board["external:theirs"]["n_missing"] == 1
    assert "n_missing" not in board["identity"]
    assert "| external:theirs | external (1 missing) |" in (repo / "reports/report.md").read_text()
    assert {r["method"] for r in read_csv(repo / "reports/plots/psnr_per_ev.csv")} == {"identity", "external:theirs"}


@pytest.mark.slow
def test_both_engines_score_a_folder_of_outputs(tmp_path):
    """DVC builds the data, then evaluates the identity and the folder and reports; Snakemake, in the same
    copy with the evaluations, reports and the unpaired set removed, plans the jobs that make them and runs
    them again to the same scores, the external method first (it does not read the unpaired set)."""
    folder = tmp_path / "their outputs"
    repo = workspace.make(tmp_path, reduced(folder, tmp_path / "photos"))
    workspace.run(["dvc", "repro", "split"], repo)
    left_out, stray = _outputs_from_inputs(repo, folder)
    (repo / "models").mkdir()  # the report stage's dependency, which no train stage makes here
    workspace.run(["dvc", "repro"], repo)
    assert {"evaluate_external@theirs", "evaluate_baseline@identity"} <= set(workspace.dvc_stages(repo))
    _check_scored(repo, left_out, stray)
    assert workspace.dvc_planned(repo) == set()
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("expocorr-baselines")  # beside the baselines' runs
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"baseline:identity", "external:theirs"}
    assert runs["external:theirs"].data.tags["kind"] == "external"
    assert runs["external:theirs"].data.metrics["test_psnr"] == pytest.approx(
        json.loads((repo / "metrics/external-theirs.json").read_text())["overall"]["psnr"])

    for path in ("metrics", "results", "reports", "data/extra"):
        shutil.rmtree(repo / path)
    planned = workspace.snakemake_plan(repo)
    assert set(planned) == {"render_extra", "evaluate_identity", "evaluate_external@theirs", "report", "all"}
    workspace.run(["snakemake", "--cores", "2", "metrics/external-theirs.json"], repo)  # needs no data/extra
    workspace.run(["snakemake", "--cores", "2"], repo)
    _check_scored(repo, left_out, stray)
    built = workspace.run(["snakemake", "--report", "reports/snakemake-report.html"], repo)
    assert "WARNING" not in built.stderr  # the captions name the method: `external:theirs`
    assert '"caption": "<p>Metrics of <tt class=\\"docutils literal\\">external:theirs</tt>' in (
        repo / "reports/snakemake-report.html").read_text()

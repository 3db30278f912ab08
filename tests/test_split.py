"""Stage `split`: whole scenes per split, seeded, fractions respected, the dataset's own split when it has one."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from expocorr.stages import download, render, split
from expocorr.tables import read_csv, write_csv

REPO = Path(__file__).resolve().parents[1]
FIELDS = ["scene", "ev", "input", "reference", "source"]
EVS = (-1.5, -1.0, 0.0, 1.0, 1.5)




def write_manifest(n_scenes: int, split_of=None, evs=EVS) -> list[dict]:
    """A manifest as the render stage writes it (paths need not exist: split reads only the CSV)."""
    rows = []
    for i in range(n_scenes):
        scene = f"scene_{i:03d}"
        for ev in evs:
            row = {"scene": scene, "ev": ev, "input": f"data/rendered/images/{scene}/{render.ev_name(ev)}.png",
                   "reference": f"data/rendered/images/{scene}/reference.png", "source": "srgb"}
            if split_of is not None:
                row["split"] = split_of(i)
            rows.append(row)
    fields = FIELDS + (["split"] if split_of is not None else [])
    write_csv(render.MANIFEST, rows, fields)
    return read_csv(render.MANIFEST)


def read_splits() -> dict[str, list[dict]]:
    return {s: read_csv(split.OUT / f"{s}.csv") for s in split.SPLITS}


def scenes_of(rows: list[dict]) -> set[str]:
    return {row["scene"] for row in rows}


def _key(row: dict) -> tuple:
    return tuple(sorted(row.items()))


def assert_partition(manifest: list[dict], splits: dict[str, list[dict]]) -> None:
    """Every manifest row in exactly one split, and no scene in two splits."""
    together = Counter(_key(row) for rows in splits.values() for row in rows)
    assert together == Counter(_key(row) for row in manifest)
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not scenes_of(splits[a]) & scenes_of(splits[b]), (a, b)


# --- split_by_scene ------------------------------------------------------------------------------


def test_split_by_scene_deterministic_and_seed_dependent():
    scenes = [f"s{i}" for i in range(40)]
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    a = split.split_by_scene(scenes, fractions, seed=0)
    assert a == split.split_by_scene(list(reversed(scenes)), fractions, seed=0)  # input order does not matter
    b = split.split_by_scene(scenes, fractions, seed=1)
    assert a != b
    for out in (a, b):
        assert sorted(s for part in out.values() for s in part) == sorted(scenes)
        assert {k: len(v) for k, v in out.items()} == {"train": 24, "val": 8, "test": 8}


def test_split_by_scene_ignores_repeats():
    out = split.split_by_scene(["a", "b", "c", "a", "b", "c"], {"train": 0.6, "val": 0.2, "test": 0.2}, seed=3)
    assert sorted(s for part in out.values() for s in part) == ["a", "b", "c"]
    assert {k: len(v) for k, v in out.items()} == {"train": 1, "val": 1, "test": 1}


@pytest.mark.parametrize("n, fractions, counts", [
    (20, (0.6, 0.2, 0.2), (12, 4, 4)),
    (40, (0.5, 0.25, 0.25), (20, 10, 10)),
    (10, (0.8, 0.0, 0.2), (8, 0, 2)),
    (7, (0.6, 0.2, 0.2), (5, 1, 1)),
    (3, (0.6, 0.2, 0.2), (1, 1, 1)),  # every non-zero split gets a scene
    (2, (0.9, 0.0, 0.1), (1, 0, 1)),
])
def test_split_by_scene_counts(n, fractions, counts):
    fr = dict(zip(split.SPLITS, fractions))
    out = split.split_by_scene([f"s{i}" for i in range(n)], fr, seed=0)
    assert tuple(len(out[s]) for s in split.SPLITS) == counts


@pytest.mark.parametrize("n, fractions", [(1, (0.6, 0.2, 0.2)), (2, (0.6, 0.2, 0.2)), (1, (0.9, 0.0, 0.1)),
                                          (0, (0.6, 0.2, 0.2))])
def test_split_by_scene_too_few_scenes(n, fractions):
    with pytest.raises(split.SplitError, match=r"^split\.fractions: "):
        split.split_by_scene([f"s{i}" for i in range(n)], dict(zip(split.SPLITS, fractions)), seed=0)


# --- the stage -----------------------------------------------------------------------------------


def test_run_partitions_by_scene(tmp_path, monkeypatch, p):
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(30)
    split.run(p)
    splits = read_splits()
    assert_partition(manifest, splits)
    assert [len(scenes_of(splits[s])) for s in split.SPLITS] == [18, 6, 6]
    for rows in splits.values():  # whole scenes: all five EVs of each scene together
        assert all(n == len(EVS) for n in Counter(row["scene"] for row in rows).values())
    header = (split.OUT / "train.csv").read_text().splitlines()[0]
    assert header == ",".join(FIELDS)


def test_run_deterministic_for_seed(tmp_path, monkeypatch, p):
    monkeypatch.chdir(tmp_path)
    write_manifest(30)
    split.run(p)
    first = {s: (split.OUT / f"{s}.csv").read_bytes() for s in split.SPLITS}
    split.run(p)
    assert {s: (split.OUT / f"{s}.csv").read_bytes() for s in split.SPLITS} == first
    p["split"]["seed"] = 1
    split.run(p)
    second = read_splits()
    assert {s: (split.OUT / f"{s}.csv").read_bytes() for s in split.SPLITS} != first
    assert [len(scenes_of(second[s])) for s in split.SPLITS] == [18, 6, 6]


def test_run_val_fraction_zero_writes_empty_val(tmp_path, monkeypatch, p):
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(10)
    p["split"]["fractions"] = {"train": 0.7, "val": 0.0, "test": 0.3}
    split.run(p)
    splits = read_splits()
    assert splits["val"] == []
    assert (split.OUT / "val.csv").read_text().strip() == ",".join(FIELDS)
    assert [len(scenes_of(splits[s])) for s in split.SPLITS] == [7, 0, 3]
    assert_partition(manifest, splits)


def test_run_too_few_scenes_names_key_and_writes_nothing(tmp_path, monkeypatch, p):
    monkeypatch.chdir(tmp_path)
    write_manifest(2)
    with pytest.raises(split.SplitError, match=r"split\.fractions") as info:
        split.run(p)
    assert "2 scene(s)" in str(info.value)
    assert not split.OUT.exists()


def test_run_empty_manifest(tmp_path, monkeypatch, p):
    monkeypatch.chdir(tmp_path)
    write_csv(render.MANIFEST, [], FIELDS)
    with pytest.raises(split.SplitError, match="no rows"):
        split.run(p)
    assert not split.OUT.exists()


def test_run_missing_manifest(tmp_path, monkeypatch, p):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError):
        split.run(p)


# --- the dataset's own split (MSEC) --------------------------------------------------------------

DATASET = ["training", "validation", "testing"]


def test_run_uses_dataset_split(tmp_path, monkeypatch, p):
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(12, split_of=lambda i: DATASET[i % 3])
    for seed in (0, 5):  # the seed and fractions do not matter
        p["split"]["seed"] = seed
        p["split"]["fractions"] = {"train": 0.9, "val": 0.05, "test": 0.05}
        split.run(p)
        splits = read_splits()
        assert_partition(manifest, splits)
        for name, dataset_name in zip(split.SPLITS, DATASET):
            assert {row["split"] for row in splits[name]} == {dataset_name}
            assert len(scenes_of(splits[name])) == 4


def test_run_dataset_split_short_names(tmp_path, monkeypatch, p):
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(6, split_of=lambda i: split.SPLITS[i % 3])
    split.run(p)
    splits = read_splits()
    assert_partition(manifest, splits)
    assert all(row["split"] == name for name in split.SPLITS for row in splits[name])


def test_run_dataset_split_unknown_value(tmp_path, monkeypatch, p):
    monkeypatch.chdir(tmp_path)
    write_manifest(6, split_of=lambda i: "training" if i else "holdout")
    with pytest.raises(split.SplitError, match="'holdout'"):
        split.run(p)
    assert not split.OUT.exists()


def test_run_dataset_split_missing_for_some_rows(tmp_path, monkeypatch, p):
    """A manifest where only some rows carry a split must not silently drop the others."""
    monkeypatch.chdir(tmp_path)
    write_manifest(6, split_of=lambda i: "" if i == 0 else "testing")
    with pytest.raises(split.SplitError, match="scene_000"):
        split.run(p)


def test_run_dataset_scene_in_two_splits(tmp_path, monkeypatch, p):
    monkeypatch.chdir(tmp_path)
    rows = write_manifest(3, split_of=lambda i: "training")
    rows[-1]["split"] = "testing"  # one EV of the last scene in another split
    write_csv(render.MANIFEST, rows, FIELDS + ["split"])
    with pytest.raises(split.SplitError, match="scene_002.*both"):
        split.run(p)


# --- download -> render -> split on the bundled photos -------------------------------------------


def test_pipeline_bundled(tmp_path, monkeypatch, p):
    monkeypatch.chdir(tmp_path)
    p["render"]["max_side"] = 64
    download.run(p)
    render.run(p)
    split.run(p)
    manifest = read_csv(render.MANIFEST)
    splits = read_splits()
    assert_partition(manifest, splits)
    n = len(read_csv(download.INDEX))
    assert n >= 3
    assert sum(len(scenes_of(rows)) for rows in splits.values()) == n
    assert all(scenes_of(splits[s]) for s in split.SPLITS)

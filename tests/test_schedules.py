"""LR schedules and the patch curriculum: each paper's formula at chosen epochs."""

from __future__ import annotations

import math

import pytest

from expocorr.sampling import Stage, curriculum, stage_at
from expocorr.schedules import lr_at

COMMON = {"patch_size": 64, "batch_size": 8}


def test_msec_halves_every_20_10_5_epochs_of_its_stages_and_restarts_each_stage():
    """MSEC (main_training.m): 40 + 30 + 20 epochs at 128/256/512 px, LR halved every 20/10/5, reset per stage."""
    cfg = {"patch_curriculum": [[0, 128, 32], [40, 256, 8], [70, 512, 4]]}
    stages = curriculum(COMMON, cfg)
    schedule = {"policy": "step", "every": [20, 10, 5], "gamma": 0.5, "restart": True}
    base = 1e-4
    expected = {0: base, 19: base, 20: base / 2, 39: base / 2, 40: base, 49: base, 50: base / 2, 60: base / 4,
                69: base / 4, 70: base, 74: base, 75: base / 2, 80: base / 4, 85: base / 8, 89: base / 8}
    for epoch, lr in expected.items():
        assert lr_at(schedule, base, epoch, 90, stages) == pytest.approx(lr, rel=1e-12), epoch


def test_step_without_restart_counts_from_the_first_epoch():
    stages = curriculum(COMMON, {"patch_curriculum": [[0, 64], [3, 96]]})
    schedule = {"policy": "step", "every": 2, "gamma": 0.1, "restart": False}
    assert [lr_at(schedule, 1.0, e, 6, stages) for e in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_pix2pix_linear_keeps_100_epochs_then_decays_to_zero_over_100():
    """pix2pix networks.get_scheduler('linear'): 1 − max(0, epoch + epoch_count − n_epochs) / (n_epochs_decay + 1)."""
    schedule = {"policy": "linear", "constant": 100, "decay": 100}
    base = 2e-4
    for epoch in (0, 50, 99, 100, 150, 199):
        expected = base * (1.0 - max(0, epoch + 1 - 100) / 101)
        assert lr_at(schedule, base, epoch, 200, []) == pytest.approx(expected, rel=1e-12)
    assert lr_at(schedule, base, 99, 200, []) == base
    assert lr_at(schedule, base, 199, 200, []) == pytest.approx(base / 101)


def test_cosine_goes_from_the_base_lr_to_min_lr():
    schedule = {"policy": "cosine", "min_lr": 1e-5}
    assert lr_at(schedule, 1e-3, 0, 11, []) == pytest.approx(1e-3)
    assert lr_at(schedule, 1e-3, 5, 11, []) == pytest.approx(1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi / 2)) / 2)
    assert lr_at(schedule, 1e-3, 10, 11, []) == pytest.approx(1e-5)


def test_none_keeps_the_base_lr():
    assert lr_at({"policy": "none"}, 3e-3, 17, 20, []) == 3e-3


def test_curriculum_stages_carry_their_batch_size():
    stages = curriculum(COMMON, {"patch_curriculum": [[0, 128, 32], [40, 256, 8], [70, 512]]})
    assert stages == [Stage(0, 0, 128, 32), Stage(1, 40, 256, 8), Stage(2, 70, 512, 8)]
    assert stage_at(stages, 39).size == 128 and stage_at(stages, 40).batch == 8
    late = curriculum(COMMON, {"patch_curriculum": [[4, 96]]})
    assert late == [Stage(0, 0, 64, 8), Stage(1, 4, 96, 8)]
    assert curriculum(COMMON, {"patch_curriculum": None}) == [Stage(0, 0, 64, 8)]

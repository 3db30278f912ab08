"""Learning-rate schedules (`train.NAME.schedule`), a pure function of the 0-based epoch.

* ``none``: the base LR throughout.
* ``step``: multiplied by ``gamma`` every ``every`` epochs; ``every`` may be a list, one value per
  patch-curriculum stage, and with ``restart`` the count (and the LR) starts again at each stage —
  MSEC's ``main_training.m`` halves the LR every 20 / 10 / 5 epochs of its 128 / 256 / 512-px stages,
  each stage a new ``trainNetwork`` call (the trainer then also clears the optimisers' moments).
* ``linear``: pix2pix's ``linear`` policy (``networks.get_scheduler``): the base LR for ``constant``
  epochs, then linearly towards 0 over ``decay`` epochs: factor 1 − max(0, epoch + 1 − constant) / (decay + 1).
* ``cosine``: from the base LR at epoch 0 to ``min_lr`` at the last epoch (half a cosine period).

The trainer sets the LR of every parameter group at the start of each epoch from this function, so a
resumed run has exactly the LR an uninterrupted one would.
"""

from __future__ import annotations

import math

from expocorr.sampling import Stage, stage_at


def lr_at(schedule: dict, base: float, epoch: int, epochs: int, stages: list[Stage]) -> float:
    """The LR of 0-based `epoch` of `epochs`, for a base LR `base` and the curriculum `stages`."""
    policy = schedule["policy"]
    if policy == "none":
        return base
    if policy == "step":
        stage = stage_at(stages, epoch)
        every = schedule["every"]
        if isinstance(every, list):
            every = every[min(stage.index, len(every) - 1)]
        elapsed = epoch - stage.start if schedule["restart"] else epoch
        return base * schedule["gamma"] ** (elapsed // every)
    if policy == "linear":
        return base * max(0.0, 1.0 - max(0, epoch + 1 - schedule["constant"]) / (schedule["decay"] + 1))
    if policy == "cosine":
        span = max(1, epochs - 1)
        return schedule["min_lr"] + (base - schedule["min_lr"]) * (1 + math.cos(math.pi * epoch / span)) / 2
    raise ValueError(f"schedule policy {policy!r}: expected none, step, linear or cosine")

"""What this machine can hold, checked before training starts: the GPUs `train.common.gpus` asks for,
and the memory of the largest batch of the model's curriculum.

The memory estimate is a lower bound: the model is built on PyTorch's ``meta`` device (shapes, no
data) and one training forward pass (model and loss) is run on a batch of that stage's size, summing
what autograd saves for the backward pass; the weights count four times (weights, gradients and
Adam's two moments). Pretrained VGG weights are left out (the estimate builds without them), and so
are CUDA's context and the allocator's slack.
"""

from __future__ import annotations

import contextlib
import logging

import psutil
import torch

from expocorr import models
from expocorr.errors import UserError
from expocorr.sampling import curriculum

GiB = 2**30


class MachineError(UserError):
    """The params ask for more than this machine has; the message names the key."""


def check_training(params: dict, name: str) -> None:
    """Raise MachineError unless this machine has the GPUs and the memory to train model `name`."""
    if name not in params["train"]["models"]:
        return  # train.run names the problem
    common, cfg = params["train"]["common"], params["train"][name]
    world, gpus = common["gpus"], _gpus(common)
    if gpus:
        available, where = min(torch.cuda.mem_get_info(i)[0] for i in gpus), "free on the GPU"
        baseline = 0  # each process has a GPU of its own (its CUDA context is not counted)
    else:  # all processes share the RAM; relaunched ones are copies of this one (torch imported)
        available, where = psutil.virtual_memory().available, "available in RAM"
        baseline = (world if world > 1 else 0) * psutil.Process().memory_info().rss
    for stage in curriculum(common, cfg):
        estimate = _estimate(name, cfg["arch"], max(1, stage.batch // world), stage.size,
                             half=bool(gpus) and common["amp"])
        if estimate is None:
            return
        need = baseline + (estimate if gpus else world * estimate)
        if need > available:
            raise MachineError(
                f"train.{name}: a batch of {stage.batch} at {stage.size} px needs at least {need / GiB:.1f} GiB "
                f"(estimated: weights, gradients, Adam state and what autograd keeps), more than the "
                f"{available / GiB:.1f} GiB {where}; lower the batch size or patch size (train.common, "
                f"train.{name}.patch_curriculum) or the widths of train.{name}.arch"
            )


def _gpus(common: dict) -> list[int]:
    """The CUDA devices training will use (none: it runs on the CPU or MPS); MachineError when
    train.common.device or train.common.gpus asks for more than are visible."""
    world, requested = common["gpus"], common["device"]
    if requested.startswith("cuda") or (requested == "auto" and torch.cuda.is_available()):
        visible = torch.cuda.device_count()
        index = torch.device(requested).index if requested != "auto" else None
        if visible == 0 or (index is not None and index >= visible):
            raise MachineError(f"train.common.device: {requested!r} asked for, but {visible} CUDA GPU(s) "
                               "visible here (CUDA_VISIBLE_DEVICES)")
        if world > visible:
            raise MachineError(f"train.common.gpus: {world} processes on CUDA need {world} GPUs; {visible} "
                               "visible here (CUDA_VISIBLE_DEVICES)")
        return [index] if index is not None else list(range(world))
    if requested == "auto" and world > 1:
        raise MachineError(f"train.common.gpus: {world} GPUs asked for, but no CUDA GPU is visible here "
                           f"(device auto would run on the CPU); set gpus: 1, or device: cpu for {world} CPU "
                           "processes")
    return []


def _estimate(name: str, arch: dict, batch: int, size: int, half: bool) -> int | None:
    """Bytes one process needs for a training step of `batch` images of `size`², or None when the model
    cannot run on the meta device (then training itself is the check)."""
    saved: dict[int, torch.UntypedStorage] = {}  # each storage once: ops save the same tensor, or views of it

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        saved[storage._cdata] = storage  # _cdata: the address of the storage (meta storages have no data)
        return tensor

    arch = {**arch, **({"vgg_weights": None} if "vgg_weights" in arch else {})}
    with _quiet():
        try:
            with torch.device("meta"):
                model = models.build(name, arch).train()
            x = torch.empty(batch, 3, size, size, device="meta")
            step = {"input": x, "target": torch.empty_like(x)}
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                model.loss(step, model(x), 0)
        except Exception:  # noqa: BLE001  (an op without a meta kernel, a bad arch: training reports it)
            return None
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    inputs = 2 * x.numel() * x.element_size()
    activations = sum(storage.nbytes() for storage in saved.values())
    return 4 * weights + inputs + (activations // 2 if half else activations)


@contextlib.contextmanager
def _quiet():
    """Models log about their arch when built (e.g. a missing vgg_weights); training logs it once."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)

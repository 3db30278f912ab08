"""Stage `train`: fit one registered model on data/splits/ -> models/NAME/{model.pt,train_log.csv,mlflow_run.json}.

Reads only ``train.common`` and ``train.NAME``: images fed as ``sampling`` and the patch curriculum say
(`expocorr.sampling`), the LR set per epoch by ``schedule`` (`expocorr.schedules`), and ``model.pt`` the
epoch ``select`` picks (best val PSNR, or the last). Checkpoints atomically every epoch and resumes
from the last checkpoint after an interruption when the params and splits are unchanged, ending
with exactly the weights an uninterrupted run would have (CPU). As N processes (WORLD_SIZE > 1: ``gpus: N``
through `expocorr.launch`, or under torchrun) it trains with DistributedDataParallel; only rank 0 writes
files and logs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from copy import deepcopy
from pathlib import Path

import mlflow
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

import expocorr
from expocorr.errors import UserError
from expocorr import launch, models, schedules, tracking
from expocorr.stages import split
from expocorr.sampling import TrainingSet, curriculum, stage_at
from expocorr.inference import MethodError, pick_device, run_model
from expocorr.atomic import atomic_path, write_text
from expocorr.imaging.images import read_rgb, to_uint8
from expocorr.metrics import psnr, ssim
from expocorr.tables import read_csv, write_csv

log = logging.getLogger(__name__)

OUT = Path("models")
PIP_REQUIREMENTS = [f"torch=={torch.__version__.split('+')[0]}", f"expocorr=={expocorr.__version__}"]


class TrainError(UserError, RuntimeError):
    """Training cannot go on; the message names the model (and epoch)."""


def outputs(name: str) -> dict[str, Path]:
    """The declared outputs of `expocorr train --model name`."""
    folder = OUT / name
    return {"model": folder / "model.pt", "log": folder / "train_log.csv", "run": folder / "mlflow_run.json"}


def checkpoint_path(name: str) -> Path:
    """Resumption state (not a stage output; removed once training has finished)."""
    return OUT / name / "checkpoint" / "last.pt"


# ---------------------------------------------------------------- devices and processes


class Dist:
    """This process's place in a torchrun job (world of one when not distributed)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def broadcast(self, value: float) -> float:
        """Rank 0's value on every rank."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.broadcast(t, src=0)
        return float(t.item())

    def average_grads(self, module: nn.Module) -> None:
        """All-reduce gradients of a module that DDP does not wrap (the discriminator)."""
        if self.world == 1:
            return
        for p in module.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.world

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


# ---------------------------------------------------------------- data


def _rows(split_name: str) -> list[dict]:
    path = split.OUT / f"{split_name}.csv"
    rows = read_csv(path)
    if not rows:
        raise TrainError(f"{path}: the {split_name} split is empty (add photos or change split.fractions)")
    return rows


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- validation


def validate(model: nn.Module, rows: list[dict], device: torch.device) -> dict[str, float]:
    """Mean PSNR/SSIM of the model and of the identity (input as output) on full val images.

    Pairs whose input already equals the reference (a synthetic EV 0 render) are left out: the
    identity's PSNR on them is infinite and would swamp every average.
    """
    model.eval()
    scores = {"val_psnr": [], "val_ssim": [], "val_psnr_identity": [], "val_ssim_identity": []}
    for row in rows:
        image, reference = read_rgb(row["input"]), to_uint8(read_rgb(row["reference"]))
        if np.array_equal(to_uint8(image), reference):
            continue
        output = to_uint8(run_model(model, image, device))
        scores["val_psnr"].append(psnr(output, reference))
        scores["val_ssim"].append(ssim(output, reference))
        scores["val_psnr_identity"].append(psnr(to_uint8(image), reference))
        scores["val_ssim_identity"].append(ssim(to_uint8(image), reference))
    if not scores["val_psnr"]:
        raise TrainError(f"{split.OUT / 'val.csv'}: no validation pair whose input differs from its reference")
    return {k: float(np.mean(v)) for k, v in scores.items()}


def sample_rows(rows: list[dict], n: int = 4) -> list[dict]:
    """`n` val rows for the sample grid: under- and over-exposed in turn from successive scenes (by
    name), the darkest input of one scene, the brightest of the next, and so on (deterministic)."""
    scenes: dict[str, list[dict]] = {}
    for row in rows:
        scenes.setdefault(row["scene"], []).append(row)
    names, picks = sorted(scenes), []
    for k in range(2 * len(names)):  # each (scene, under/over) once, alternating
        over = (k + (k // len(names) if len(names) % 2 == 0 else 0)) % 2
        side = [r for r in scenes[names[k % len(names)]] if (float(r["ev"]) > 0 if over else float(r["ev"]) < 0)]
        if side:
            picks.append((max if over else min)(side, key=lambda r: float(r["ev"])))
    return (picks or rows)[:n]


GRID_COLUMNS = ("input", "output", "reference")
GRID_HEADER = 22  # px


def _label(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.45) -> None:
    import cv2

    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def sample_grid(model: nn.Module, rows: list[dict], device: torch.device, side: int = 128) -> np.ndarray:
    """Input | output | reference of `rows` (uint8): each image fitted into tiles of one size, `side` px
    high, under a header naming the columns, with each row's scene and EV written on its input."""
    import cv2

    images = []
    for row in rows:
        image, reference = read_rgb(row["input"]), read_rgb(row["reference"])
        images.append((row, [image, run_model(model, image, device), reference]))
    width = max(round(side * tiles[0].shape[1] / tiles[0].shape[0]) for _, tiles in images)
    header = np.full((GRID_HEADER, width * len(GRID_COLUMNS), 3), 40, np.uint8)
    for i, name in enumerate(GRID_COLUMNS):
        _label(header, name, (i * width + 6, GRID_HEADER - 7), 0.55)
    lines = [header]
    for row, tiles in images:
        cells = []
        for t in tiles:
            h, w = t.shape[:2]
            scale = min(side / h, width / w)
            small = to_uint8(cv2.resize(t, (max(1, round(w * scale)), max(1, round(h * scale))),
                                        interpolation=cv2.INTER_AREA))
            cell = np.zeros((side, width, 3), np.uint8)
            y, x = (side - small.shape[0]) // 2, (width - small.shape[1]) // 2
            cell[y:y + small.shape[0], x:x + small.shape[1]] = small
            cells.append(cell)
        cv2.rectangle(cells[0], (0, side - 18), (width - 1, side - 1), (0, 0, 0), -1)
        _label(cells[0], f"{row['scene']} EV {float(row['ev']):+g}", (4, side - 5), 0.4)
        lines.append(np.concatenate(cells, 1))
    return np.concatenate(lines, 0)


# ---------------------------------------------------------------- checkpoints


def _save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, fingerprint: str, name: str) -> dict | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged checkpoint is not fatal: start fresh
        log.warning("train %s: ignoring unreadable checkpoint %s (%s)", name, path, exc)
        return None
    if state.get("fingerprint") != fingerprint:
        log.info("train %s: params or splits changed since %s was written: starting fresh", name, path)
        return None
    return state


# ---------------------------------------------------------------- the loop


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _optimizer(parameters, cfg: dict, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=lr, betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"])


def _set_lr(optimizer: torch.optim.Optimizer | None, lr: float) -> None:
    for group in optimizer.param_groups if optimizer is not None else []:
        group["lr"] = lr


def run(params: dict, name: str) -> None:
    """Train model `name` (one of `train.models`) and write its outputs."""
    if name not in params["train"]["models"]:
        raise TrainError(f"--model {name}: not in train.models ({', '.join(params['train']['models'])})")
    proc = Dist()
    try:
        _train(params, name, proc)
    finally:
        proc.close()


def _train(params: dict, name: str, proc: Dist) -> None:
    common, cfg = params["train"]["common"], params["train"][name]
    log.info("train %s: starting (process %d of %d)", name, proc.rank + 1, proc.world)
    try:
        device = pick_device(common["device"], proc.local_rank)
    except MethodError as exc:
        raise TrainError(f"train.common.device: {exc}") from None
    proc.init(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    _seed(common["seed"])
    try:
        model = models.build(name, cfg["arch"]).to(device)
    except (TypeError, ValueError) as exc:
        raise TrainError(f"train.{name}.arch: {exc}") from None
    if proc.world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    discriminator = getattr(model, "discriminator", None)
    d_prefix = "discriminator."
    g_params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(d_prefix)]
    d_base_lr = cfg["d_lr"] or cfg["lr"]
    opt_g = _optimizer(g_params, cfg, cfg["lr"])
    opt_d = _optimizer(discriminator.parameters(), cfg, d_base_lr) if discriminator is not None else None
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and common["amp"])
    net: nn.Module = model
    if proc.world > 1:
        if discriminator is not None:  # the discriminator's gradients are averaged by hand
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                model, [n for n, _ in model.named_parameters() if n.startswith(d_prefix)]
                + [n for n, _ in model.named_buffers() if n.startswith(d_prefix)]
            )
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    train_rows, val_rows = _rows("train"), _rows("val")
    epochs = cfg["epochs"] or common["epochs"]
    stages = curriculum(common, cfg)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    for stage in stages:
        if has_bn and stage.batch // proc.world < 2:
            raise TrainError(f"train.{name}: a batch of {stage.batch} over {proc.world} process(es) leaves "
                             f"{max(1, stage.batch // proc.world)} image per process; {name} has batch "
                             "normalisation, which needs at least 2")
    try:
        dataset = TrainingSet(train_rows, cfg["sampling"], common["seed"], model.paired)
    except ValueError as exc:
        raise TrainError(f"train.{name}.sampling: {exc}") from None
    workers = common["num_workers"] if common["num_workers"] is not None else (min(4, os.cpu_count() or 1) if device.type == "cuda" else 0)

    def loader_for(stage):
        """The stage's DataLoader (and sampler, and steps per epoch)."""
        per_rank = max(1, stage.batch // proc.world)
        try:
            items = dataset.set_stage(stage.size)
        except ValueError as exc:
            raise TrainError(f"train.{name}: {exc}") from None
        steps = common["steps_per_epoch"] or math.ceil(items / stage.batch)
        dataset.samples = steps * per_rank * proc.world
        sampler = DistributedSampler(dataset, num_replicas=proc.world, rank=proc.rank, shuffle=True,
                                     seed=common["seed"])
        loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=workers,
                            pin_memory=device.type == "cuda", drop_last=True)
        return loader, sampler, steps

    fingerprint = tracking.params_hash(common, cfg, _digest([split.OUT / "train.csv", split.OUT / "val.csv"]))
    ckpt = checkpoint_path(name)
    state = _load_checkpoint(ckpt, fingerprint, name)
    start, history, best, run_id = 0, [], None, None
    if state is not None:
        model.load_state_dict(state["model"])
        opt_g.load_state_dict(state["opt_g"])
        if opt_d is not None:
            opt_d.load_state_dict(state["opt_d"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        start, history, best, run_id = state["epoch"] + 1, state["history"], state["best"], state["run_id"]
        log.info("train %s: resuming after epoch %d from %s", name, state["epoch"], ckpt)

    if proc.main:
        run_id = _start_run(params, name, run_id, history, {
            "params_hash": fingerprint, "device": str(device), "world_size": str(proc.world),
            "pretrained": str(getattr(model, "pretrained", "n/a")), "perceptual": str(getattr(model, "perceptual", "n/a")),
        })
        samples = sample_rows(val_rows)

    patience = common["early_stopping_patience"]
    loaded = None
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        stage = stage_at(stages, epoch)
        if loaded != stage:
            (loader, sampler, steps), loaded = loader_for(stage), stage
        if epoch == stage.start and stage.index and cfg["schedule"].get("restart"):
            for optimizer in (opt_g, opt_d):  # a new stage starts afresh, as MSEC's separate trainNetwork calls
                if optimizer is not None:
                    optimizer.state.clear()
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        lr = schedules.lr_at(cfg["schedule"], cfg["lr"], epoch, epochs, stages)
        _set_lr(opt_g, lr)
        d_lr = schedules.lr_at(cfg["schedule"], d_base_lr, epoch, epochs, stages)
        _set_lr(opt_d, d_lr)
        net.train()
        sums: dict[str, float] = {}
        bar = tqdm(loader, desc=f"{name} epoch {epoch + 1}/{epochs}", unit="batch", disable=None if proc.main else True)
        for step, b in enumerate(bar):
            b = {k: v.to(device, non_blocking=True) for k, v in b.items()}
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=scaler.is_enabled()):
                out = net(b["input"])
                terms = model.loss(b, out, epoch)
            total = terms["total"]
            if not torch.isfinite(total):
                raise TrainError(
                    f"train.{name}: non-finite loss ({total.item()}) at epoch {epoch + 1}, step {step + 1}; "
                    f"the last good checkpoint is {ckpt if ckpt.exists() else 'none (first epoch)'}"
                )
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if cfg["grad_clip"]:
                scaler.unscale_(opt_g)
                nn.utils.clip_grad_norm_(g_params, cfg["grad_clip"])
            scaler.step(opt_g)
            if opt_d is not None:
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=scaler.is_enabled()):
                    d_terms = model.d_loss(b, out.detach(), epoch)
                if d_terms is not None:
                    opt_d.zero_grad(set_to_none=True)
                    scaler.scale(d_terms["total"]).backward()
                    proc.average_grads(discriminator)
                    scaler.step(opt_d)
                    terms = {**terms, **{f"d_{k}": v for k, v in d_terms.items()}}
            scaler.update()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        row = {"epoch": epoch + 1, "lr": lr, **({"d_lr": d_lr} if opt_d is not None else {}),
               "train_loss": sums.pop("total") / steps}
        row.update({f"loss_{k}": v / steps for k, v in sorted(sums.items())})
        stop = 0.0
        if proc.main:
            row.update(validate(model, val_rows, device))
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            if cfg["select"] == "last" or best is None or row["val_psnr"] > best["val_psnr"]:
                best = {"epoch": row["epoch"], "val_psnr": row["val_psnr"], "val_ssim": row["val_ssim"],
                        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            metrics = {k: v for k, v in row.items() if k != "epoch"}
            tracking.retry(mlflow.log_metrics, metrics, step=row["epoch"])
            if row["epoch"] % common["sample_every"] == 0 or row["epoch"] == epochs:
                tracking.retry(mlflow.log_image, sample_grid(model, samples, device),
                               artifact_file=f"samples/epoch_{row['epoch']:03d}.png")
            log.info("train %s: epoch %d/%d loss %.4f val PSNR %.2f dB (identity %.2f) SSIM %.4f, %.1f s", name,
                     row["epoch"], epochs, row["train_loss"], row["val_psnr"], row["val_psnr_identity"],
                     row["val_ssim"], row["seconds"])
            if patience and row["epoch"] - max(history, key=lambda r: r["val_psnr"])["epoch"] >= patience:
                log.info("train %s: early stop, no val PSNR gain for %d epochs", name, patience)
                stop = 1.0
            _save_checkpoint(ckpt, {
                "fingerprint": fingerprint, "epoch": epoch, "model": model.state_dict(), "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict() if opt_d is not None else None, "scaler": scaler.state_dict(),
                "rng": torch.get_rng_state(), "history": history, "best": best, "run_id": run_id,
            })
        if proc.broadcast(stop):
            break

    if proc.main:
        _finish(name, params, model, best, history, run_id, device)
        shutil.rmtree(ckpt.parent, ignore_errors=True)


def _start_run(params: dict, name: str, run_id: str | None, history: list[dict], tags: dict) -> str:
    """Open the training run: the checkpoint's (resuming) when it is in this store's experiment, else a
    new one, tagged (`kind`, `model`, `stage`, `dataset`, ...), with its params and datasets logged."""
    experiment_id = tracking.setup(params)
    if tracking.own_run(run_id, experiment_id) is not None:
        tracking.retry(mlflow.start_run, run_id=run_id)
        return run_id
    if run_id is not None:
        log.warning("train %s: the checkpoint's run %s is not in experiment %r of %s: logging to a new run", name,
                    run_id, params["tracking"]["experiment"], tracking.configured_uri(params))
    digests = tracking.split_digests(split.OUT)
    run = tracking.retry(mlflow.start_run, experiment_id=experiment_id, run_name=name, tags={
        "kind": "model", "model": name, "stage": "train", "dataset": tracking.dataset_tag(params, digests),
        "git_commit": tracking.git_commit(), **tags})
    settings = {"common": params["train"]["common"], name: params["train"][name]}
    tracking.log_params({**tracking.data_params(params), **tracking.model_params(name, settings)})
    tracking.log_splits(params, digests, ["train", "val"], split.OUT)
    for row in history:  # epochs a resumed checkpoint ran before
        tracking.retry(mlflow.log_metrics, {k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
    return run.info.run_id


def _finish(name: str, params: dict, model: nn.Module, best: dict, history: list[dict], run_id: str,
            device: torch.device) -> None:
    """Write model.pt (the epoch `select` kept), train_log.csv and mlflow_run.json; log the model to MLflow."""
    common, cfg = params["train"]["common"], params["train"][name]
    files = outputs(name)
    model.load_state_dict(best["state"])
    identity = history[-1]["val_psnr_identity"]
    checkpoint = {
        "model": name,
        "state_dict": best["state"],
        "arch": cfg["arch"],
        "params": {"common": common, name: cfg},
        "metadata": {
            "select": cfg["select"], "best_epoch": best["epoch"], "val_psnr": best["val_psnr"],
            "val_ssim": best["val_ssim"],
            "val_psnr_identity": identity, "epochs_run": len(history), "device": str(device),
            "torch": str(torch.__version__), "expocorr": expocorr.__version__, "git_commit": tracking.git_commit(),
            "mlflow_run_id": run_id,
        },
    }
    columns = list(dict.fromkeys(k for row in history for k in row))
    write_csv(files["log"], history, columns)
    with atomic_path(files["model"]) as tmp:
        torch.save(checkpoint, tmp)
    tracking.retry(mlflow.log_metrics, {"best_val_psnr": best["val_psnr"], "best_val_ssim": best["val_ssim"],
                                        "best_epoch": best["epoch"], "val_psnr_identity_final": identity,
                                        "train_seconds": sum(row["seconds"] for row in history)})
    tracking.retry(mlflow.set_tag, "model_sha256", tracking.file_sha256(files["model"]))
    tracking.retry(mlflow.log_artifact, str(files["log"]))
    tracking.retry(mlflow.pytorch.log_model, exportable(model), name="model", pip_requirements=PIP_REQUIREMENTS,
                   serialization_format="pickle")
    tracking.retry(mlflow.end_run)
    write_text(files["run"], json.dumps({"run_id": run_id, "experiment": params["tracking"]["experiment"],
                                         "tracking_uri": tracking.configured_uri(params)}, indent=2) + "\n")
    log.info("train %s: kept epoch %d (select: %s), val PSNR %.2f dB vs identity %.2f dB -> %s", name, best["epoch"],
             cfg["select"], best["val_psnr"], identity, files["model"])


def exportable(model: nn.Module) -> nn.Module:
    """A CPU eval-mode copy with parametrizations (spectral norm) folded into plain weights, so it pickles."""
    copy = deepcopy(model).cpu().eval()
    for module in copy.modules():
        if parametrize.is_parametrized(module):
            for tensor_name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=True)
    return copy


def relaunch_distributed(params: dict, argv: list[str]) -> None:
    """With train.common.gpus > 1 and not yet distributed (no WORLD_SIZE), run this command as that many
    processes on this machine, listening on loopback only (`expocorr.launch`), and exit with their status."""
    gpus = params["train"]["common"]["gpus"]
    if gpus > 1 and "WORLD_SIZE" not in os.environ:
        args = ["-m", "expocorr.cli", *argv]
        log.info("train: launching %d processes on 127.0.0.1: %s %s", gpus, sys.executable, " ".join(args))
        sys.exit(launch.local(gpus, args))


"""The train stage for real: tiny data rendered from real photos, real models, real MLflow store."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest
import torch
from mlflow.tracking import MlflowClient

import workspace
from expocorr.tables import read_csv
from expocorr.inference import MethodError, pick_device

pytestmark = pytest.mark.slow

MODEL = "exponet"


def tiny(models=(MODEL,), epochs=2, steps=3, **common):
    """Params edit: small renders, few steps, the given models."""

    def edit(p):
        p["render"]["max_side"] = 64
        p["train"]["models"] = list(models)
        p["train"]["common"].update(epochs=epochs, steps_per_epoch=steps, batch_size=2, patch_size=32, sample_every=1,
                                    **common)

    return edit


@pytest.fixture(scope="module")
def data_repo(tmp_path_factory):
    """A repository copy whose data stages have run once (tiny renders of the bundled photos)."""
    repo = workspace.make(tmp_path_factory.mktemp("data"), tiny())
    for stage in ("download", "render", "split"):
        workspace.run(["expocorr", stage], repo)
    return repo


def clone(data_repo: Path, tmp_path: Path, edit=None) -> Path:
    """A fresh copy of `data_repo` (data included), params edited."""
    dest = tmp_path / "repo"
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(data_repo), str(dest)], check=True)
    if edit is not None:
        workspace.edit_params(dest, edit)
    return dest


def train(repo: Path, model: str = MODEL, check: bool = True) -> subprocess.CompletedProcess:
    return workspace.run(["expocorr", "train", "--model", model], repo, check=check)


def state(repo: Path, model: str = MODEL) -> dict:
    return torch.load(repo / "models" / model / "model.pt", map_location="cpu", weights_only=True)


def test_train_writes_outputs_and_tracks_in_mlflow(data_repo, tmp_path):
    repo = clone(data_repo, tmp_path)
    train(repo)
    ckpt = state(repo)
    assert ckpt["model"] == MODEL and isinstance(ckpt["arch"], dict) and ckpt["params"]["common"]["patch_size"] == 32
    assert ckpt["metadata"]["best_epoch"] in (1, 2)
    log = read_csv(repo / "models" / MODEL / "train_log.csv")
    assert [int(r["epoch"]) for r in log] == [1, 2]
    for column in ("train_loss", "val_psnr", "val_ssim", "val_psnr_identity", "val_ssim_identity", "seconds"):
        assert all(float(r[column]) == float(r[column]) for r in log), column  # present, not NaN
    assert not (repo / "models" / MODEL / "checkpoint").exists()  # resumption state removed once done

    info = json.loads((repo / "models" / MODEL / "mlflow_run.json").read_text())
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    run = client.get_run(info["run_id"])
    assert run.info.run_name == MODEL and run.info.status == "FINISHED"
    assert run.data.tags["model"] == MODEL and run.data.tags["params_hash"]
    assert run.data.params["train.common.patch_size"] == "32"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_psnr")] == [1, 2]
    assert run.data.metrics["best_val_psnr"] == pytest.approx(ckpt["metadata"]["val_psnr"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"samples", "train_log.csv"} <= artifacts
    import mlflow.pytorch

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    loaded = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    x = torch.rand(1, 3, 33, 47)
    assert loaded(x).shape == x.shape


def test_schedule_curriculum_batch_resize_and_last_epoch_selection(data_repo, tmp_path):
    """A step schedule restarting per curriculum stage, a per-stage batch size, whole images resized,
    `select: last`: the LR of each epoch is logged (train_log.csv and MLflow) as the formula gives it."""
    from expocorr.sampling import curriculum
    from expocorr.schedules import lr_at

    schedule = {"policy": "step", "every": [1, 2], "gamma": 0.5, "restart": True}

    def edit(p):
        tiny(epochs=4, steps=None)(p)
        p["train"][MODEL].update(schedule=schedule, sampling="resize", select="last", lr=1e-3,
                                 patch_curriculum=[[0, 32, 2], [2, 48, 4]])

    repo = clone(data_repo, tmp_path, edit)
    train(repo)
    ckpt = state(repo)
    assert ckpt["metadata"]["select"] == "last" and ckpt["metadata"]["best_epoch"] == 4
    log = read_csv(repo / "models" / MODEL / "train_log.csv")
    stages = curriculum(ckpt["params"]["common"], ckpt["params"][MODEL])
    expected = [lr_at(schedule, 1e-3, e, 4, stages) for e in range(4)]
    assert expected == pytest.approx([1e-3, 5e-4, 1e-3, 1e-3])
    assert [float(r["lr"]) for r in log] == pytest.approx(expected)
    run_id = json.loads((repo / "models" / MODEL / "mlflow_run.json").read_text())["run_id"]
    history = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}").get_metric_history(run_id, "lr")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
        [(e + 1, pytest.approx(lr)) for e, lr in enumerate(expected)]


def test_msec_paper_recipe_patches_discriminator_lr_and_stage_restarts(data_repo, tmp_path):
    """MSEC's recipe in miniature: pre-extracted patches, batch size and LR restarting per stage,
    the discriminator at lr / 10 while the adversarial term is on, the last epoch kept."""
    from expocorr.sampling import patch_bank

    def edit(p):
        tiny(models=("msec",), epochs=4, steps=2)(p)
        p["train"]["msec"].update(
            lr=1e-3, d_lr=1e-4, select="last", sampling="patches",
            patch_curriculum=[[0, 32, 4], [2, 48, 2]],
            schedule={"policy": "step", "every": [1, 1], "gamma": 0.5, "restart": True})
        p["train"]["msec"]["arch"].update(adv_epochs=[[1, None]])

    repo = clone(data_repo, tmp_path, edit)
    train(repo, "msec")
    log = read_csv(repo / "models" / "msec" / "train_log.csv")
    assert [float(r["lr"]) for r in log] == pytest.approx([1e-3, 5e-4, 1e-3, 5e-4])
    assert [float(r["d_lr"]) for r in log] == pytest.approx([1e-4, 5e-5, 1e-4, 5e-5])
    assert float(log[0]["loss_adv"]) == 0 and all(float(r["loss_adv"]) > 0 for r in log[1:])
    assert state(repo, "msec")["metadata"]["best_epoch"] == 4
    rows = read_csv(repo / "data" / "splits" / "train.csv")
    for size in (32, 48):
        bank = patch_bank([{k: repo / v if k in ("input", "reference") else v for k, v in r.items()} for r in rows],
                          size, 0, True)
        assert len(bank) >= len(rows)  # every image gave patches (10+ per image at 32 px)
        by_scene = {}
        for r, y, x in bank:
            by_scene.setdefault(rows[r]["scene"], {}).setdefault(r, []).append((y, x))
        for corners in by_scene.values():  # every exposure of a scene: the same corners
            assert len({tuple(c) for c in corners.values()}) == 1


def test_same_params_give_identical_weights(data_repo, tmp_path):
    a, b = clone(data_repo, tmp_path / "a"), clone(data_repo, tmp_path / "b")
    train(a)
    train(b)
    sa, sb = state(a)["state_dict"], state(b)["state_dict"]
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_after_kill_matches_uninterrupted_run(data_repo, tmp_path):
    edit = tiny(epochs=4, steps=6)
    reference, killed = clone(data_repo, tmp_path / "ref", edit), clone(data_repo, tmp_path / "kill", edit)
    train(reference)

    proc = subprocess.Popen(["expocorr", "train", "--model", MODEL], cwd=killed, env=workspace.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "models" / MODEL / "checkpoint" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["epoch"] >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for output in ("model.pt", "train_log.csv", "mlflow_run.json"):  # nothing partial at an output path
        assert not (killed / "models" / MODEL / output).exists()

    out = train(killed)
    assert "resuming after epoch" in out.stderr
    sr, sk = state(reference)["state_dict"], state(killed)["state_dict"]
    assert all(torch.equal(sr[k], sk[k]) for k in sr)
    assert read_csv(reference / "models" / MODEL / "train_log.csv")[-1]["val_psnr"] == \
        read_csv(killed / "models" / MODEL / "train_log.csv")[-1]["val_psnr"]


def test_changed_params_start_fresh(data_repo, tmp_path):
    repo = clone(data_repo, tmp_path, tiny(epochs=3, steps=4))
    ckpt = repo / "models" / MODEL / "checkpoint" / "last.pt"
    proc = subprocess.Popen(["expocorr", "train", "--model", MODEL], cwd=repo, env=workspace.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not ckpt.exists():
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()
    workspace.edit_params(repo, lambda p: p["train"][MODEL].update(lr=p["train"][MODEL]["lr"] / 2))
    out = train(repo)
    assert "starting fresh" in out.stderr and "resuming" not in out.stderr


def test_non_finite_loss_stops_with_a_clear_error(data_repo, tmp_path):
    repo = clone(data_repo, tmp_path, lambda p: p["train"][MODEL].update(lr=1e30))
    out = train(repo, check=False)
    assert out.returncode == 1
    assert f"train.{MODEL}: non-finite loss" in out.stderr and "epoch 1" in out.stderr
    assert not (repo / "models" / MODEL / "model.pt").exists()


def listeners(proc: subprocess.Popen) -> set[tuple[str, int]]:
    """The TCP addresses that `proc` and its descendants listen on, sampled until it exits."""
    seen: set[tuple[str, int]] = set()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    seen.update((c.laddr.ip, c.laddr.port) for c in p.net_connections("tcp")
                                if c.status == psutil.CONN_LISTEN)
        time.sleep(0.2)  # the stores and gloo listen for the whole run
    return seen


def test_ddp_two_processes_on_cpu(data_repo, tmp_path):
    """`train.common.gpus: 2` runs 2 processes: DDP over gloo, one writer, one MLflow run, loopback only. The GAN
    (a generator and a discriminator, two optimisers): the hardest case of the trainer's DDP paths."""
    edit = tiny(models=("exposure_gan",), gpus=2, device="cpu")
    repo = clone(data_repo, tmp_path, lambda p: (edit(p), p["train"]["common"].update(batch_size=4)))
    for model in ("exposure_gan",):
        with open(tmp_path / f"{model}.err", "w+") as err:
            proc = subprocess.Popen(["expocorr", "train", "--model", model], cwd=repo, env=workspace.env(),
                                    stdout=subprocess.DEVNULL, stderr=err, text=True)
            bound = listeners(proc)
            err.seek(0)
            stderr = err.read()
        assert proc.returncode == 0, stderr
        assert bound and {ip for ip, _ in bound} <= {"127.0.0.1", "::1"}, f"listening beyond loopback: {bound}"
        assert "launching 2 processes" in stderr
        assert state(repo, model)["metadata"]["device"] == "cpu"
        assert len(read_csv(repo / "models" / model / "train_log.csv")) == 2
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("expocorr").experiment_id])
    assert [r.info.run_name for r in runs] == ["exposure_gan"]
    assert all(r.data.tags["world_size"] == "2" for r in runs)


def _log_span(path: Path) -> tuple[datetime, datetime]:
    """First and last timestamp of an expocorr log file."""
    stamps = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f") for line in path.read_text().splitlines()
              if line[:4].isdigit() and line[4:5] == "-"]
    return stamps[0], stamps[-1]


def test_two_trainings_at_once_both_log(data_repo, tmp_path):
    """snakemake --cores 2 runs two train jobs side by side against one sqlite store."""
    repo = clone(data_repo, tmp_path, tiny(models=("zerodce", "zerodce_pp")))
    workspace.run(["snakemake", "models/zerodce/model.pt", "models/zerodce_pp/model.pt", "--cores", "2",
                   "--set-threads", "train=1"], repo)
    spans = [_log_span(repo / "logs" / f"train_{m}.log") for m in ("zerodce", "zerodce_pp")]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], f"the trainings did not overlap: {spans}"
    logs = "".join((repo / "logs" / f"train_{m}.log").read_text() for m in ("zerodce", "zerodce_pp"))
    assert "database is locked" not in logs
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("expocorr").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["zerodce", "zerodce_pp"]
    assert all(r.info.status == "FINISHED" and "val_psnr" in r.data.metrics for r in runs)


def test_device_selection():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else
                                        "mps" if torch.backends.mps.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(MethodError, match="CUDA is not available"):
            pick_device("cuda")

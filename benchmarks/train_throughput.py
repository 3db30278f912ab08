"""Training throughput (samples/s) of every registered model at the default patch size and batch.

Runs each model's real training step (forward, loss, backward, Adam; the discriminator step for
adversarial models) on random patches on the CPU, and on the GPU when one is present, and writes
reports/bench/train_throughput.json.

    python benchmarks/train_throughput.py [--params params.yaml] [--steps 10] [--warmup 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from expocorr import params as params_mod
from expocorr.models import build
from record import write_record

OUT = Path("reports/bench/train_throughput.json")


def throughput(name: str, cfg: dict, batch: int, patch: int, device: torch.device, steps: int, warmup: int) -> float:
    """Samples per second of `name`'s training step."""
    torch.manual_seed(0)
    model = build(name, cfg["arch"]).to(device).train()
    g = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("discriminator.")]
    opt_g = torch.optim.Adam(g, lr=cfg["lr"])
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=cfg["lr"]) if hasattr(model, "discriminator") else None
    x = torch.rand(batch, 3, patch, patch, device=device)
    b = {"input": x, "target": x.flip(-1)}
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        out = model(x)
        loss = model.loss(b, out, 10**6)["total"]
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        if opt_d is not None:
            d = model.d_loss(b, out.detach(), 10**6)
            opt_d.zero_grad()
            d["total"].backward()
            opt_d.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    p = params_mod.load(args.params)
    common = p["train"]["common"]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results = []
    for device in devices:
        for name in p["train"]["models"]:
            sps = throughput(name, p["train"][name], common["batch_size"], common["patch_size"], device, args.steps,
                             args.warmup)
            results.append({"model": name, "device": device.type, "samples_per_second": round(sps, 2),
                            "batch_size": common["batch_size"], "patch_size": common["patch_size"]})
            print(f"{device.type:5s} {name:16s} {sps:9.1f} samples/s")
    write_record(OUT, "train_throughput", results=results)


if __name__ == "__main__":
    main()

"""The JSON record every benchmark writes: its name, the machine it ran on, its results."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from expocorr.atomic import write_text


def machine() -> dict:
    """Python, torch, CPU, thread and GPU facts of this process."""
    return {"python": platform.python_version(), "torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_record(path: Path, benchmark: str, **fields) -> None:
    """Write ``{"benchmark", <machine facts>, **fields}`` to `path` (atomically) and say so."""
    write_text(path, json.dumps({"benchmark": benchmark, **machine(), **fields}, indent=2) + "\n")
    print(f"wrote {path}")

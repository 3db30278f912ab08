"""The machine a benchmark ran on, recorded in every benchmark's JSON."""

from __future__ import annotations

import os
import platform

import torch


def machine() -> dict:
    """Python, torch, CPU, thread and GPU facts of this process."""
    return {"python": platform.python_version(), "torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}

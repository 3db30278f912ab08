"""Run N copies of an `expocorr` command as one distributed job on this machine, listening on loopback only.

torchrun's rendezvous stores listen on every interface whatever address they are given (a TCPStore
binds ``::``), so the single-node launch is done here, the way torchrun's agent does it: this process
hosts the store on a socket bound to 127.0.0.1 and the workers join it as torchrun's workers join
their agent's (``TORCHELASTIC_USE_AGENT_STORE``); gloo and NCCL are bound to the loopback interface.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import torch.distributed as dist

LOOPBACK = "127.0.0.1"
LOOPBACK_INTERFACE = "lo0" if sys.platform == "darwin" else "lo"


def worker_env(rank: int, world: int, port: int) -> dict[str, str]:
    """The environment torchrun gives a worker, with the collectives' sockets on loopback."""
    return {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "GROUP_RANK": "0",
            "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": LOOPBACK,
            "MASTER_PORT": str(port), "TORCHELASTIC_USE_AGENT_STORE": "True",
            "GLOO_SOCKET_IFNAME": LOOPBACK_INTERFACE, "NCCL_SOCKET_IFNAME": LOOPBACK_INTERFACE}


def local(world: int, args: list[str]) -> int:
    """Run `python *args` as ranks 0..world-1; the exit code of the first that fails (the others are
    stopped), else 0. SIGTERM stops them all."""
    server = socket.create_server((LOOPBACK, 0))
    port = server.getsockname()[1]
    # The classic server: libuv's takes over a listening socket only in recent torch (pytorch/pytorch#150215).
    store = dist.TCPStore(LOOPBACK, port, is_master=True, master_listen_fd=server.detach(), wait_for_workers=False,
                          use_libuv=False)
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    procs: list[subprocess.Popen] = []
    try:
        procs = [subprocess.Popen([sys.executable, *args], env=worker_env(rank, world, port)) for rank in range(world)]
        while True:
            codes = [p.poll() for p in procs]
            failed = [code for code in codes if code not in (None, 0)]
            if failed:  # a worker killed by signal N reads as 128 + N, as from a shell
                return failed[0] if failed[0] > 0 else 128 - failed[0]
            if all(code == 0 for code in codes):
                return 0
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
        del store  # stops the store's server and closes its socket

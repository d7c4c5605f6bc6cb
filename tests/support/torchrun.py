"""Launch ``python -m MODULE ARGS`` as ``torchrun --nproc-per-node N`` on CPU processes (gloo),
one intra-op thread each, on a free local port; the launcher and its workers are killed on a timeout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(module: str, args: list[str], *, nproc: int = 2, timeout: float = 120) -> tuple[int, str]:
    """(exit status of the launcher, its stdout and stderr together)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU processes (gloo) also on a machine with GPUs
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc)]
    launcher += ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    cmd = [*launcher, "-m", module, *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()  # the launcher takes its workers down with it
            proc.communicate()
    return proc.returncode, out

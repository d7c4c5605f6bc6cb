"""Running a peer library (LXT, inseq) in its own virtual environment, side by side with ours.

The peer runs as a long-lived subprocess speaking JSON lines (see ``lxt_worker.py``),
so the two implementations alternate item by item in one run on the same token ids
and load noise on a shared machine hits both alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


class PeerUnavailable(RuntimeError):
    """The peer's environment is missing or its worker failed to start."""


class WorkerProcess:
    """A worker script run by another interpreter: ``request(dict) -> dict`` over stdin/stdout."""

    def __init__(self, python: str | Path, script: str | Path, *args: str, timeout_note: str = "") -> None:
        python = Path(python)
        if not python.exists():
            raise PeerUnavailable(f"{python} not found{timeout_note}")
        env = dict(os.environ, TQDM_DISABLE="1", PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error")
        env.pop("PYTHONPATH", None)
        self._proc = subprocess.Popen(
            [str(python), str(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(ROOT),
        )
        self.info = self._read()
        if not self.info.get("ready"):
            raise PeerUnavailable(f"worker did not start: {self.info}")

    def _read(self) -> dict:
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if not line:
            err = self._proc.stderr.read() if self._proc.stderr else ""
            self._proc.wait()
            tail = " | ".join(err.strip().splitlines()[-3:])
            raise PeerUnavailable(f"worker exited ({self._proc.returncode}): {tail}")
        return json.loads(line)

    def request(self, payload: dict) -> dict:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(payload) + "\n")
        self._proc.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(f"worker: {answer['error']}")
        return answer

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                if self._proc.stdin:
                    self._proc.stdin.write("\n")
                    self._proc.stdin.close()
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pearson(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def geometric_mean(values) -> float:
    v = np.asarray([x for x in values if x > 0], dtype=np.float64)
    return float(np.exp(np.log(v).mean())) if len(v) else float("nan")


def venv_python(name: str) -> Path:
    """Interpreter of ``benchmarks/.venv-<name>`` (may not exist)."""
    sub = "Scripts/python.exe" if sys.platform == "win32" else "bin/python"
    return ROOT / "benchmarks" / f".venv-{name}" / sub


DATA = ROOT / "benchmarks" / "data"


def add_compare_args(ap, peer: str, *, limit: int, repeats: int) -> None:
    """The options every ours-vs-peer benchmark takes (``--{peer}-python`` names the peer's interpreter)."""
    ap.add_argument("--model", help="checkpoint (default: the bundled SmolLM2-135M-Instruct GGUF)")
    ap.add_argument("--data", default=f"{DATA / 'qa.jsonl'},{DATA / 'long.jsonl'}", help="comma-separated JSONL files")
    ap.add_argument("--limit", type=int, default=limit, help=f"items per data file (default {limit})")
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--threads", type=int, help="torch threads, the same in both processes")
    ap.add_argument(f"--{peer}-python", default=str(venv_python(peer)), help=f"interpreter of the {peer} environment")
    ap.add_argument("--out", type=Path, help=f"folder for {peer}.md (default benchmarks/results)")


def load_compare_inputs(args):
    """``(model, model_path, threads, prepared)``: our model (float32), torch's thread count and the prepared items."""
    import torch

    from lrp_llm.analyses.evaluate import load_items, prepare_item
    from lrp_llm.checkpoints.loading import demo_model_path, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = args.model or str(demo_model_path())
    model, tok = load_model(args.model, dtype="float32")
    prepared = []
    for path in [p for p in args.data.split(",") if p]:
        if not Path(path).is_file():
            print(f"skipping {path}: not found")
            continue
        prepared += [prepare_item(model, tok, item) for item in load_items(path, limit=args.limit)]
    return model, model_path, torch.get_num_threads(), prepared

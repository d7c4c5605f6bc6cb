"""Helpers shared by the benchmarks: timing, peak memory, markdown tables."""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 5 ms), in MiB."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process(os.getpid())
        self.peak = 0
        self.start = 0

    def _sample(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            stop.wait(0.005)

    @contextmanager
    def watch(self):
        stop = threading.Event()
        self.start = self._proc.memory_info().rss
        self.peak = self.start
        thread = threading.Thread(target=self._sample, args=(stop,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def machine() -> str:
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def load_note(before: float, after: float) -> str:
    """The 1-minute load averages around a timed run, for the notes (they lag by about a minute
    and ``after`` includes the benchmark's own threads, so they are context, not a verdict)."""
    cores = os.cpu_count() or 1
    return f"1-minute load average {before:.1f} before, {after:.1f} after (this benchmark included) on {cores} cores"


def write_table(
    name: str, title: str, header: list[str], rows: list[list[str]], notes: list[str], out_dir: Path | None = None
) -> Path:
    """Write ``<out_dir or benchmarks/results>/<name>.md`` and print it."""
    lines = [f"# {title}", "", *[f"- {n}" for n in notes], ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    folder = Path(out_dir) if out_dir is not None else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.md"
    path.write_text(text)
    print(text)
    return path

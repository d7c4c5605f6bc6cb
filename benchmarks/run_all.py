"""Run every benchmark (``make bench``): each writes its table to benchmarks/results/<name>.md.

    .venv/bin/python -m benchmarks.run_all [--only a,b] [--skip a,b] [--list]

Each benchmark runs as its own process (``python -m benchmarks.<name>``), so one's
memory, threads or model patches cannot affect the next. The ones named in ORDER run
first, in that order; any other benchmark script in this folder runs after them. A
summary of exit codes and times comes at the end; the exit code is non-zero if any failed.
The peer comparisons need their environments: ``sh benchmarks/make_lxt_venv.sh`` and
``sh benchmarks/make_inseq_venv.sh`` (without them their tables say so).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = (
    "attnlrp_speed",
    "faithfulness",
    "choose_default",  # reads faithfulness's per-item scores
    "lxt_compare",
    "inseq_compare",
    "mamba_speed",
    "bilrp_speed",
    "patching_speed",
)
# modules in this folder that are helpers or workers, not benchmarks
HELPERS = {"common", "peers", "run_all", "check_data", "lxt_worker", "inseq_worker", "__init__"}


def discover() -> list[str]:
    found = {
        p.stem
        for p in HERE.glob("*.py")
        if p.stem not in HELPERS and "__main__" in p.read_text(encoding="utf-8", errors="replace")
    }
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="run every benchmark")
    ap.add_argument("--only", help="comma-separated benchmark names")
    ap.add_argument("--skip", help="comma-separated benchmark names to leave out")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args(argv)
    names = discover()
    if args.list:
        print("\n".join(names))
        return 0
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names)}", file=sys.stderr)
            return 2
        names = [n for n in names if n in wanted]
    if args.skip:
        skipped = {n.strip() for n in args.skip.split(",")}
        names = [n for n in names if n not in skipped]
    summary = []
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"], cwd=str(HERE.parent))
        except KeyboardInterrupt:
            print("cancelled", file=sys.stderr)
            return 130
        summary.append((name, code, time.perf_counter() - t0))
    print("\n| benchmark | exit | seconds |\n|---|---|---|")
    for name, code, seconds in summary:
        print(f"| {name} | {'ok' if code == 0 else code} | {seconds:.0f} |")
    return 0 if all(code == 0 for _, code, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())

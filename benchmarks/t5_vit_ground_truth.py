"""Ground-truth localisation and speed of every method on the two synthetic T5 / ViT models.

- T5 (``models/synthetic/t5-copy-reverse``): share of output letters whose top-1 source
  token is the letter they copy (held-out examples, answer forced to the right target).
- ViT (``models/synthetic/vit-coloured-object``): share of images whose most relevant
  patch (for the true class) holds the coloured object.

Each method runs in the same process on the same inputs; time is per explanation (all
answer tokens of one T5 example; one ViT image) and its ratio to gradient x input.
Prints a table and writes ``benchmarks/results/t5_vit_ground_truth.md``.

    .venv/bin/python -m benchmarks.t5_vit_ground_truth [--t5 N] [--vit N]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from lrp_llm.loading import load_model
from lrp_llm.tasks import coloured_object, copy_reverse

ROOT = Path(__file__).resolve().parent.parent
T5_DIR = ROOT / "models" / "synthetic" / "t5-copy-reverse"
VIT_DIR = ROOT / "models" / "synthetic" / "vit-coloured-object"
METHODS = ("attnlrp", "cp-lrp", "grad-x-input", "saliency", "integrated-gradients", "random")
# Held-out seeds: the training scripts use 1234 / 4321 and their derived seeds.
T5_SEED, VIT_SEED = 77, 88


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t5", type=int, default=300, help="held-out T5 examples")
    parser.add_argument("--vit", type=int, default=500, help="held-out ViT images")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t5, tok = load_model(T5_DIR)
    vit, _ = load_model(VIT_DIR)
    examples = copy_reverse.examples(args.t5, T5_SEED)
    images = coloured_object.samples(args.vit, VIT_SEED)
    rows = []
    for method in METHODS:
        t0 = time.perf_counter()
        t5_acc = copy_reverse.alignment_accuracy(t5, tok, examples, method)
        t5_s = (time.perf_counter() - t0) / len(examples)
        t0 = time.perf_counter()
        vit_acc = coloured_object.localisation_accuracy(vit, images, method)
        vit_s = (time.perf_counter() - t0) / len(images)
        rows.append((method, t5_acc, t5_s, vit_acc, vit_s))
        print(
            f"{method:22s} T5 {t5_acc:.3f} ({1000 * t5_s:.1f} ms)  ViT {vit_acc:.3f} ({1000 * vit_s:.1f} ms)",
            flush=True,
        )
    base = {r[0]: r for r in rows}["grad-x-input"]
    lines = [
        "# T5 and ViT: ground-truth localisation and time per explanation",
        "",
        f"Measured with `python -m benchmarks.t5_vit_ground_truth` on {platform.machine()} CPU, one thread, "
        f"torch {torch.__version__}, float32, on a shared machine (times are indicative). "
        f"T5: {len(examples)} held-out copy/reverse examples (seed {T5_SEED}), "
        f"{sum(len(e.symbols) for e in examples)} scored output letters; an output letter counts as a hit "
        "when its top-1 source token is the letter it copies. "
        f"ViT: {len(images)} held-out images (seed {VIT_SEED}); a hit when the most relevant patch holds the object.",
        "",
        "| method | T5 top-1 source = aligned | T5 ms / example | ratio to grad x input "
        "| ViT top patch = object | ViT ms / image | ratio to grad x input |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, t5_acc, t5_s, vit_acc, vit_s in rows:
        lines.append(
            f"| {method} | {t5_acc:.1%} | {1000 * t5_s:.1f} | {t5_s / base[2]:.2f} "
            f"| {vit_acc:.1%} | {1000 * vit_s:.1f} | {vit_s / base[4]:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / "t5_vit_ground_truth.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()

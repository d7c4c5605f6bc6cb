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

import numpy as np
import torch

from lrp_llm.checkpoints.loading import load_model
from lrp_llm.engines.seq2seq import seq2seq_relevance
from lrp_llm.engines.vision import image_relevance
from synthetic_tasks import coloured_object, copy_reverse

ROOT = Path(__file__).resolve().parent.parent
T5_DIR = ROOT / "models" / "synthetic" / "t5-copy-reverse"
VIT_DIR = ROOT / "models" / "synthetic" / "vit-coloured-object"
METHODS = ("attnlrp", "cp-lrp", "grad-x-input", "saliency", "integrated-gradients", "random")
# Held-out seeds: the training scripts use 1234 / 4321 and their derived seeds.
T5_SEED, VIT_SEED = 77, 88
TIMED = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t5", type=int, default=150, help="held-out T5 examples")
    parser.add_argument("--vit", type=int, default=300, help="held-out ViT images")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t5, tok = load_model(T5_DIR)
    vit_model, _ = load_model(VIT_DIR)
    examples = copy_reverse.examples(args.t5, T5_SEED)
    images = coloured_object.samples(args.vit, VIT_SEED)
    rows = []
    timed_t5 = [
        (tok(e.source)["input_ids"], tok(e.target, add_special_tokens=False)["input_ids"]) for e in examples[:TIMED]
    ]
    timed_vit = torch.from_numpy(coloured_object.pixel_values(np.stack([s.image for s in images[:TIMED]])))
    for method in METHODS:
        t5_acc = copy_reverse.alignment_accuracy(t5, tok, examples, method)
        vit = coloured_object.scores(vit_model, images, method)
        # time: one explanation at a time (all answer tokens of one T5 example; one image)
        t0 = time.perf_counter()
        for src, answer in timed_t5:
            seq2seq_relevance(t5, src, answer, method=method)
        t5_s = (time.perf_counter() - t0) / TIMED
        t0 = time.perf_counter()
        for i, s in enumerate(images[:TIMED]):
            image_relevance(vit_model, timed_vit[i : i + 1], s.label, method=method)
        vit_s = (time.perf_counter() - t0) / TIMED
        rows.append((method, t5_acc, t5_s, vit["top_patch"], vit["object_mass"], vit_s))
        print(f"{method:22s} T5 {t5_acc:.3f} ({1000 * t5_s:.1f} ms)  ViT {vit['top_patch']:.3f} "
              f"{vit['object_mass']:.3f} ({1000 * vit_s:.1f} ms)", flush=True)  # fmt: skip
    base = {r[0]: r for r in rows}["grad-x-input"]
    lines = [
        "# T5 and ViT: ground-truth localisation and time per explanation",
        "",
        f"Measured with `python -m benchmarks.t5_vit_ground_truth` on {platform.machine()} CPU, one thread, "
        f"torch {torch.__version__}, float32, on a shared, busy 2-core machine (times are indicative; "
        "the ratios compare methods run side by side in one process). "
        f"T5 (`models/synthetic/t5-copy-reverse`): {len(examples)} held-out copy/reverse examples "
        f"(seed {T5_SEED}), {sum(len(e.symbols) for e in examples)} scored output letters; a hit when the "
        "letter's top-1 source token is the letter it copies (answer forced to the right target). "
        f"ViT (`models/synthetic/vit-coloured-object`): {len(images)} held-out images (seed {VIT_SEED}); "
        "top patch: the most relevant patch (true class) holds the object; object mass: mean share of the "
        "positive pixel relevance on the object's pixels. "
        f"Time: mean over {TIMED} single explanations (one T5 example, all its answer tokens; one image); "
        "integrated gradients with 32 steps.",
        "",
        "| method | T5 top-1 source = aligned | T5 ms / example | ratio to grad x input "
        "| ViT top patch = object | ViT object mass | ViT ms / image | ratio to grad x input |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, t5_acc, t5_s, top_patch, mass, vit_s in rows:
        lines.append(
            f"| {method} | {t5_acc:.1%} | {1000 * t5_s:.1f} | {t5_s / base[2]:.2f} "
            f"| {top_patch:.1%} | {mass:.1%} | {1000 * vit_s:.1f} | {vit_s / base[5]:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / "t5_vit_ground_truth.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()

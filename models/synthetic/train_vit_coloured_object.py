"""Train the tiny ViT of ``models/synthetic/vit-coloured-object``.

The class is the colour of one small square on grey noise (``synthetic_tasks.coloured_object``),
so the evidence sits in one known patch. Seeded and CPU-only; a few minutes on two cores.
Never run in CI: the checkpoint is committed, and ``tests/unit/test_vit.py`` scores its
explanations against the object's patch.

    .venv/bin/python models/synthetic/train_vit_coloured_object.py [--steps N] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import ViTConfig, ViTForImageClassification
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

# synthetic_tasks is a dev-only package at the repository root, not installed with lrp_llm
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from synthetic_tasks import coloured_object as task

TRAIN_SEED = 4321  # held-out images in the tests use other seeds


def build_model() -> ViTForImageClassification:
    config = ViTConfig(
        image_size=task.IMAGE_SIZE,
        patch_size=task.PATCH_SIZE,
        num_channels=3,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        id2label=dict(enumerate(task.LABELS)),
        label2id={name: i for i, name in enumerate(task.LABELS)},
    )
    return ViTForImageClassification(config)


def tensors(samples):
    x = torch.from_numpy(task.pixel_values(np.stack([s.image for s in samples])))
    y = torch.tensor([s.label for s in samples])
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", default=str(Path(__file__).parent / "vit-coloured-object"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=args.steps, pct_start=0.1)
    held_x, held_y = tensors(task.samples(500, TRAIN_SEED + 1))
    start = time.time()
    model.train()
    for step in range(args.steps):
        x, y = tensors(task.samples(args.batch, TRAIN_SEED * 1_000_000 + step))
        loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps - 1:
            with torch.no_grad():
                model.eval()
                acc = (model(pixel_values=held_x).logits.argmax(-1) == held_y).float().mean().item()
                model.train()
            print(
                f"step {step:5d}  loss {loss.item():.4f}  held-out accuracy {acc:.3f}  {time.time() - start:.0f}s",
                flush=True,
            )
    model.eval()
    model.save_pretrained(args.out)
    size = {"height": task.IMAGE_SIZE, "width": task.IMAGE_SIZE}
    ViTImageProcessorPil(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()

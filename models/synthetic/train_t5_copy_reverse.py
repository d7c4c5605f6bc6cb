"""Train the tiny T5 (v1.1 / Flan layout: gated-GELU) of ``models/synthetic/t5-copy-reverse``.

Seeded and CPU-only; about 10 minutes on two cores. Never run in CI: the checkpoint is
committed, and ``tests/unit/test_t5.py`` scores its explanations against the known alignment.

    .venv/bin/python models/synthetic/train_t5_copy_reverse.py [--steps N] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import T5Config, T5ForConditionalGeneration

# synthetic_tasks is a dev-only package at the repository root, not installed with lrp_llm
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from synthetic_tasks import copy_reverse as task

TRAIN_SEED = 1234  # held-out examples in the tests use other seeds


def build_model(tokenizer) -> T5ForConditionalGeneration:
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=32,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5ForConditionalGeneration(config)


def batch(tokenizer, examples):
    enc = tokenizer([e.source for e in examples], padding=True, return_tensors="pt")
    lab = tokenizer([e.target for e in examples], padding=True, return_tensors="pt")
    labels = lab["input_ids"].masked_fill(lab["attention_mask"] == 0, -100)
    return enc["input_ids"], enc["attention_mask"], labels


@torch.no_grad()
def exact_match(model, tokenizer, examples) -> float:
    ids, mask, _ = batch(tokenizer, examples)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=task.MAX_LEN + 2, do_sample=False)
    got = tokenizer.batch_decode(out, skip_special_tokens=True)
    return sum(g.strip() == e.target for g, e in zip(got, examples)) / len(examples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", default=str(Path(__file__).parent / "t5-copy-reverse"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tokenizer = task.make_tokenizer()
    model = build_model(tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=args.steps, pct_start=0.1)
    data = task.examples(args.steps * args.batch, TRAIN_SEED)
    held_out = task.examples(300, TRAIN_SEED + 1)
    model.train()
    start = time.time()
    for step in range(args.steps):
        ids, mask, labels = batch(tokenizer, data[step * args.batch : (step + 1) * args.batch])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 500 == 0 or step == args.steps - 1:
            model.eval()
            acc = exact_match(model, tokenizer, held_out)
            model.train()
            print(
                f"step {step:5d}  loss {loss.item():.4f}  held-out exact match {acc:.3f}  {time.time() - start:.0f}s",
                flush=True,
            )
    model.eval()
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"saved {args.out}; held-out exact match {exact_match(model, tokenizer, held_out):.3f}")


if __name__ == "__main__":
    main()

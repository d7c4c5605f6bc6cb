"""Train the tiny BERT sentence encoder of ``models/synthetic/bert-shared-nouns``.

Task (:mod:`synthetic_tasks.shared_nouns`): the cosine of two mean-pooled embeddings must
equal the cosine of the two sentences' sets of counted (not negated) nouns. Seeded and
CPU-only; a few minutes on two cores. Never run in CI: the checkpoint is committed, and
``tests/ground_truth/test_bilrp_ground_truth.py`` scores BiLRP's interactions against the known
matching nouns.

    .venv/bin/python models/synthetic/train_bert_shared_nouns.py [--steps N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertModel

# synthetic_tasks is a dev-only package at the repository root, not installed with lrp_llm
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from synthetic_tasks import shared_nouns as task

TRAIN_SEED = 1234  # held-out pairs in the tests and benchmarks use other seeds
HELD_OUT_SEED = 99


def build_model() -> BertModel:
    config = BertConfig(
        vocab_size=len(task.VOCAB),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=32,
        type_vocab_size=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
    )
    return BertModel(config)


def embed(model: BertModel, tokenizer, sentences) -> torch.Tensor:
    """Mean over all tokens of each sentence ([CLS] and [SEP] included, padding not): (batch, d)."""
    enc = tokenizer([s.text for s in sentences], padding=True, return_tensors="pt")
    hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1)


def cosine_loss(model, tokenizer, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a = embed(model, tokenizer, [p[0] for p in batch])
    b = embed(model, tokenizer, [p[1] for p in batch])
    pred = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    target = torch.tensor([task.similarity(*p) for p in batch])
    return torch.nn.functional.mse_loss(pred, target), pred, target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "bert-shared-nouns"))
    # one thread: on a shared 2-core machine OpenMP threads spin against other jobs (25x slower)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    tokenizer = task.make_tokenizer()
    model = build_model()
    train = task.pairs(args.steps * args.batch // 4, TRAIN_SEED)  # each pair seen about 4 times
    held_out = task.pairs(1000, HELD_OUT_SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = 200

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    t0 = time.perf_counter()
    log = []
    for step in range(args.steps):
        model.train()
        idx = torch.randint(len(train), (args.batch,), generator=gen).tolist()
        loss, _, _ = cosine_loss(model, tokenizer, [train[i] for i in idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 500 == 0 or step == args.steps - 1:
            model.eval()
            with torch.no_grad():
                val, pred, target = cosine_loss(model, tokenizer, held_out)
            mae = float((pred - target).abs().mean())
            log.append(
                {"step": step, "train_mse": float(loss.detach()), "held_out_mse": float(val), "held_out_mae": mae}
            )
            print(
                f"step {step:5d}  train mse {float(loss.detach()):.4f}  held-out mse {float(val):.4f}  mae {mae:.3f}",
                flush=True,
            )
    seconds = time.perf_counter() - t0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    # sentence-transformers convention: tells xai-tui (and sentence-transformers) to mean-pool
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 64, "pooling_mode_mean_tokens": True}, indent=1) + "\n"
    )
    (out / "training.json").write_text(
        json.dumps(
            {
                "steps": args.steps,
                "batch": args.batch,
                "lr": args.lr,
                "seed": TRAIN_SEED,
                "seconds": round(seconds, 1),
                "log": log,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"saved {out} after {seconds:.0f} s")


if __name__ == "__main__":
    main()

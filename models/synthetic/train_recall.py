"""Train the tiny recall models of ``models/synthetic/recall-{mamba,mamba2,llama}``.

Task: :mod:`synthetic_tasks.recall` (a key and its value once, far back; the key again
at the end; answer: the value). Loss on the answer only. Curriculum over the sequence
length: the length doubles whenever held-out accuracy at the current length reaches
``--advance`` (default 0.97), up to ``--max-length``; training stops at the time
budget or when the longest length passes. Seeded, CPU-only, never run in CI: the
checkpoints are committed and ``tests/ground_truth/test_recall_ground_truth.py`` loads them.
The Mamba models train on the fast scan of :mod:`lrp_llm.mechanism.ssm_scan`.

    nice -n 10 .venv/bin/python models/synthetic/train_recall.py --arch mamba --minutes 20
    # continue from the committed checkpoint towards longer distances:
    .venv/bin/python models/synthetic/train_recall.py --arch mamba2 --resume --length 2057

Each checkpoint's ``train_log.json`` lists the runs (arguments) that produced it, in order.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# synthetic_tasks is a dev-only package at the repository root, not installed with lrp_llm
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from synthetic_tasks import recall as task

HERE = Path(__file__).parent
TRAIN_SEED = 2024  # held-out sequences in the tests use other seeds


def build_model(arch: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    common = dict(
        vocab_size=len(task.VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        tie_word_embeddings=False,
        pad_token_id=task.TOKEN_ID["<pad>"],
        bos_token_id=task.BOS,
        eos_token_id=task.TOKEN_ID["</s>"],
    )
    if arch == "mamba":
        extra = dict(state_size=8, expand=2, conv_kernel=4, time_step_rank=4, use_bias=False)
    elif arch == "mamba2":
        extra = dict(state_size=8, expand=2, conv_kernel=4, num_heads=4, head_dim=16, n_groups=1, chunk_size=64)
    elif arch == "llama":
        extra = dict(
            intermediate_size=64,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=8,
            max_position_embeddings=4096,
            rope_theta=10000.0,
        )
    else:
        raise SystemExit(f"unknown --arch {arch}")
    config = AutoConfig.for_model(arch, **common, **extra)
    if arch == "llama":
        config._attn_implementation = "sdpa"
    return AutoModelForCausalLM.from_config(config)


@torch.no_grad()
def accuracy(model, length: int, n: int = 256, seed: int = 999, batch: int = 64) -> float:
    """Held-out accuracy with the value ``length - 9`` tokens back (``task.held_out``)."""
    data = task.held_out(n, length - 9, seed=seed)
    hits = 0
    for i in range(0, n, batch):
        ids = torch.from_numpy(data.ids[i : i + batch])
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1]
        hits += int((logits.argmax(-1).numpy() == data.answer[i : i + batch]).sum())
    return hits / n


def save(model, out: Path, log: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    task.tokenizer().save_pretrained(str(out))
    (out / "train_log.json").write_text(json.dumps(log, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["mamba", "mamba2", "llama"], required=True)
    parser.add_argument("--minutes", type=float, default=20.0, help="time budget")
    parser.add_argument("--start-length", type=int, default=41, help="first training length (distance + 9)")
    parser.add_argument("--max-length", type=int, default=2057, help="longest training length (distance + 9)")
    parser.add_argument("--advance", type=float, default=0.97)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="start from the saved checkpoint")
    parser.add_argument("--length", type=int, default=None, help="with --resume: continue at this length")
    parser.add_argument(
        "--far-half", action="store_true", help="half of each batch with distances in the farther half (attention)"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    out = Path(args.out or HERE / f"recall-{args.arch}")
    torch.manual_seed(TRAIN_SEED)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(TRAIN_SEED)
    log: dict = {"arch": args.arch, "runs": [vars(args)], "evals": []}
    if args.resume:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(out))
        old = json.loads((out / "train_log.json").read_text())
        length = int(args.length or old.get("length", args.start_length))
        log["evals"] = old.get("evals", [])
        log["runs"] = old.get("runs", [old.get("args")]) + [vars(args)]
        step0 = int(old.get("steps", 0))
    else:
        model = build_model(args.arch)
        length, step0 = args.start_length, 0
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    start = time.time()
    step = step0
    done = False

    # the Mamba mixers run on the fast scan (transformers' torch path is quadratic in backward)
    from lrp_llm.mechanism.context import lrp_rules

    with lrp_rules(model, None):
        model.train()
        while time.time() - start < args.minutes * 60 and not done:
            warm = min(1.0, (step - step0 + 1) / 100)
            for g in opt.param_groups:
                g["lr"] = args.lr * warm
            data = task.sample(args.batch, length, rng)
            if args.far_half:  # half of the batch with the value in the farther half of the sequence
                far = task.sample(args.batch // 2, length, rng, min_distance=(length - 3) // 2, log_uniform=False)
                data = task.Batch(
                    *(
                        np.concatenate([a[: args.batch - len(far.ids)], b])
                        for a, b in zip(
                            (data.ids, data.answer, data.value_pos, data.key_pos),
                            (far.ids, far.answer, far.value_pos, far.key_pos),
                        )
                    )
                )
            ids = torch.from_numpy(data.ids)
            logits = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1]
            loss = F.cross_entropy(logits, torch.from_numpy(data.answer))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            if step % args.eval_every == 0:
                model.eval()
                acc = accuracy(model, length, n=128)
                model.train()
                entry = {"step": step, "length": length, "loss": float(loss), "acc": acc, "s": time.time() - start}
                log["evals"].append(entry)
                print(json.dumps(entry), flush=True)
                if acc >= args.advance:
                    if length >= args.max_length:
                        done = True
                    else:  # double the distance: lengths 2^k + 9
                        length = min(args.max_length, 2 * (length - 9) + 9)
                        print(f"-> length {length}", flush=True)
                log["length"], log["steps"] = length, step
                save(model, out, log)
    model.eval()
    final = {}
    for n_len in sorted({65, 265, 1033, 2057} | {length}):
        if n_len <= 2 * args.max_length:
            final[str(n_len - 9)] = accuracy(model, n_len, n=256, seed=4242)
    log.update(length=length, steps=step, minutes=(time.time() - start) / 60, final_accuracy_by_distance=final)
    print(json.dumps(final), flush=True)
    save(model, out, log)


if __name__ == "__main__":
    main()

"""AttnLRP relevance computed by LXT 2.1; runs inside benchmarks/.venv-lxt (transformers 4.52.4).

    benchmarks/.venv-lxt/bin/python benchmarks/lxt_worker.py MODEL [--threads N]

Standalone on purpose: it imports only torch, transformers and lxt (never ``lrp_llm``,
which needs transformers 5). MODEL is a .gguf file or an HF folder, loaded in float32.
Protocol (one JSON object per line): after loading it prints {"ready": ...}; then for
each request {"input_ids": [...], "position": p, "repeats": r} on stdin it prints
{"relevance": [...], "logit": x, "seconds": best}. The explained token is
``input_ids[p]``, predicted from position ``p - 1``; one run is LXT's documented recipe
(monkey_patch the modeling module; forward with logits at the last position only;
backward from the explained logit; gradient x input at the input embeddings), timed
best of ``repeats``. An empty line or end of input stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch
    import transformers
    from lxt.efficient import monkey_patch
    from transformers import AutoModelForCausalLM
    from transformers.models.llama import modeling_llama

    if args.threads:
        torch.set_num_threads(args.threads)
    monkey_patch(modeling_llama, verbose=False)
    source = Path(args.model)
    t0 = time.perf_counter()
    if source.suffix == ".gguf":
        model = AutoModelForCausalLM.from_pretrained(
            str(source.parent), gguf_file=source.name, torch_dtype=torch.float32
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(str(source), torch_dtype=torch.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    ready = {
        "ready": True,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_seconds": time.perf_counter() - t0,
    }
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        request = json.loads(line)
        position = int(request["position"])
        ids = torch.tensor([request["input_ids"][:position]])
        target = int(request["input_ids"][position])
        best = float("inf")
        for _ in range(int(request.get("repeats", 1))):
            t1 = time.perf_counter()
            embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
            logit = model(inputs_embeds=embeds, use_cache=False, logits_to_keep=1).logits[0, -1, target]
            logit.backward()
            relevance = (embeds * embeds.grad).float().sum(-1)[0]
            best = min(best, time.perf_counter() - t1)
        answer = {"relevance": relevance.tolist(), "logit": float(logit.detach()), "seconds": best}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()

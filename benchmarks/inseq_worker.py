"""Gradient attributions computed by inseq; runs inside benchmarks/.venv-inseq.

    benchmarks/.venv-inseq/bin/python benchmarks/inseq_worker.py MODEL [--threads N]

Standalone on purpose (imports only torch, transformers and inseq), like
``lxt_worker.py`` and with the same JSON-lines protocol: {"ready": ...} after loading;
then per request {"input_ids", "position", "method", "n_steps", "repeats"} it answers
{"relevance", "seconds", "ids_match", "ids"} or {"error"}. inseq takes text, so the token
ids are decoded and inseq re-tokenises them; ``ids`` are the ids it used (it drops EOS
tokens, such as the chat template's end-of-turn markers) and ``ids_match`` says whether
they are the ids asked for.
The explained score is the target token's logit (inseq's ``attributed_fn="logit"``), as
in lrp_llm. Per-token scores from inseq's raw per-dimension attributions: summed over
the hidden dimension (input x gradient, integrated gradients) or the L2 norm of the
gradient (saliency), as lrp_llm reports them.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import warnings
from pathlib import Path

METHODS = {"integrated-gradients": "integrated_gradients", "grad-x-input": "input_x_gradient", "saliency": "saliency"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        import inseq
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except Exception as exc:  # noqa: BLE001 - report why inseq cannot run here
        print(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"[:400]}), flush=True)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    source = Path(args.model)
    t0 = time.perf_counter()
    try:
        if source.suffix == ".gguf":
            kw = {"gguf_file": source.name}
            folder = str(source.parent)
        else:
            kw, folder = {}, str(source)
        tokenizer = AutoTokenizer.from_pretrained(folder, **kw)
        hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kw).eval()
        model = inseq.load_model(hf_model, "input_x_gradient", tokenizer=tokenizer)
        # A second inseq model on the same weights whose integrated gradients use captum's
        # midpoint rule (riemann_middle), the rule of lrp_llm: inseq has no argument for it.
        midpoint = inseq.load_model(hf_model, "integrated_gradients", tokenizer=tokenizer)
        captum_ig = midpoint.attribution_method.method
        captum_ig.attribute = functools.partial(captum_ig.attribute, method="riemann_middle")
    except Exception as exc:  # noqa: BLE001
        print(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"[:400]}), flush=True)
        return
    ready = {
        "ready": True,
        "inseq": __import__("importlib.metadata").metadata.version("inseq"),
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
        try:
            use = midpoint if request.get("zero_baseline") else model
            print(json.dumps(attribute(use, tokenizer, request)), flush=True)
        except Exception as exc:  # noqa: BLE001 - one failed call is a result, not a crash
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:400]}), flush=True)


def attribute(model, tokenizer, request: dict) -> dict:
    ids = [int(i) for i in request["input_ids"]]
    position = int(request["position"])
    method = METHODS[request["method"]]
    # IG steps in chunks of 8 as in lrp_llm (captum's default runs all steps in one batch)
    kwargs = {"n_steps": int(request["n_steps"]), "internal_batch_size": 8} if method == "integrated_gradients" else {}
    embeddings = model.model.get_input_embeddings().weight
    unk = tokenizer.unk_token_id
    saved = None
    if request.get("zero_baseline") and method == "integrated_gradients":
        # inseq's IG baseline is the UNK token's embedding; zeroing that row (the inputs never
        # contain UNK) makes the baseline the zero embedding, as in lrp_llm (restored after).
        if unk is None or unk in ids:
            raise ValueError("zero baseline needs a tokenizer with an UNK token that the input does not contain")
        saved = embeddings.data[unk].clone()
        embeddings.data[unk] = 0.0
    try:
        return _attribute(model, tokenizer, ids, position, method, kwargs, int(request.get("repeats", 1)))
    finally:
        if saved is not None:
            embeddings.data[unk] = saved


def _attribute(model, tokenizer, ids, position, method, kwargs, repeats) -> dict:
    import torch

    prompt = tokenizer.decode(ids[:position], skip_special_tokens=False)
    full = tokenizer.decode(ids[: position + 1], skip_special_tokens=False)
    best, out = float("inf"), None
    # the midpoint model's default method is its patched integrated gradients
    default = getattr(model.attribution_method, "method_name", None)
    name = None if method == "integrated_gradients" and default == method else method
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model.attribute(
            prompt, full, method=name, attributed_fn="logit", show_progress=False, pretty_progress=False, **kwargs
        )
        best = min(best, time.perf_counter() - t0)
    seq = out.sequence_attributions[0]
    got_ids = [int(t.id) for t in seq.target]
    raw = seq.target_attributions  # (target tokens, generated steps, hidden)
    column = raw[:, -1]
    if column.dim() == 2:
        scores = column.norm(dim=-1) if method == "saliency" else column.sum(-1)
    else:
        scores = column
    scores = torch.nan_to_num(scores.double(), nan=0.0)
    return {
        "relevance": scores[: len(got_ids) - 1].tolist(),
        "seconds": best,
        "ids_match": got_ids == ids[: position + 1],
        "n_ids": len(got_ids),
        "ids": got_ids,
    }


if __name__ == "__main__":
    main()

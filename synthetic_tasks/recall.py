"""Long-range key-value recall: the answer is the token that followed a key far back.

A sequence is ``<s>``, filler tokens, a key ``kI`` and its value ``vJ`` once, more
filler, and the same key again at the very end; the next token must be ``vJ``. The
distance is the number of positions from the value to the final (query) key, so the
evidence sits at two known positions ``distance`` and ``distance + 1`` tokens back.

Filler is drawn from the distractor words ``d*`` and from the other values (never the
answer), so the model has to find the token after the key, not just any value.
Keys appear exactly twice. Word-level vocabulary; token id = index in :data:`VOCAB`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
N_KEYS, N_VALUES, N_DISTRACTORS = 16, 16, 32
KEYS = tuple(f"k{i}" for i in range(N_KEYS))
VALUES = tuple(f"v{i}" for i in range(N_VALUES))
DISTRACTORS = tuple(f"d{i}" for i in range(N_DISTRACTORS))
VOCAB: tuple[str, ...] = SPECIALS + KEYS + VALUES + DISTRACTORS
TOKEN_ID = {tok: i for i, tok in enumerate(VOCAB)}
BOS = TOKEN_ID["<s>"]
KEY_IDS = np.array([TOKEN_ID[k] for k in KEYS])
VALUE_IDS = np.array([TOKEN_ID[v] for v in VALUES])
FILLER_IDS = np.array([TOKEN_ID[t] for t in DISTRACTORS + VALUES])


@dataclass(frozen=True)
class Batch:
    """``ids`` (batch, length): the sequences without the answer; ``answer`` (batch,) the value ids;
    ``value_pos`` / ``key_pos`` (batch,) the positions of the far value and key."""

    ids: np.ndarray
    answer: np.ndarray
    value_pos: np.ndarray
    key_pos: np.ndarray

    @property
    def distance(self) -> np.ndarray:
        return self.ids.shape[1] - 1 - self.value_pos


def sample(
    batch: int,
    length: int,
    rng: np.random.Generator,
    *,
    min_distance: int = 2,
    max_distance: int | None = None,
    log_uniform: bool = True,
) -> Batch:
    """``batch`` sequences of ``length`` tokens (``<s>`` ... query key), distances in
    [min_distance, max_distance] (default: as far as the length allows), log-uniform by default."""
    hi = length - 3 if max_distance is None else min(max_distance, length - 3)
    lo = max(2, min(min_distance, hi))
    if log_uniform and hi > lo:
        d = np.exp(rng.uniform(math.log(lo), math.log(hi + 1), size=batch)).astype(int).clip(lo, hi)
    else:
        d = rng.integers(lo, hi + 1, size=batch)
    keys = KEY_IDS[rng.integers(0, N_KEYS, size=batch)]
    answers_idx = rng.integers(0, N_VALUES, size=batch)
    answers = VALUE_IDS[answers_idx]
    # filler from distractors and the other values: draw an index into FILLER_IDS, skipping the answer
    n_fill = len(FILLER_IDS) - 1
    draw = rng.integers(0, n_fill, size=(batch, length))
    answer_slot = N_DISTRACTORS + answers_idx  # the answer's index in FILLER_IDS
    draw = draw + (draw >= answer_slot[:, None])
    ids = FILLER_IDS[draw]
    ids[:, 0] = BOS
    value_pos = length - 1 - d
    key_pos = value_pos - 1
    rows = np.arange(batch)
    ids[rows, key_pos] = keys
    ids[rows, value_pos] = answers
    ids[:, -1] = keys
    return Batch(ids=ids, answer=answers, value_pos=value_pos, key_pos=key_pos)


def held_out(n: int, distance: int, seed: int = 12345, prefix: int = 8) -> Batch:
    """``n`` evaluation sequences with the value exactly ``distance`` tokens before the query."""
    rng = np.random.default_rng(seed)
    return sample(n, distance + 1 + prefix, rng, min_distance=distance, max_distance=distance)


def text(ids) -> str:
    """The words of ``ids`` without a leading ``<s>`` (the tokenizer adds it back)."""
    ids = list(ids)
    if ids and int(ids[0]) == BOS:
        ids = ids[1:]
    return " ".join(VOCAB[int(i)] for i in ids)


def tokenizer():
    """A word-level fast tokenizer over :data:`VOCAB` (saved next to each checkpoint)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(vocab=dict(TOKEN_ID), unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # texts are "d3 k5 v2 ... k5": the tokenizer puts <s> in front like the training data
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def batch_relevance(model, ids: np.ndarray, answers: np.ndarray, method: str = "mambalrp", batch: int = 32):
    """Relevance (n, length) of every input token for the answer logit of each sequence.

    Sequences are independent, so one backward pass of the summed answer logits of a
    batch gives each sequence's own explanation. ``method``: an LRP rule set of the
    model's family ("mambalrp", "attnlrp", "cp-lrp"), "grad-x-input" or, on Mamba,
    "hidden-attention" (one sequence at a time).
    """
    import torch

    from lrp_llm.engines.hidden_attention import hidden_attention
    from lrp_llm.mechanism.gradients import batch_relevance, method_rules

    if method == "hidden-attention":
        rel = [
            hidden_attention(model, torch.from_numpy(row[None]), torch.tensor([row.shape[0] - 1]))[1][0].numpy()
            for row in ids
        ]
        return np.stack(rel)

    out = np.zeros(ids.shape, dtype=np.float64)

    with method_rules(model, method):
        for i in range(0, len(ids), batch):
            x = torch.from_numpy(ids[i : i + batch])
            answer = torch.from_numpy(answers[i : i + batch]).long()[:, None]

            def score(xs, answer=answer):
                logits = model(inputs_embeds=xs[0], use_cache=False, logits_to_keep=1).logits[:, -1]
                return logits.gather(1, answer)  # (batch, 1)

            with torch.no_grad():
                emb = model.get_input_embeddings()(x)
            (rel,) = batch_relevance(score, [emb], [-1], method=method)
            out[i : i + batch] = rel[:, 0].double().numpy()
    return out


def top1_hits(relevance: np.ndarray, data: Batch, *, context_only: bool = False) -> np.ndarray:
    """Whether each sequence's most relevant token is the far key or value.

    ``context_only`` leaves out the two tokens that are not context: the query key at the
    end (the question itself; under MambaLRP the output gates hand it a large share) and
    ``<s>`` at position 0 (the attention sink of transformers, relevant whatever follows).
    """
    r = relevance.copy()
    if context_only:
        r[:, -1] = -np.inf
        r[:, 0] = -np.inf
    top = r.argmax(1)
    return (top == data.value_pos) | (top == data.key_pos)

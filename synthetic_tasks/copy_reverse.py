"""Copy-or-reverse: a seq2seq task with a known source token behind every output token.

Source ``"copy c f a k"`` or ``"reverse c f a k"`` (distinct letters, 3 to 8 of them,
then ``</s>``); target the letters in the same or the reverse order, then ``</s>``.
Output token ``i`` (before ``</s>``) is a copy of source token ``1 + i`` (copy) or
``n - i`` (reverse), so an explanation can be scored by whether it points there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SPECIALS = ("<pad>", "</s>", "<unk>")
INSTRUCTIONS = ("copy", "reverse")
SYMBOLS = tuple("abcdefghijklmnopqrstuvwxyz")
VOCAB: tuple[str, ...] = SPECIALS + INSTRUCTIONS + SYMBOLS
MIN_LEN, MAX_LEN = 3, 8


@dataclass(frozen=True)
class Example:
    instruction: str
    symbols: tuple[str, ...]

    @property
    def source(self) -> str:
        return " ".join((self.instruction, *self.symbols))

    @property
    def target_symbols(self) -> tuple[str, ...]:
        return self.symbols if self.instruction == "copy" else tuple(reversed(self.symbols))

    @property
    def target(self) -> str:
        return " ".join(self.target_symbols)

    def aligned_source_position(self, i: int) -> int:
        """Index in the source token list (instruction first) of the letter output token ``i`` copies."""
        n = len(self.symbols)
        return 1 + i if self.instruction == "copy" else n - i


def examples(n: int, seed: int) -> list[Example]:
    """``n`` examples drawn with ``random.Random(seed)`` (training and held-out sets use different seeds)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(MIN_LEN, MAX_LEN)
        out.append(Example(rng.choice(INSTRUCTIONS), tuple(rng.sample(SYMBOLS, length))))
    return out


def make_tokenizer():
    """Word-level fast tokenizer over :data:`VOCAB` that appends ``</s>`` like T5's."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    table = {tok: i for i, tok in enumerate(VOCAB)}
    tk = Tokenizer(models.WordLevel(vocab=table, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", table["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def alignment_hits(model, tokenizer, items: list[Example], method: str = "attnlrp", batch: int = 100) -> list[bool]:
    """For each output letter: is the most relevant source token the letter it copies?

    The answer is forced to the correct target (so a wrong prediction does not change the
    question asked of the explanation); ``</s>`` is not scored.
    """
    from lrp_llm.engines.seq2seq import batch_seq2seq_relevance, seq2seq_relevance
    from lrp_llm.methods import get_method

    hits = []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        sources = [tokenizer(e.source)["input_ids"] for e in chunk]
        answers = [tokenizer(e.target, add_special_tokens=False)["input_ids"] for e in chunk]
        if get_method(method).batchable:
            source_rel = [r for r, _ in batch_seq2seq_relevance(model, sources, answers, method=method)]
        else:
            source_rel = [seq2seq_relevance(model, s, a, method=method)["source"] for s, a in zip(sources, answers)]
        for e, rel in zip(chunk, source_rel):
            top = rel.argmax(dim=1).tolist()
            hits.extend(top[i] == e.aligned_source_position(i) for i in range(len(e.symbols)))
    return hits


def alignment_accuracy(model, tokenizer, items: list[Example], method: str = "attnlrp") -> float:
    """Share of output letters whose top-1 source token is the aligned one."""
    hits = alignment_hits(model, tokenizer, items, method)
    return sum(hits) / len(hits)

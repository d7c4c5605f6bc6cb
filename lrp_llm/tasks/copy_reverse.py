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


def alignment_hits(model, tokenizer, example: Example, method: str = "attnlrp") -> list[bool]:
    """For each output letter: is the most relevant source token the letter it copies?

    The answer is forced to the correct target (so a wrong prediction does not change the
    question asked of the explanation); ``</s>`` is not scored.
    """
    from ..seq2seq import seq2seq_relevance

    src = tokenizer(example.source)["input_ids"]
    answer = tokenizer(example.target, add_special_tokens=False)["input_ids"]
    out = seq2seq_relevance(model, src, answer, method=method)
    top = out["source"].argmax(dim=1).tolist()
    return [top[i] == example.aligned_source_position(i) for i in range(len(example.symbols))]


def alignment_accuracy(model, tokenizer, items: list[Example], method: str = "attnlrp") -> float:
    """Share of output letters whose top-1 source token is the aligned one."""
    hits = [h for e in items for h in alignment_hits(model, tokenizer, e, method)]
    return sum(hits) / len(hits)

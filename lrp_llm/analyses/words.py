"""Word-level aggregation: merge sub-word tokens into words and pool their relevance.

Pure Python and numpy (no torch), so the TUI, the exporters and scripts can use it on a
loaded :class:`~lrp_llm.results.attribution.Attribution`. Tokens are the decoded strings the
tokenizer gives one by one (``" Norm"``, ``"andy"``). A token continues the previous word
when both meet on letters or digits with no space in between; spaces, punctuation and
special tokens (``<s>``, ``<|im_start|>``) start a new word. Summing is the default
pooling because it keeps the total relevance (conservation) unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

Span = tuple[int, int]  # [start, end) token indices

_SPECIAL = re.compile(r"^<\|?[^<>\s]*\|?>$|^\[[A-Z]+\]$")
# SentencePiece / byte-level BPE markers for "a space before this token".
_SPACE_MARKERS = ("▁", "Ġ", "Ċ")


def is_special(token: str) -> bool:
    """``<s>``, ``</s>``, ``<|im_start|>``, ``[CLS]``: never merged with a neighbour."""
    return bool(_SPECIAL.match(token))


def _joins(prev: str, token: str, wordpiece: bool) -> bool:
    """Does ``token`` continue the word that ``prev`` ends?

    With WordPiece tokens (``wordpiece``) only a ``##`` token continues a word; otherwise
    a token continues when it meets the previous one on letters or digits and does not
    carry a word-start marker (``▁``, ``Ġ``) or a leading space.
    """
    if not prev or not token or is_special(prev) or is_special(token):
        return False
    if wordpiece:
        return token.startswith("##")
    if token.startswith(_SPACE_MARKERS):
        return False
    return prev[-1].isalnum() and token[0].isalnum()


def word_spans(tokens: Sequence[str], breaks: Iterable[int] = ()) -> list[Span]:
    """Split ``tokens`` into words: a list of ``[start, end)`` spans covering every token.

    ``breaks`` are indices where a new word must start no matter what (e.g. where the
    answer starts, or the token being explained), so a word never straddles them.
    """
    forced = set(int(b) for b in breaks)
    wordpiece = any(t.startswith("##") and len(t) > 2 for t in tokens)
    spans: list[Span] = []
    start = 0
    for i in range(1, len(tokens)):
        if i in forced or not _joins(tokens[i - 1], tokens[i], wordpiece):
            spans.append((start, i))
            start = i
    if tokens:
        spans.append((start, len(tokens)))
    return spans


def word_texts(tokens: Sequence[str], spans: Sequence[Span]) -> list[str]:
    """The text of each word (its tokens joined; WordPiece ``##`` markers dropped)."""
    out = []
    for s, e in spans:
        parts = [tokens[s]] + [t[2:] if t.startswith("##") else t for t in tokens[s + 1 : e]]
        out.append("".join(parts))
    return out


def aggregate(values: Sequence[float] | np.ndarray, spans: Sequence[Span], how: str = "sum") -> np.ndarray:
    """Pool per-token ``values`` (shape (tokens,)) into per-word values (shape (words,)).

    ``how``: ``"sum"`` (keeps the total), ``"mean"``, ``"max"`` or ``"absmax"`` (the
    value of largest magnitude, sign kept). Spans reaching past ``len(values)`` are
    clipped; a span entirely past it gets 0.
    """
    v = np.asarray(values, dtype=np.float64)
    out = np.zeros(len(spans), dtype=np.float64)
    for k, (s, e) in enumerate(spans):
        part = v[s:e]
        if part.size == 0:
            continue
        if how == "sum":
            out[k] = part.sum()
        elif how == "mean":
            out[k] = part.mean()
        elif how == "max":
            out[k] = part.max()
        elif how == "absmax":
            out[k] = part[np.argmax(np.abs(part))]
        else:
            raise ValueError(f"unknown pooling '{how}'; choose sum, mean, max or absmax")
    return out


def word_of(spans: Sequence[Span], index: int) -> int:
    """Index of the word that holds token ``index``."""
    for k, (s, e) in enumerate(spans):
        if s <= index < e:
            return k
    raise IndexError(f"token {index} is not inside any span")


__all__ = ["Span", "aggregate", "is_special", "word_of", "word_spans", "word_texts"]

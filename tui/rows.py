"""What the views draw for one explained token: units (tokens or words) and their relevance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lrp_llm.results.attribution import Attribution, TargetRelevance


@dataclass(frozen=True)
class RelevanceRow:
    """The whole sequence (prompt + answer) as display units, for answer token ``t``.

    ``texts``: one string per unit (a token, or a word of merged sub-word tokens);
    ``values``: relevance of the units before the target (shape (target,));
    ``target``: the unit of the explained token; ``spans[k]``: token range of unit k.
    """

    texts: list[str]
    values: list[float]
    target: int
    spans: list[tuple[int, int]]
    explained: TargetRelevance

    def distance(self, unit: int) -> int:
        """Distance in tokens from the unit's last token to the explained token."""
        return self.explained.position - (self.spans[unit][1] - 1)

    def apart(self, template_positions) -> set[int]:
        """The units before the target made only of special or chat-template tokens (positions given)."""
        marked = set(template_positions or ())
        return {k for k, (a, b) in enumerate(self.spans[: self.target]) if all(i in marked for i in range(a, b))}


def relevance_row(a: Attribution, t: int, words: bool = False) -> RelevanceRow:
    """The display row of answer token ``t`` of ``a``, per token or (``words``) per word."""
    tr = a.targets[t]
    p = tr.position
    if not words:
        spans = [(i, i + 1) for i in range(len(a.tokens))]
        return RelevanceRow(list(a.tokens), [float(v) for v in tr.relevance], p, spans, tr)
    from lrp_llm.analyses.words import aggregate, word_of, word_spans, word_texts

    spans = word_spans(a.tokens, breaks=[a.prompt_length, p, p + 1])
    target = word_of(spans, p)
    values = aggregate(tr.relevance, spans[:target])
    return RelevanceRow(word_texts(a.tokens, spans), [float(v) for v in values], target, spans, tr)

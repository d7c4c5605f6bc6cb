"""Faithfulness of explanations: perturbation curves and ground-truth localisation.

Perturbation (Samek et al. 2017; as used in the AttnLRP paper, Achtibat et al. 2024):
remove the input tokens in order of relevance, most relevant first (MoRF) and least
relevant first (LeRF), and follow the explained logit (and its probability). A faithful
explanation makes the MoRF curve fall fast and the LeRF curve stay high; the area
between the two curves (ABPC = AUC(LeRF) - AUC(MoRF), x axis = fraction of removable
tokens removed, 0..1, y in logit units) summarises it: larger is better, a random
ordering scores about 0.

Removal strategies:

- ``zero``: the token's input embedding is set to zero (the AttnLRP paper's choice and
  the baseline of our integrated gradients);
- ``neutral``: the token is replaced by a neutral token (default: a single space);
- ``delete``: the token is cut out of the sequence (positions shift); when every token
  is removed, the input is the neutral token alone.

All perturbed inputs of one explanation go through the model as one batch (split in
chunks of ``batch_size``): one curve pair with ``steps`` points costs about
``2 * steps / batch_size`` forward passes. Deletion right-pads the shorter sequences;
under causal attention a pad after a token cannot change that token's logits, so no
attention mask is needed and the logit is read at each sequence's own last position.

Special tokens (chat markup, BOS) are never removed: they are the format of the input,
not its content.

Beyond ABPC (so that no one protocol's quirks decide), from the same removal sets and the
same batched forward passes:

- deletion AUC: area under the MoRF curve of the explained token's *probability* (lower =
  more faithful; Petsiuk et al. 2018);
- insertion AUC: start from every candidate token removed and restore them most relevant
  first; area under that probability curve (higher = more faithful). "Removed" is the run's
  strategy (a zero embedding, the neutral token, or cut out);
- ERASER comprehensiveness and sufficiency (DeYoung et al. 2020) as AOPC over the top-k %
  of the candidate tokens, k in :data:`ERASER_PERCENTS` = 1, 5, 10, 20, 50, the top k % being
  ``ceil(k * n / 100)`` of the ``n`` candidates in relevance order (at least one when
  ``n > 0``; ties keep position order):

      comprehensiveness = 1/5 * sum_k [p(x) - p(x without its top k %)]   (higher = better)
      sufficiency       = 1/5 * sum_k [p(x) - p(x with only its top k % kept)]  (lower = better)

  with ``p`` the explained token's probability and non-candidate (special) tokens always
  kept. The paper writes the average with ``1/(|B|+1)``; we divide by the number of bins.

Ground truth: for items whose evidence is known (the answer's span in the context, the
key-value pair of a synthetic recall task) :func:`localisation` gives the top-1 / top-k
hit and the share of positive relevance on the evidence (relevance mass accuracy,
Arras et al. 2022). The summary's top-1 hit rate is the pointing-game accuracy (Zhang et
al. 2018: hits / (hits + misses), a hit = the maximum of the explanation on the ground
truth); it also gives the top-5 hit rate. The synthetic long-range recall tasks (known key
and value) are scored the same way in ``benchmarks/recall_ground_truth.py``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lrp_llm.errors import Cancelled, InputError, ShouldCancel, check_cancel
from lrp_llm.methods import methods_for, parse_method
from lrp_llm.results.base import REQUIRED, Fields, JsonResult, run_meta

if TYPE_CHECKING:
    from lrp_llm.analyses.distributed import Group

STRATEGIES: tuple[str, ...] = ("zero", "neutral", "delete")
# which tokens a perturbation may remove: the content (what the user wrote, the answer so far) or all but special
REMOVABLE: tuple[str, ...] = ("content", "all")
DEFAULT_NEUTRAL = " "
# ERASER's top-k bins (percent of the candidate tokens) for comprehensiveness / sufficiency
ERASER_PERCENTS: tuple[int, ...] = (1, 5, 10, 20, 50)

# progress(stage, done, total): stage is "answering" (preparing items) or "explaining"
StageProgress = Callable[[str, int, int], None]


# ---------------------------------------------------------------------------- data
@dataclass
class EvalItem:
    """One evaluation item, as read from a JSONL line.

    QA items have ``context``, ``question`` and ``answer`` (the prompt is one chat turn
    ``context + "\\n" + question``); next-token items have ``text`` and ``answer`` (the
    expected continuation, e.g. ``" Paris"``). ``evidence`` is an optional substring of
    the context / text that holds the answer (default for QA: the answer itself where it
    occurs in the context).
    """

    id: str
    answer: str
    context: str | None = None
    question: str | None = None
    text: str | None = None
    evidence: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "qa" if self.question is not None else "next-token"

    @property
    def evidence_text(self) -> str | None:
        source = self.context if self.kind == "qa" else self.text
        for cand in (self.evidence, self.answer.strip() if self.kind == "qa" else None):
            if cand and source and cand.lower() in source.lower():
                return cand
        return None


_KNOWN_KEYS = {"id", "kind", "context", "question", "answer", "text", "evidence"}


def parse_item(obj: object, where: str) -> EvalItem:
    """Check one decoded JSON value; ``where`` names it in the error (e.g. "data.jsonl line 3")."""
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object with 'answer' and 'question'+'context' or 'text'")

    def text_field(name: str, required: bool = False) -> str | None:
        value = obj.get(name)
        if value is None:
            if required:
                raise InputError(f"{where}: missing '{name}'")
            return None
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{where}: '{name}' must be a non-empty string")
        return value

    answer = text_field("answer", required=True)
    question, context, text = text_field("question"), text_field("context"), text_field("text")
    if question is None and text is None:
        raise InputError(f"{where}: needs 'question' (with 'context') for QA or 'text' for next-token items")
    if question is not None and text is not None:
        raise InputError(f"{where}: give either 'question' (QA) or 'text' (next-token), not both")
    item_id = obj.get("id", "")
    meta = {k: v for k, v in obj.items() if k not in _KNOWN_KEYS}
    return EvalItem(
        id=str(item_id),
        answer=answer,  # type: ignore[arg-type]
        context=context,
        question=question,
        text=text,
        evidence=text_field("evidence"),
        meta=meta,
    )


def jsonl_lines(path: str | Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of every item line of a JSONL file (blank lines and ``#`` lines skipped).

    The one reader of JSONL files: lines end at "\\n" only (JSON strings may hold U+2028,
    U+0085 or a form feed raw, which ``str.splitlines`` would split on), and a UTF-8 byte
    order mark, which some editors write, is not part of the first line."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"no such data file: {p}; pass a .jsonl file with one item per line")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{p} is not UTF-8 text; pass a .jsonl file with one JSON object per line") from None
    lines = []
    for n, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append((n, line))
    return lines


def _check_unicode(value: object, where: str, field: str = "") -> None:
    """Refuse strings that are not valid Unicode (a lone surrogate such as "\\ud800" decodes from
    JSON but cannot be written out as UTF-8), naming the field, before any work is done."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = f"\\u{ord(value[exc.start]):04x}"
            raise InputError(
                f"{where}: {f'{field!r} ' if field else ''}holds a lone surrogate ({code}), which is not valid "
                "Unicode; fix that escape in the data"
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_unicode(key, where, field)
            _check_unicode(item, where, field or str(key))
    elif isinstance(value, list):
        for item in value:
            _check_unicode(item, where, field)


def load_items(path: str | Path, limit: int | None = None) -> list[EvalItem]:
    """Items of a JSONL file (one JSON object per line; blank lines and ``#`` lines skipped)."""
    p = Path(path).expanduser()
    items: list[EvalItem] = []
    for n, line in jsonl_lines(p):
        where = f"{p.name} line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where} is not valid JSON ({exc.msg}); each line must be one JSON object") from None
        _check_unicode(obj, where)
        item = parse_item(obj, where)
        if not item.id:
            item.id = f"{p.stem}-{n}"
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise InputError(f"{p} holds no items; each line must be a JSON object with 'answer' and a question or text")
    return items


# ------------------------------------------------------------------- preparation
@dataclass
class PreparedItem:
    """An item turned into token ids: ``input_ids[position]`` is the explained token.

    ``candidates``: positions the perturbations may remove (the content tokens before
    ``position``, or every non-special one: :func:`prepare_item`'s ``removable``); ``evidence``: positions of the evidence tokens (may be empty).
    ``answered``: the model's own greedy answer contains the expected answer (QA) or its
    top-1 next token is the expected one (next-token). When it does not, the expected
    answer's first token is forced right after the prompt and explained there.
    """

    item: EvalItem
    input_ids: list[int]
    position: int
    prompt_length: int
    answered: bool
    model_answer: str
    candidates: list[int]
    evidence: list[int]
    tokens: list[str]

    @property
    def target_token(self) -> str:
        return self.tokens[self.position]

    @property
    def distance(self) -> int | None:
        """Tokens from the last evidence token to the explained token (None without evidence)."""
        return self.position - max(self.evidence) if self.evidence else None


def prepare_item(
    model, tokenizer, item: EvalItem, *, max_new_tokens: int = 32, removable: str = "content"
) -> PreparedItem:
    """Token ids, explained position, answered flag and evidence positions of ``item``.

    ``removable``: which tokens the perturbations may remove (:data:`REMOVABLE`): "content" (default) the
    tokens the user wrote and the answer so far, "all" every token but the special ones (the chat template's
    role headers and default system prompt too)."""
    from lrp_llm.analyses.compare import removable_positions
    from lrp_llm.engines.generation import (
        build_prompt,
        context_length,
        generate_greedy,
        special_ids,
        stop_ids,
        token_strings,
    )

    if removable not in REMOVABLE:
        raise InputError(f"unknown choice of removable tokens '{removable}'; choose one of: {', '.join(REMOVABLE)}")
    if item.kind == "qa":
        prompt, template = build_prompt(tokenizer, item.question, item.context or None, chat=True)
    else:
        prompt, template = build_prompt(tokenizer, item.text, None, chat=False)
    limit = context_length(model)
    if limit is not None and len(prompt) + 1 > limit:
        raise InputError(f"item '{item.id}' has {len(prompt)} tokens; the model's context is {limit}")
    answer_ids = [int(i) for i in tokenizer(item.answer, add_special_tokens=False)["input_ids"]]
    if not answer_ids:
        raise InputError(f"item '{item.id}': the answer has no tokens")
    n_new = max_new_tokens if item.kind == "qa" else 1
    if limit is not None:
        n_new = max(1, min(n_new, limit - len(prompt)))
    # a QA answer is searched for in the greedy answer: decoding stops once it is found and settled
    settled = (lambda gen: _answer_settled(tokenizer, gen, item.answer)) if item.kind == "qa" else None
    generated = generate_greedy(model, prompt, n_new, stop_ids(model, tokenizer), stop_when=settled)
    generated_text = tokenizer.decode(generated, skip_special_tokens=True)
    answered = False
    if item.kind == "qa":
        j = _answer_token_index(tokenizer, generated, item.answer)
        if j is not None:
            answered = True
            ids = prompt + generated[: j + 1]
        else:
            ids = prompt + answer_ids[:1]
    else:
        answered = bool(generated) and generated[0] == answer_ids[0]
        ids = prompt + answer_ids[:1]
    position = len(ids) - 1
    candidates = removable_positions(
        ids, position, sorted(special_ids(tokenizer)), template if removable == "content" else ()
    )
    tokens = token_strings(tokenizer, ids)
    evidence = _evidence_positions(tokenizer, prompt, tokens, item)
    return PreparedItem(
        item=item,
        input_ids=[int(i) for i in ids],
        position=position,
        prompt_length=len(prompt),
        answered=answered,
        model_answer=generated_text.strip(),
        candidates=candidates,
        evidence=[p for p in evidence if p < position],
        tokens=tokens,
    )


def _answer_match(tokenizer, generated: Sequence[int], answer: str) -> tuple[re.Match | None, str]:
    """The first whole-word (case-insensitive) match of ``answer`` in the decoded ``generated``, and that text."""
    text = tokenizer.decode(list(generated), skip_special_tokens=True)
    return re.search(rf"(?<!\w){re.escape(answer.strip())}(?!\w)", text, flags=re.IGNORECASE), text


def _answer_settled(tokenizer, generated: Sequence[int], answer: str) -> bool:
    """The answer's first match is final: a character follows it, so more tokens cannot change it (generation
    may stop here)."""
    match, text = _answer_match(tokenizer, generated, answer)
    return match is not None and match.end() < len(text)


def _answer_token_index(tokenizer, generated: Sequence[int], answer: str) -> int | None:
    """Index of the generated token where ``answer`` starts as a whole word (case-insensitive), or None."""
    match, _ = _answer_match(tokenizer, generated, answer)
    if match is None:
        return None
    for j in range(len(generated)):
        if len(tokenizer.decode(list(generated[: j + 1]), skip_special_tokens=True)) > match.start():
            return j
    return None


def _token_spans(tokenizer, ids: Sequence[int], tokens: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of ``ids`` and each token's character span in it.

    Byte-level BPE tokens concatenate to the text; other tokenizers (word-level,
    SentencePiece) are measured by decoding growing prefixes.
    """
    joined, spans, pos = "".join(tokens), [], 0
    if joined == tokenizer.decode(list(ids), skip_special_tokens=False):
        for t in tokens:
            spans.append((pos, pos + len(t)))
            pos += len(t)
        return joined, spans
    for j in range(len(ids)):
        end = len(tokenizer.decode(list(ids[: j + 1]), skip_special_tokens=False))
        spans.append((pos, max(pos, end)))
        pos = max(pos, end)
    return tokenizer.decode(list(ids), skip_special_tokens=False), spans


def _evidence_positions(tokenizer, prompt: Sequence[int], tokens: Sequence[str], item: EvalItem) -> list[int]:
    """Positions of the prompt tokens that overlap the evidence inside the context / text."""
    evidence = item.evidence_text
    source = item.context if item.kind == "qa" else item.text
    if not evidence or not source:
        return []
    prompt_tokens = list(tokens[: len(prompt)])
    text, spans = _token_spans(tokenizer, prompt, prompt_tokens)
    base = text.find(source)
    if base < 0:  # the tokeniser does not round-trip the text: no ground truth for this item
        return []
    offset = source.lower().find(evidence.lower())
    lo, hi = base + offset, base + offset + len(evidence)
    return [i for i, (a, b) in enumerate(spans) if a < hi and b > lo and prompt_tokens[i].strip()]


# ---------------------------------------------------------------- perturbation
@dataclass
class Curves:
    """MoRF and LeRF curves of one explanation: ``fractions`` (steps+1,) of removable tokens
    removed, the explained logit and probability after each removal.

    ``insertion_prob``: the probability when only the ``fractions`` most relevant candidates
    are present (all others removed); ``comprehensiveness`` / ``sufficiency``: the ERASER
    probability drops, one per :data:`ERASER_PERCENTS` bin. None in files written before they
    existed."""

    fractions: np.ndarray
    morf_logit: np.ndarray
    lerf_logit: np.ndarray
    morf_prob: np.ndarray
    lerf_prob: np.ndarray
    insertion_prob: np.ndarray | None = None
    comprehensiveness_k: np.ndarray | None = None
    sufficiency_k: np.ndarray | None = None

    @property
    def abpc(self) -> float:
        """Area between the LeRF and MoRF logit curves (logit units; larger = more faithful)."""
        return auc(self.fractions, self.lerf_logit) - auc(self.fractions, self.morf_logit)

    @property
    def abpc_prob(self) -> float:
        return auc(self.fractions, self.lerf_prob) - auc(self.fractions, self.morf_prob)

    @property
    def morf_auc(self) -> float:
        return auc(self.fractions, self.morf_logit)

    @property
    def lerf_auc(self) -> float:
        return auc(self.fractions, self.lerf_logit)

    @property
    def deletion_auc(self) -> float:
        """Area under the MoRF probability curve (lower = more faithful)."""
        return auc(self.fractions, self.morf_prob)

    @property
    def insertion_auc(self) -> float:
        """Area under the insertion probability curve (higher = more faithful; NaN when not measured)."""
        return float("nan") if self.insertion_prob is None else auc(self.fractions, self.insertion_prob)

    @property
    def comprehensiveness(self) -> float:
        """ERASER comprehensiveness, AOPC over :data:`ERASER_PERCENTS` (higher = more faithful)."""
        return float("nan") if self.comprehensiveness_k is None else float(np.mean(self.comprehensiveness_k))

    @property
    def sufficiency(self) -> float:
        """ERASER sufficiency, AOPC over :data:`ERASER_PERCENTS` (lower = more faithful)."""
        return float("nan") if self.sufficiency_k is None else float(np.mean(self.sufficiency_k))

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [round(float(x), 6) for x in v] for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Fields | dict[str, Any]) -> Curves:
        """The curves from their JSON data: five lists of one length (the points of the curve), the
        insertion curve of that length and the two ERASER lists (one value per bin) when present."""
        f = Fields.of(d)
        fractions = f.numbers("fractions", dtype=np.float64)
        n = len(fractions)
        because = f"the curve has {n} fractions"
        bins = f"there is one per top-k bin ({', '.join(f'{k} %' for k in ERASER_PERCENTS)})"

        def optional(key: str, length: int, why: str) -> np.ndarray | None:
            if f.data.get(key) is None:
                return None
            return f.numbers(key, length=length, because=why, dtype=np.float64)

        return cls(
            fractions,
            *(
                f.numbers(k, length=n, because=because, dtype=np.float64)
                for k in ("morf_logit", "lerf_logit", "morf_prob", "lerf_prob")
            ),
            insertion_prob=optional("insertion_prob", n, because),
            comprehensiveness_k=optional("comprehensiveness_k", len(ERASER_PERCENTS), bins),
            sufficiency_k=optional("sufficiency_k", len(ERASER_PERCENTS), bins),
        )


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoidal area under ``y(x)``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def removal_counts(n: int, steps: int) -> list[int]:
    """How many tokens are removed at each point of a curve: 0..n in at most ``steps`` steps."""
    if n <= 0:
        return [0]
    steps = max(1, min(int(steps), n))
    return sorted({round(j * n / steps) for j in range(steps + 1)})


def top_share_count(n: int, percent: int) -> int:
    """How many of ``n`` candidates are the top ``percent`` %: ``ceil(percent * n / 100)`` (exact integers)."""
    return -(-int(percent) * int(n) // 100)


def removal_order(relevance: np.ndarray, candidates: Sequence[int], *, most_relevant_first: bool) -> list[int]:
    """``candidates`` sorted by relevance (ties keep position order)."""
    cand = np.asarray(list(candidates), dtype=np.int64)
    values = np.asarray(relevance, dtype=np.float64)[cand]
    order = np.argsort(-values if most_relevant_first else values, kind="stable")
    return [int(c) for c in cand[order]]


def neutral_token_id(tokenizer, text: str = DEFAULT_NEUTRAL) -> int:
    """Id of the single token ``text`` encodes to (the ``neutral`` strategy's replacement)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise InputError(
            f"the neutral text {text!r} is {len(ids)} tokens for this tokenizer; pick one that is one token"
        )
    return int(ids[0])


def perturbation_curves(
    model,
    input_ids: Sequence[int],
    position: int,
    relevance: np.ndarray,
    *,
    candidates: Sequence[int] | None = None,
    strategy: str = "zero",
    steps: int = 20,
    neutral_id: int | None = None,
    batch_size: int = 16,
    should_cancel: ShouldCancel | None = None,
) -> Curves:
    """MoRF / LeRF curves for the token ``input_ids[position]`` explained by ``relevance``, with
    the insertion curve and the ERASER comprehensiveness / sufficiency drops (module docstring).

    ``relevance`` has one value per token before ``position``; ``candidates`` (default:
    every position before ``position``) are the tokens that may be removed. Every removal
    set of every score is run once, all in the same batches.
    """
    return perturbation_curves_many(
        model,
        input_ids,
        position,
        {"": relevance},
        candidates=candidates,
        strategy=strategy,
        steps=steps,
        neutral_id=neutral_id,
        batch_size=batch_size,
        should_cancel=should_cancel,
    )[""]


@dataclass
class _CurvePlan:
    """Where each point of one explanation's curves lies in the shared list of removal sets."""

    counts: list[int]
    n: int
    morf: list[int]
    lerf: list[int]
    insertion: list[int]
    without_top: list[int]
    only_top: list[int]


def perturbation_curves_many(
    model,
    input_ids: Sequence[int],
    position: int,
    relevances: Mapping[str, np.ndarray],
    *,
    candidates: Sequence[int] | None = None,
    strategy: str = "zero",
    steps: int = 20,
    neutral_id: int | None = None,
    batch_size: int = 16,
    should_cancel: ShouldCancel | None = None,
) -> dict[str, Curves]:
    """:func:`perturbation_curves` of several explanations of the same token (one per key of
    ``relevances``, e.g. one per method): the removal sets of all of them are pooled, a set two
    explanations share (nothing removed, everything removed, equal top-k) is run once, and all
    go through the model in the same batches."""
    if strategy not in STRATEGIES:
        raise InputError(f"unknown removal strategy '{strategy}'; choose one of: {', '.join(STRATEGIES)}")
    if strategy == "neutral" and neutral_id is None:
        raise InputError("the 'neutral' strategy needs the id of a neutral token (neutral_id)")
    position = int(position)
    if not 1 <= position < len(input_ids):
        raise InputError("the explained position must lie inside the sequence, after its first token")
    cand = list(range(position)) if candidates is None else sorted({int(c) for c in candidates})
    if any(not 0 <= c < position for c in cand):
        raise InputError("candidate positions must lie before the explained token")
    sets: list[frozenset[int]] = []
    index: dict[frozenset[int], int] = {}

    def slot(removed: frozenset[int]) -> int:
        if removed not in index:
            index[removed] = len(sets)
            sets.append(removed)
        return index[removed]

    slot(frozenset())
    plans: dict[str, _CurvePlan] = {}
    everything = frozenset(cand)
    for key, relevance in relevances.items():
        relevance = np.asarray(relevance, dtype=np.float64)
        if relevance.shape[0] < position:
            raise InputError(
                f"relevance has {relevance.shape[0]} values; {position} are needed (one per earlier token)"
            )
        counts = removal_counts(len(cand), steps)
        morf = removal_order(relevance, cand, most_relevant_first=True)
        lerf = removal_order(relevance, cand, most_relevant_first=False)
        tops = [top_share_count(len(cand), p) for p in ERASER_PERCENTS]
        plans[key] = _CurvePlan(
            counts=counts,
            n=max(len(cand), 1),
            morf=[slot(frozenset(morf[:k])) for k in counts],
            lerf=[slot(frozenset(lerf[:k])) for k in counts],
            # insertion: the k most relevant present, the rest removed (without ties these are LeRF's sets)
            insertion=[slot(everything - frozenset(morf[:k])) for k in counts],
            without_top=[slot(frozenset(morf[:c])) for c in tops],
            only_top=[slot(everything - frozenset(morf[:c])) for c in tops],
        )
    logits, probs = _perturbed_scores(
        model,
        list(input_ids[:position]),
        int(input_ids[position]),
        sets,
        strategy,
        neutral_id,
        batch_size,
        should_cancel,
    )
    full = probs[0]
    return {
        key: Curves(
            fractions=np.asarray(p.counts, dtype=np.float64) / p.n,
            morf_logit=logits[p.morf],
            lerf_logit=logits[p.lerf],
            morf_prob=probs[p.morf],
            lerf_prob=probs[p.lerf],
            insertion_prob=probs[p.insertion],
            comprehensiveness_k=full - probs[p.without_top],
            sufficiency_k=full - probs[p.only_top],
        )
        for key, p in plans.items()
    }


def _perturbed_scores(
    model,
    prefix: list[int],
    target: int,
    removal_sets: Sequence[frozenset[int]],
    strategy: str,
    neutral_id: int | None,
    batch_size: int,
    should_cancel: ShouldCancel | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Logit and probability of ``target`` after ``prefix`` with each set of positions removed.

    The unperturbed prefix is run once (it scores the empty set). With the ``zero`` and
    ``neutral`` strategies an input with positions ``S`` removed equals the unperturbed one
    before ``min(S)``, and the model being causal, its keys and values there are the
    unperturbed run's: where the model keeps a plain key/value cache (every layer a
    ``DynamicLayer``: no sliding window, no recurrent state), each batch computes only the
    positions from its earliest removal on, attending to the cached keys/values of the
    positions before (sets sorted by their first removed position, batches packed to the
    tokens a full-length batch of ``batch_size`` would have). The cached path is checked
    against the unperturbed run first and not used where it differs.
    """
    import torch

    from lrp_llm.engines.generation import input_device

    device = input_device(model)
    embed = model.get_input_embeddings()
    length = len(prefix)
    out_logit = np.zeros(len(removal_sets))
    out_prob = np.zeros(len(removal_sets))

    def keep(rows_at: Sequence[int], rows: torch.Tensor) -> None:
        rows = rows.double()
        at = np.asarray(list(rows_at), dtype=np.int64)
        out_logit[at] = rows[:, target].cpu().numpy()
        out_prob[at] = torch.softmax(rows, dim=-1)[:, target].cpu().numpy()

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            base = torch.tensor([prefix], device=device)
            base_embeds = embed(base)
            out = model(inputs_embeds=base_embeds, use_cache=strategy != "delete", logits_to_keep=1)
            keep([i for i, s in enumerate(removal_sets) if not s], out.logits[:, -1])
            todo = [i for i, s in enumerate(removal_sets) if s]
            if not todo:
                return out_logit, out_prob
            neutral = None if strategy != "neutral" else embed(torch.tensor([int(neutral_id)], device=device))[0]  # type: ignore[arg-type]
            kv = None if strategy == "delete" else _plain_keys_values(getattr(out, "past_key_values", None))
            if kv is not None:
                start = min(min(removal_sets[i]) for i in todo)
                check = _suffix_logits(model, base_embeds[:, start:], kv, start)
                want = out.logits[0, -1]
                tol = max(1e-3, 50 * torch.finfo(want.dtype).eps) * max(1.0, float(want.abs().max()))
                if not float((check[0] - want).abs().max()) <= tol:
                    kv = None
            del out
            if kv is not None:
                for start, chunk in _pack_by_start(removal_sets, todo, length, batch_size):
                    check_cancel(should_cancel)
                    rows = base_embeds[:, start:].repeat(len(chunk), 1, 1)
                    for b, i in enumerate(chunk):
                        at = [p - start for p in removal_sets[i]]
                        rows[b, at] = 0.0 if neutral is None else neutral
                    keep(chunk, _suffix_logits(model, rows, kv, start))
                return out_logit, out_prob
            for first in range(0, len(todo), max(1, batch_size)):
                check_cancel(should_cancel)
                chunk_at = todo[first : first + max(1, batch_size)]
                chunk = [removal_sets[i] for i in chunk_at]
                if strategy == "delete":
                    kept = [[t for i, t in enumerate(prefix) if i not in removed] for removed in chunk]
                    # nothing left: the model still needs one input token, the neutral one
                    empty = [int(neutral_id) if neutral_id is not None else prefix[0]]
                    kept = [k or empty for k in kept]
                    last = [len(k) - 1 for k in kept]
                    width = max(len(k) for k in kept)
                    pad = prefix[0]  # any token: right padding cannot affect earlier positions
                    ids = torch.tensor([k + [pad] * (width - len(k)) for k in kept], device=device)
                    embeds = embed(ids)
                    keep_at = torch.tensor(sorted(set(last)), device=device)
                    logits = model(inputs_embeds=embeds, use_cache=False, logits_to_keep=keep_at).logits
                    col = {int(p): j for j, p in enumerate(keep_at.tolist())}
                    rows = logits[torch.arange(len(chunk)), torch.tensor([col[p] for p in last])]
                else:
                    embeds = base_embeds.repeat(len(chunk), 1, 1)
                    for b, removed in enumerate(chunk):
                        embeds[b, sorted(removed)] = 0.0 if neutral is None else neutral
                    rows = model(inputs_embeds=embeds, use_cache=False, logits_to_keep=1).logits[:, -1]
                keep(chunk_at, rows)
    finally:
        model.train(was_training)
    return out_logit, out_prob


def _plain_keys_values(cache) -> list[tuple[Any, Any]] | None:
    """The keys and values of every layer of ``cache`` when it is a plain cache (every layer a
    ``DynamicLayer`` holding keys and values of every position), else None."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer
    except ImportError:  # pragma: no cover - transformers without these classes
        return None
    if type(cache) is not DynamicCache or not cache.layers:
        return None
    if any(type(layer) is not DynamicLayer or getattr(layer, "keys", None) is None for layer in cache.layers):
        return None
    return [(layer.keys, layer.values) for layer in cache.layers]


def _suffix_logits(model, rows, kv: list[tuple[Any, Any]], start: int):
    """Last-position logits of ``rows`` (batch, positions ``start``.., d) after the cached keys/values of
    the positions before ``start``."""
    from transformers.cache_utils import DynamicCache

    n = rows.shape[0]
    cache = DynamicCache(
        ddp_cache_data=[(k[:, :, :start].expand(n, -1, -1, -1), v[:, :, :start].expand(n, -1, -1, -1)) for k, v in kv]
    )
    return model(inputs_embeds=rows, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]


def _pack_by_start(
    removal_sets: Sequence[frozenset[int]], todo: Sequence[int], length: int, batch_size: int
) -> list[tuple[int, list[int]]]:
    """Batches ``(start, set indices)``: sets by first removed position, latest first; a batch computes the
    positions from its earliest set's first removal on, and holds at most the tokens of ``batch_size``
    full-length rows."""
    budget = max(1, batch_size) * length
    out: list[tuple[int, list[int]]] = []
    chunk: list[int] = []
    start = length
    for i in sorted(todo, key=lambda i: -min(removal_sets[i])):
        first = min(removal_sets[i])
        if chunk and (len(chunk) + 1) * (length - first) > budget:
            out.append((start, chunk))
            chunk = []
        chunk.append(i)
        start = first
    if chunk:
        out.append((start, chunk))
    return out


# ---------------------------------------------------------------- localisation
def localisation(
    relevance: np.ndarray,
    true_positions: Sequence[int],
    *,
    candidates: Sequence[int] | None = None,
    k: int = 5,
) -> dict[str, float]:
    """How well ``relevance`` finds the ground-truth tokens ``true_positions``.

    ``top1``: the most relevant candidate is a true token (1.0 / 0.0); ``topk``: one of
    the ``k`` most relevant is; ``mass``: share of the positive relevance (over the
    candidates) that lies on the true tokens (0 when no relevance is positive);
    ``rank``: best rank (0 = first) of a true token.
    """
    rel = np.asarray(relevance, dtype=np.float64)
    cand = list(range(len(rel))) if candidates is None else [int(c) for c in candidates]
    true = {int(t) for t in true_positions} & set(cand)
    if not true:
        raise ValueError("no ground-truth position lies among the candidates")
    order = removal_order(rel, cand, most_relevant_first=True)
    rank = min(order.index(t) for t in true)
    pos = np.clip(rel[cand], 0.0, None)
    total = float(pos.sum())
    on_true = float(sum(max(rel[t], 0.0) for t in true))
    return {
        "top1": float(rank == 0),
        "topk": float(rank < k),
        "mass": on_true / total if total > 0 else 0.0,
        "rank": float(rank),
    }


def localisation_scores(
    relevances: Sequence[np.ndarray], true_positions: Sequence[Sequence[int]], *, k: int = 5
) -> dict[str, float]:
    """Means of :func:`localisation` over many explanations (``top1`` = top-1 hit rate, ...)."""
    rows = [localisation(r, t, k=k) for r, t in zip(relevances, true_positions)]
    if not rows:
        raise ValueError("no explanations to score")
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


# ------------------------------------------------------------------- statistics
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def t_quantile_975(df: int) -> float:
    """0.975 quantile of Student's t with ``df`` degrees of freedom (table below 10,
    Cornish-Fisher expansion above; error < 1e-3)."""
    if df < 1:
        return float("nan")
    if df in _T975:
        return _T975[df]
    z = 1.959963984540054
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of its 95 % confidence interval (Student t; NaN for < 2 values)."""
    x = np.asarray(list(values), dtype=np.float64)
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), t_quantile_975(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))


# -------------------------------------------------------------------- evaluation
def check_methods(model, methods: Sequence[str]) -> list[tuple[str, str, int | None]]:
    """``(label, method, ig_steps)`` per method spec; a one-line error for a name the model's
    family has no rules for (e.g. attnlrp on Mamba) before any work is done."""
    from lrp_llm.archs import get_arch

    parsed = [(m.strip(), *parse_method(m)) for m in methods]
    if not parsed:
        raise InputError("no methods to evaluate; pass e.g. --methods attnlrp,grad-x-input,random")
    if len({label for label, _, _ in parsed}) != len(parsed):
        raise InputError("a method is listed twice")
    spec = get_arch(model)
    if spec.kind != "causal-lm":
        raise InputError(f"evaluate works on causal language models; this is a {spec.family} model ({spec.kind})")
    offered = methods_for(model)
    for label, method, _ in parsed:
        if method not in offered:
            raise InputError(
                f"method '{label}' is not available for {spec.family} models; use one of: {', '.join(offered)}"
            )
    return parsed


@dataclass
class ItemResult:
    item_id: str
    method: str
    answered: bool
    position: int
    n_tokens: int
    seconds: float
    curves: Curves
    localisation: dict[str, float] | None = None
    distance: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "item": self.item_id,
            "method": self.method,
            "answered": self.answered,
            "position": self.position,
            "n_tokens": self.n_tokens,
            "seconds": round(self.seconds, 6),
            "abpc": self.curves.abpc,
            "abpc_prob": self.curves.abpc_prob,
            "morf_auc": self.curves.morf_auc,
            "lerf_auc": self.curves.lerf_auc,
            "deletion_auc": self.curves.deletion_auc,
            "insertion_auc": self.curves.insertion_auc,
            "comprehensiveness": self.curves.comprehensiveness,
            "sufficiency": self.curves.sufficiency,
            "localisation": self.localisation,
            "distance": self.distance,
            "curves": self.curves.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Fields | dict[str, Any], methods: Sequence[str] | None = None) -> ItemResult:
        """The inverse of :meth:`to_dict` (the scores are recomputed from the curves); the method
        one of ``methods`` (the evaluation's) when given."""
        f = Fields.of(d)
        n_tokens = f.integer("n_tokens", low=1)
        position = f.integer("position", low=0)
        if position >= n_tokens:
            f.fail("position", f"is {position} but the item has {n_tokens} tokens")
        loc = f.obj("localisation") if f.data.get("localisation") is not None else None
        return cls(
            item_id=f.text("item"),
            method=f.text("method", choices=methods),
            answered=f.flag("answered"),
            position=position,
            n_tokens=n_tokens,
            seconds=f.number("seconds", REQUIRED),
            curves=Curves.from_dict(f.obj("curves")),
            localisation=None if loc is None else {k: loc.number(k) for k in loc.data},
            distance=f.optional_integer("distance", low=0),
        )


@dataclass
class MethodSummary:
    method: str
    n: int
    abpc: float
    abpc_ci: float
    abpc_prob: float
    morf_auc: float
    lerf_auc: float
    seconds: float
    top1: float | None = None  # the pointing-game accuracy
    mass: float | None = None
    n_localised: int = 0
    # probability scores beyond ABPC (None: none of the method's items has them, an old file)
    deletion_auc: float | None = None
    insertion_auc: float | None = None
    comprehensiveness: float | None = None
    sufficiency: float | None = None
    top5: float | None = None


@dataclass
class Evaluation(JsonResult):
    """Results of :func:`evaluate`: one :class:`ItemResult` per item and method."""

    SCHEMA = "xai-tui/evaluation/1"

    model: str
    methods: list[str]
    strategy: str
    steps: int
    results: list[ItemResult]
    n_items: int
    n_answered: int
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> list[MethodSummary]:
        out = []
        for m in self.methods:
            rows = [r for r in self.results if r.method == m]
            if not rows:
                continue
            abpc, ci = mean_ci([r.curves.abpc for r in rows])
            loc = [r.localisation for r in rows if r.localisation is not None]
            top5 = [x["topk"] for x in loc if "topk" in x]
            inserted = [r.curves for r in rows if r.curves.insertion_prob is not None]
            eraser = [r.curves for r in rows if r.curves.comprehensiveness_k is not None]
            eraser_s = [r.curves for r in rows if r.curves.sufficiency_k is not None]
            out.append(
                MethodSummary(
                    method=m,
                    n=len(rows),
                    abpc=abpc,
                    abpc_ci=ci,
                    abpc_prob=float(np.mean([r.curves.abpc_prob for r in rows])),
                    morf_auc=float(np.mean([r.curves.morf_auc for r in rows])),
                    lerf_auc=float(np.mean([r.curves.lerf_auc for r in rows])),
                    seconds=float(np.mean([r.seconds for r in rows])),
                    top1=float(np.mean([x["top1"] for x in loc])) if loc else None,
                    mass=float(np.mean([x["mass"] for x in loc])) if loc else None,
                    n_localised=len(loc),
                    deletion_auc=float(np.mean([r.curves.deletion_auc for r in rows])),
                    insertion_auc=float(np.mean([c.insertion_auc for c in inserted])) if inserted else None,
                    comprehensiveness=float(np.mean([c.comprehensiveness for c in eraser])) if eraser else None,
                    sufficiency=float(np.mean([c.sufficiency for c in eraser_s])) if eraser_s else None,
                    top5=float(np.mean(top5)) if top5 else None,
                )
            )
        return out

    def mean_curves(self, method: str) -> dict[str, np.ndarray] | None:
        """Mean MoRF / LeRF logit curves of ``method``, resampled on 21 points (0..1)."""
        rows = [r for r in self.results if r.method == method]
        if not rows:
            return None
        grid = np.linspace(0.0, 1.0, 21)
        morf = np.mean([np.interp(grid, r.curves.fractions, r.curves.morf_logit) for r in rows], axis=0)
        lerf = np.mean([np.interp(grid, r.curves.fractions, r.curves.lerf_logit) for r in rows], axis=0)
        return {"fractions": grid, "morf": morf, "lerf": lerf}

    def _fields(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "methods": list(self.methods),
            "strategy": self.strategy,
            "steps": self.steps,
            "n_items": self.n_items,
            "n_answered": self.n_answered,
            "meta": dict(self.meta),
            "summary": [asdict(s) for s in self.summary()],
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def _from_fields(cls, d: Fields) -> Evaluation:
        # "summary" is left out: summary() recomputes it from the results
        methods = d.texts("methods")
        for i, m in enumerate(methods):
            try:
                parse_method(m)
            except InputError:
                d.fail(f"methods[{i}]", f"is {m!r}, not a method of xai-tui")
        n_items = d.integer("n_items", low=0)
        return cls(
            model=d.text("model"),
            methods=methods,
            strategy=d.text("strategy", choices=STRATEGIES),
            steps=d.integer("steps", low=1),
            results=[ItemResult.from_dict(r, methods) for r in d.objects("results")],
            n_items=n_items,
            n_answered=d.integer("n_answered", low=0, high=n_items),
            meta=d.mapping("meta"),
        )


def explain_prepared(
    model, prepared: PreparedItem, method: str, *, ig_steps: int = 32, seed: int = 0, should_cancel=None
) -> tuple[np.ndarray, float]:
    """Relevance (position,) of the earlier tokens for the explained token, and the seconds it took."""
    from lrp_llm.engines.causal_lm import relevance

    t0 = time.perf_counter()
    out = relevance(
        model,
        prepared.input_ids,
        [prepared.position],
        method=method,
        steps=ig_steps,
        seed=seed,
        should_cancel=should_cancel,
    )
    seconds = time.perf_counter() - t0
    rel = out["relevance"][0, : prepared.position].double().numpy()  # type: ignore[index]
    return rel, seconds


def evaluate(
    model,
    tokenizer,
    items: Sequence[EvalItem],
    methods: Sequence[str],
    *,
    strategy: str = "zero",
    steps: int = 20,
    ig_steps: int = 32,
    neutral: str = DEFAULT_NEUTRAL,
    batch_size: int = 16,
    only_answered: bool = False,
    max_new_tokens: int = 32,
    removable: str = "content",
    model_name: str | None = None,
    progress: StageProgress | None = None,
    should_cancel: ShouldCancel | None = None,
    shard: Group | None = None,
) -> Evaluation:
    """Explain every item with every method and score each explanation's perturbation curves.

    ``methods``: names from :func:`lrp_llm.methods.method_names` ("causal-lm"), integrated gradients with
    its step count as ``"integrated-gradients:N"`` (else ``ig_steps``). With
    ``only_answered`` the items the model does not answer are left out. ``removable``: the tokens the
    perturbations may remove (:func:`prepare_item`). All methods' removal sets of one item are scored
    together (:func:`perturbation_curves_many`).

    ``shard``: this process's part of a sharded run (:mod:`lrp_llm.analyses.distributed`): the items
    ``i % world == rank``, each computed as one process would (the random baseline seeded with the
    item's index among all evaluated items; with ``only_answered`` the ranks share their answered
    flags through ``shard.all_gather``); ``meta["shard"]`` records the part for
    :func:`merge_evaluations`.
    """
    rank, world = (shard.rank, shard.world) if shard is not None else (0, 1)
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"shard {rank} of {world} does not exist")
    if strategy not in STRATEGIES:
        raise InputError(f"unknown removal strategy '{strategy}'; choose one of: {', '.join(STRATEGIES)}")
    if removable not in REMOVABLE:
        raise InputError(f"unknown choice of removable tokens '{removable}'; choose one of: {', '.join(REMOVABLE)}")
    if steps < 1:
        raise InputError("the number of perturbation steps must be at least 1")
    parsed = check_methods(model, methods)
    neutral_id = neutral_token_id(tokenizer, neutral) if strategy in ("neutral", "delete") else None

    def cancel_check() -> None:
        if should_cancel is not None and should_cancel():
            raise Cancelled()

    t_start = time.perf_counter()
    mine = range(rank, len(items), world)  # this shard's items (all of them in one process)
    prepared: dict[int, PreparedItem] = {}
    for k, i in enumerate(mine):
        cancel_check()
        prepared[i] = prepare_item(model, tokenizer, items[i], max_new_tokens=max_new_tokens, removable=removable)
        if progress is not None:
            progress("answering", k + 1, len(mine))
    n_answered = sum(p.answered for p in prepared.values())
    answered = {i: p.answered for i, p in prepared.items()}
    if only_answered and world > 1:
        assert shard is not None
        answered = {i: flag for part in shard.all_gather(answered) for i, flag in part.items()}
    # an item's index among the evaluated items of the whole run: the seed of its random baseline
    evaluated = [i for i in range(len(items)) if not only_answered or answered[i]]
    global_index = {i: k for k, i in enumerate(evaluated)}
    chosen = [(i, prepared[i]) for i in mine if i in global_index]
    results: list[ItemResult] = []
    total = len(chosen) * len(parsed)
    done = 0
    if progress is not None:
        progress("explaining", 0, total)
    for i, prep in chosen:
        index = global_index[i]
        explained: dict[str, tuple[np.ndarray, float]] = {}
        for j, (label, method, m_steps) in enumerate(parsed):
            cancel_check()
            explained[label] = explain_prepared(
                model, prep, method, ig_steps=m_steps or ig_steps, seed=index, should_cancel=should_cancel
            )
            if progress is not None and j + 1 < len(parsed):  # the item's last unit ends with its scoring
                progress("explaining", done + j + 1, total)
        # every method's removal sets of this item in one pool: shared sets run once
        curves = perturbation_curves_many(
            model,
            prep.input_ids,
            prep.position,
            {label: rel for label, (rel, _) in explained.items()},
            candidates=prep.candidates,
            strategy=strategy,
            steps=steps,
            neutral_id=neutral_id,
            batch_size=batch_size,
            should_cancel=should_cancel,
        )
        for label, (rel, seconds) in explained.items():
            loc = None
            if prep.evidence and set(prep.evidence) & set(prep.candidates):
                loc = localisation(rel, prep.evidence, candidates=prep.candidates)
            results.append(
                ItemResult(
                    item_id=prep.item.id,
                    method=label,
                    answered=prep.answered,
                    position=prep.position,
                    n_tokens=len(prep.input_ids),
                    seconds=seconds,
                    curves=curves[label],
                    localisation=loc,
                    distance=prep.distance,
                )
            )
        done += len(parsed)
        if progress is not None:
            progress("explaining", done, total)
    from lrp_llm.engines.causal_lm import input_device

    meta = {
        # several methods, each with its own IG steps: they are in ``methods`` and "ig_steps", not in method/steps
        **run_meta("evaluation", dtype=next(model.parameters()).dtype, device=input_device(model)),
        "ig_steps": ig_steps,
        "neutral": neutral if strategy == "neutral" else None,
        "only_answered": only_answered,
        "removable": removable,
        # wall time of the whole run (answering, explaining, scoring) and per evaluated item
        "seconds": round(time.perf_counter() - t_start, 3),
        "seconds_per_item": round((time.perf_counter() - t_start) / max(1, len(chosen)), 3),
    }
    if shard is not None:
        meta["shard"] = {"rank": rank, "world": world, "items": [i for i, _ in chosen]}
    return Evaluation(
        model=model_name or str(getattr(model, "name_or_path", "") or type(model).__name__),
        methods=[label for label, _, _ in parsed],
        strategy=strategy,
        steps=steps,
        results=results,
        n_items=len(mine),
        n_answered=n_answered,
        meta=meta,
    )


def merge_evaluations(shards: Sequence[Evaluation]) -> Evaluation:
    """The evaluation of the whole run from the parts of a sharded one (:func:`evaluate` with
    ``shard``, one per rank, any order): the results in item order, then method order, as one process
    gives them; ``n_items`` / ``n_answered`` summed; meta from rank 0 with the wall time of the
    slowest part."""
    if not shards:
        raise InputError("no evaluation shards to merge")
    parts = []
    for k, ev in enumerate(shards):
        info = ev.meta.get("shard")
        if not isinstance(info, dict) or not {"rank", "world", "items"} <= info.keys():
            raise InputError(f"evaluation {k} is not a shard of a sharded run (no meta 'shard')")
        if len(ev.results) != len(info["items"]) * len(ev.methods):
            raise InputError(f"shard {info['rank']} holds {len(ev.results)} results, not one per item and method")
        parts.append((info, ev))
    first = min(parts, key=lambda p: p[0]["rank"])[1]
    world = first.meta["shard"]["world"]
    if sorted(info["rank"] for info, _ in parts) != list(range(world)) or any(
        info["world"] != world for info, _ in parts
    ):
        raise InputError(f"the shards' ranks are not 0..{world - 1} of one run of {world} processes")
    setting = (first.model, first.methods, first.strategy, first.steps)
    for info, ev in parts:
        if (ev.model, ev.methods, ev.strategy, ev.steps) != setting:
            raise InputError(f"shard {info['rank']} was run with other settings than shard 0")
    per_item: dict[int, list[ItemResult]] = {}
    n = len(first.methods)
    for info, ev in parts:
        for j, i in enumerate(info["items"]):
            if i in per_item:
                raise InputError(f"item {i} is in two shards")
            per_item[i] = ev.results[j * n : (j + 1) * n]
    seconds = max(float(ev.meta.get("seconds") or 0.0) for _, ev in parts)
    meta = {k: v for k, v in first.meta.items() if k != "shard"}
    meta["seconds"] = round(seconds, 3)
    meta["seconds_per_item"] = round(seconds / max(1, len(per_item)), 3)
    return Evaluation(
        model=first.model,
        methods=list(first.methods),
        strategy=first.strategy,
        steps=first.steps,
        results=[r for i in sorted(per_item) for r in per_item[i]],
        n_items=sum(ev.n_items for _, ev in parts),
        n_answered=sum(ev.n_answered for _, ev in parts),
        meta=meta,
    )


__all__ = [
    "ERASER_PERCENTS",
    "REMOVABLE",
    "STRATEGIES",
    "Curves",
    "EvalItem",
    "Evaluation",
    "ItemResult",
    "MethodSummary",
    "PreparedItem",
    "auc",
    "check_methods",
    "evaluate",
    "explain_prepared",
    "load_items",
    "localisation",
    "localisation_scores",
    "mean_ci",
    "merge_evaluations",
    "parse_item",
    "perturbation_curves",
    "perturbation_curves_many",
    "prepare_item",
    "removal_counts",
    "removal_order",
    "top_share_count",
]

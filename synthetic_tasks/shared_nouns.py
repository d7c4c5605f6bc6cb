"""Shared nouns: a sentence-similarity task whose matching tokens are known.

A sentence is 2 to 4 distinct nouns mixed with filler words, e.g.
``"the red cat sees no dog near a tree"``. A noun right after ``no`` is negated and does
not count. The target similarity of two sentences is the cosine of their sets of
counted nouns, ``|A & B| / sqrt(|A| |B|)``: it is made *only* of pairs of the same
counted noun, one in each sentence. So the true interaction matrix is
``T[i, j] = 1`` where token ``i`` of ``a`` and token ``j`` of ``b`` are the same counted
noun, else 0 (special tokens, fillers, negated nouns). An encoder trained on this
(``models/synthetic/train_bert_shared_nouns.py``) must read the context to leave
negated nouns out, so a method that only matches identical words is not enough.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
NEGATION = "no"
NOUNS = tuple(
    "cat dog tree car house river bird boat apple chair lamp book horse train cloud stone "
    "flower bottle window garden bridge coat shoe table".split()
)
FILLERS = tuple("the a big small red old new sees near with under and has runs by quickly".split())
VOCAB: tuple[str, ...] = SPECIALS + (NEGATION,) + NOUNS + FILLERS
MIN_NOUNS, MAX_NOUNS = 2, 4
MIN_FILLERS, MAX_FILLERS = 2, 5
P_NEGATED = 0.25


@dataclass(frozen=True)
class Sentence:
    words: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def counted(self, k: int) -> bool:
        """Is word ``k`` a noun that counts (not right after ``no``)?"""
        return self.words[k] in NOUNS and not (k > 0 and self.words[k - 1] == NEGATION)

    @property
    def nouns(self) -> frozenset[str]:
        return frozenset(w for k, w in enumerate(self.words) if self.counted(k))


def similarity(a: Sentence, b: Sentence) -> float:
    """Cosine of the two sets of counted nouns."""
    na, nb = a.nouns, b.nouns
    return len(na & nb) / math.sqrt(len(na) * len(nb)) if na and nb else 0.0


def true_interactions(a: Sentence, b: Sentence) -> list[list[float]]:
    """(n_a + 2, n_b + 2) matrix over the tokenised sentences (``[CLS]`` first, ``[SEP]`` last)."""
    rows = [[0.0] * (len(b.words) + 2) for _ in range(len(a.words) + 2)]
    for i, wa in enumerate(a.words):
        if not a.counted(i):
            continue
        for j, wb in enumerate(b.words):
            if wb == wa and b.counted(j):
                rows[1 + i][1 + j] = 1.0
    return rows


def _sentence(rng: random.Random, nouns: list[str], decoys: list[str]) -> Sentence:
    """Counted ``nouns``, up to two negated nouns (often ``decoys``: nouns the other sentence counts), fillers."""
    chunks: list[list[str]] = [[n] for n in nouns]
    others = [n for n in NOUNS if n not in nouns]
    decoys = [n for n in decoys if n not in nouns]
    negated: list[str] = []
    for _ in range(2):
        if rng.random() < P_NEGATED * 2:
            pool = decoys if decoys and rng.random() < 0.5 else others
            pick = rng.choice(pool)
            if pick not in negated:
                negated.append(pick)
    chunks += [[NEGATION, n] for n in negated]  # "no" stays right before its noun
    chunks += [[w] for w in rng.choices(FILLERS, k=rng.randint(MIN_FILLERS, MAX_FILLERS))]
    rng.shuffle(chunks)
    return Sentence(tuple(w for c in chunks for w in c))


def pairs(n: int, seed: int) -> list[tuple[Sentence, Sentence]]:
    """``n`` sentence pairs sharing 0 to 3 counted nouns (training and held-out sets use different seeds)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        size_a = rng.randint(MIN_NOUNS, MAX_NOUNS)
        size_b = rng.randint(MIN_NOUNS, MAX_NOUNS)
        shared = rng.randint(0, min(size_a, size_b, 3))
        common = rng.sample(NOUNS, shared)
        rest = [x for x in NOUNS if x not in common]
        extra = rng.sample(rest, size_a - shared + size_b - shared)
        nouns_a = common + extra[: size_a - shared]
        nouns_b = common + extra[size_a - shared :]
        out.append((_sentence(rng, nouns_a, nouns_b), _sentence(rng, nouns_b, nouns_a)))
    return out


def sharing_pairs(n: int, seed: int) -> list[tuple[Sentence, Sentence]]:
    """``n`` pairs that share at least one counted noun (so the true matrix is not zero)."""
    out = []
    for a, b in pairs(8 * n, seed):
        if a.nouns & b.nouns:
            out.append((a, b))
            if len(out) == n:
                return out
    raise ValueError("not enough pairs with shared nouns; use another seed")


def score(explainer, sentence_pairs: list[tuple[Sentence, Sentence]]) -> dict[str, float]:
    """Agreement of ``explainer``'s interactions (a :class:`lrp_llm.analyses.bilrp.SimilarityExplainer`) with the truth.

    ``cosine``: mean over pairs of the cosine similarity between the explained and the
    true matrix (flattened, special tokens included); ``cosine_p10`` its 10th percentile;
    ``negated_share``: mean share of ``sum |R|`` on pairs of the same noun negated in at
    least one text (the model must ignore those); ``conservation``: median sum R / cosine;
    ``model_error``: mean |model cosine - true cosine|.
    """
    import numpy as np

    from lrp_llm.analyses.bilrp import matrix_cosine

    scores, negated, conservation, error = [], [], [], []
    for a, b in sentence_pairs:
        e = explainer.explain(a.text, b.text)
        true = np.asarray(true_interactions(a, b))
        scores.append(matrix_cosine(e.interactions, true))
        conservation.append(e.conservation)
        error.append(abs(e.similarity - similarity(a, b)))
        mask = np.zeros_like(true, dtype=bool)
        for i, wa in enumerate(a.words):
            for j, wb in enumerate(b.words):
                if wa == wb and wa in NOUNS and not (a.counted(i) and b.counted(j)):
                    mask[1 + i, 1 + j] = True
        total = float(np.abs(e.interactions).sum())
        negated.append(float(np.abs(e.interactions[mask]).sum()) / total if total else 0.0)
    return {
        "cosine": float(np.mean(scores)),
        "cosine_p10": float(np.percentile(scores, 10)),
        "negated_share": float(np.mean(negated)),
        "conservation": float(np.median(conservation)),
        "model_error": float(np.mean(error)),
    }


def make_tokenizer():
    """Word-level BERT-style fast tokenizer over :data:`VOCAB`: ``[CLS] words [SEP]``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    table = {tok: i for i, tok in enumerate(VOCAB)}
    tk = Tokenizer(models.WordLevel(vocab=table, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", table["[CLS]"]), ("[SEP]", table["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )

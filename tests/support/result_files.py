"""Valid results of every kind, built by hand (no model), and a hypothesis strategy of random
corruptions of their JSON: the fuzz cases of `xai-tui open` and the app."""

from __future__ import annotations

import copy

import numpy as np
from hypothesis import strategies as st

from lrp_llm.analyses.evaluate import Curves, Evaluation, ItemResult
from lrp_llm.results.attribution import Attribution, TargetRelevance
from lrp_llm.results.image import ImageAttribution
from lrp_llm.results.similarity import SimilarityExplanation
from patching.result import Grid, PatchingResult

NAN = float("nan")


def causal() -> Attribution:
    return Attribution(
        model="m",
        method="attnlrp",
        tokens=["<s>", " Hello", " world", "!"],
        input_ids=[1, 5, 6, 7],
        prompt_length=2,
        targets=[
            TargetRelevance(2, " world", 6, 3.0, 0.5, np.array([0.5, 2.0])),
            TargetRelevance(3, "!", 7, 1.0, 0.25, np.array([0.1, -0.2, NAN])),
        ],
        seconds=0.1,
    )


def seq2seq() -> Attribution:
    t = TargetRelevance(1, "c", 3, 2.0, 0.5, [0.25], source_relevance=[0.5, -1.0])
    return Attribution("t5", "cp-lrp", ["<pad>", "c"], [0, 3], 1, [t], 0.5, source_tokens=["a", "b"], source_ids=[1, 2])


def similarity() -> SimilarityExplanation:
    return SimilarityExplanation(
        model="enc", method="bilrp", rules="cp-lrp", pooling="mean", mode="cosine", text_a="x y", text_b="z",
        tokens_a=["x", "y"], tokens_b=["z"], interactions=[[0.5], [-0.25]], similarity=0.3, dot=1.0,
        interaction_sum=0.25, seconds=0.1,
    )  # fmt: skip


def patching() -> PatchingResult:
    grids = [
        Grid(
            kind,
            method,
            "denoise",
            metric,
            ["layer.0.resid", "layer.1.resid"],
            ["a", "b"],
            [[0.5, NAN], [1, 0]],
            [0, 1],
        )
        for kind in ("resid", "attn")
        for method in ("sweep", "relp")
        for metric in ("logit_diff", "recovery")
    ]
    return PatchingResult(
        model="m", clean_tokens=["a", "b"], corrupted_tokens=["c", "b"], clean_ids=[1, 2], corrupted_ids=[3, 2],
        answer=" x", wrong=" y", answer_id=5, wrong_id=6,
        baseline={"clean": {"logit_diff": 2.0}, "corrupted": {"logit_diff": -1.0}}, grids=grids,
    )  # fmt: skip


def image() -> ImageAttribution:
    return ImageAttribution(
        model="vit", method="cp-lrp", label="cat", label_id=1, logit=2.0, probability=0.5,
        image=np.zeros((4, 4, 3), dtype=np.uint8), pixel_relevance=np.ones((4, 4)), patch_relevance=np.ones((2, 2)),
        patch_size=(2, 2), top_labels=[("cat", 0.5)],
    )  # fmt: skip


def evaluation() -> Evaluation:
    curves = Curves(*(np.array([0.0, 0.5, 1.0]) for _ in range(5)))
    return Evaluation("m", ["attnlrp"], "zero", 2, [ItemResult("a", "attnlrp", True, 4, 5, 0.25, curves)], 1, 1)


# the kinds of result the app shows, and values that do not belong anywhere in them (strings
# with markup or control characters are the text-sanitising fuzz's, not this one's)
VALID = {"causal": causal, "seq2seq": seq2seq, "similarity": similarity, "patching": patching}
ODD_VALUES = [None, "x", True, [], {}, 1.5, -1, 0, 10**6, 1e308, NAN, float("inf"), [[]]]


def _paths(value, prefix=()):
    """Every (path, value) in a JSON tree, the root included."""
    yield prefix, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@st.composite
def corrupted(draw) -> tuple[str, dict]:
    """(kind, JSON data): a valid result of ``kind`` with 1-3 random changes (a key dropped, a
    value replaced by one of ODD_VALUES, a list truncated or extended, a number shifted)."""
    kind = draw(st.sampled_from(sorted(VALID)))
    data = VALID[kind]().to_dict()
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(data) if p and p != ("schema",)]
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        value = parent[path[-1]]
        action = draw(st.sampled_from(["drop", "replace", "truncate", "extend", "shift"]))
        if action == "drop":
            del parent[path[-1]]
        elif action == "truncate" and isinstance(value, list) and value:
            del value[draw(st.integers(0, len(value) - 1)) :]
        elif action == "extend" and isinstance(value, list):
            value.extend(copy.deepcopy(value[-1:]) or [0.5])
        elif action == "shift" and isinstance(value, (int, float)) and not isinstance(value, bool):
            parent[path[-1]] = value + draw(st.sampled_from([-100, -2, -1, 1, 2, 100]))
        else:
            parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(ODD_VALUES)))
    return kind, data

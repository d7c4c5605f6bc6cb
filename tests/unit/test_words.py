"""Word-level aggregation (lrp_llm.analyses.words): spans, texts, pooling."""

from __future__ import annotations

import numpy as np
import pytest

from lrp_llm.analyses.words import aggregate, is_special, word_of, word_spans, word_texts


def test_subword_tokens_merge_into_words():
    tokens = [
        "<|im_start|>",
        "user",
        "\n",
        "The",
        " Norm",
        "ans",
        " were",
        " in",
        " 1",
        "9",
        "8",
        "7",
        ".",
        "<|im_end|>",
    ]
    spans = word_spans(tokens)
    assert word_texts(tokens, spans) == [
        "<|im_start|>",
        "user",
        "\n",
        "The",
        " Normans",
        " were",
        " in",
        " 1987",
        ".",
        "<|im_end|>",
    ]
    # spans cover every token exactly once, in order
    assert [i for s, e in spans for i in range(s, e)] == list(range(len(tokens)))


def test_markers_and_wordpiece():
    assert word_texts(["▁Nor", "man", "▁people"], word_spans(["▁Nor", "man", "▁people"])) == ["▁Norman", "▁people"]
    assert word_texts(["nor", "##man", "##dy", "is"], word_spans(["nor", "##man", "##dy", "is"])) == ["normandy", "is"]
    assert is_special("<s>") and is_special("[CLS]") and not is_special("<b")


def test_forced_breaks_split_words():
    tokens = ["Par", "is", "ian"]
    assert word_spans(tokens) == [(0, 3)]
    assert word_spans(tokens, breaks=[2]) == [(0, 2), (2, 3)]
    assert word_spans([]) == []


def test_sum_keeps_total_and_other_poolings_by_hand():
    rng = np.random.default_rng(0)
    values = rng.normal(size=9)
    spans = [(0, 2), (2, 3), (3, 7), (7, 9)]
    words = aggregate(values, spans)
    assert words.sum() == pytest.approx(values.sum(), abs=1e-12)
    assert words[2] == pytest.approx(values[3] + values[4] + values[5] + values[6])
    assert aggregate(values, spans, "mean")[0] == pytest.approx((values[0] + values[1]) / 2)
    assert aggregate(values, spans, "max")[2] == pytest.approx(max(values[3:7]))
    absmax = aggregate([0.1, -0.5, 0.3], [(0, 3)], "absmax")
    assert absmax[0] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="unknown pooling"):
        aggregate(values, spans, "median")


def test_values_shorter_than_tokens_are_clipped():
    # a target's relevance covers only the tokens before it
    assert aggregate([1.0, 2.0, 3.0], [(0, 2), (2, 4), (4, 5)]).tolist() == [3.0, 3.0, 0.0]
    assert word_of([(0, 2), (2, 4)], 3) == 1
    with pytest.raises(IndexError):
        word_of([(0, 2)], 5)

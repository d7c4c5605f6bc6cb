"""Method comparison numbers against hand computations; its result file and HTML section."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lrp_llm.analyses.compare import (
    faithfulness,
    pair_scores,
    ranks,
    removable_positions,
    spearman,
    top_k,
    top_k_overlap,
)
from lrp_llm.errors import InputError
from lrp_llm.results.comparison import MethodComparison


def hand_spearman(a: list[float], b: list[float]) -> float:
    """1 - 6 sum d^2 / (n (n^2 - 1)) with ranks counted by hand (no ties)."""
    n = len(a)
    rank_a = [sorted(a).index(x) + 1 for x in a]
    rank_b = [sorted(b).index(x) + 1 for x in b]
    d2 = sum((x - y) ** 2 for x, y in zip(rank_a, rank_b))
    return 1 - 6 * d2 / (n * (n * n - 1))


def test_spearman_equals_the_rank_difference_formula():
    a = [0.3, -1.2, 2.5, 0.0, 0.7, -0.4]
    b = [0.1, -0.5, 1.0, 0.2, -2.0, 3.0]
    assert spearman(np.array(a), np.array(b)) == pytest.approx(hand_spearman(a, b))
    # ranks: a -> 4 1 6 3 5 2, b -> 3 2 5 4 1 6; sum d^2 = 1+1+1+1+16+16 = 36; 1 - 216/210
    assert hand_spearman(a, b) == pytest.approx(1 - 6 * 36 / 210)
    assert spearman(np.array(a), np.array(a) * 10 + 3) == pytest.approx(1.0)
    assert spearman(np.array(a), -np.array(a)) == pytest.approx(-1.0)


def test_ties_share_their_mean_rank():
    assert ranks(np.array([5.0, 1.0, 5.0, 3.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    # with ties: Pearson correlation of the mean ranks, by hand
    a, b = np.array([1.0, 2.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])
    ra, rb = np.array([1.0, 2.5, 2.5, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    assert spearman(a, b) == pytest.approx((ra @ rb) / np.sqrt((ra @ ra) * (rb @ rb)))
    assert np.isnan(spearman(np.ones(4), b))  # constant ranks correlate with nothing


def test_top_k_overlap_on_a_constructed_case():
    a = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 0.0, 0.0, -1.0])
    b = np.array([9.0, 0.0, 7.0, 0.0, 5.0, 8.0, 6.5, -1.0])
    assert top_k(a, 5) == [0, 1, 2, 3, 4]
    assert top_k(b, 5) == [0, 5, 2, 6, 4]
    assert top_k_overlap(a, b, 5) == pytest.approx(3 / 5)  # {0, 2, 4} in common
    assert top_k_overlap(a, a, 5) == 1.0
    assert top_k_overlap(a[:3], b[:3], 2) == pytest.approx(1 / 2)  # {0, 1} and {0, 2}
    assert top_k_overlap(a[:3], b[:3], 5) == 1.0  # k is capped at the 3 inputs: all of them
    with pytest.raises(InputError):
        top_k_overlap(a, b[:4])


def test_pair_scores_cover_every_pair_in_order():
    rel = {"attnlrp": np.arange(6.0), "cp-lrp": np.arange(6.0)[::-1], "saliency": np.array([0, 1, 2, 5, 4, 3.0])}
    pairs = pair_scores(rel)
    assert [(p.a, p.b) for p in pairs] == [("attnlrp", "cp-lrp"), ("attnlrp", "saliency"), ("cp-lrp", "saliency")]
    assert pairs[0].spearman == pytest.approx(-1.0) and pairs[0].overlap == pytest.approx(4 / 5)  # {1, 2, 3, 4}
    assert pairs[0].k == 5 and pair_scores({"a": np.arange(3.0), "b": np.ones(3)})[0].k == 3
    assert pairs[1].spearman == pytest.approx(hand_spearman(list(rel["attnlrp"]), list(rel["saliency"])))


def test_removable_positions_skip_special_tokens():
    assert removable_positions([1, 7, 8, 3, 9, 4], 5, special_ids=[1, 3]) == [1, 2, 4]


@pytest.fixture(scope="module")
def tiny():
    from tests.support.models import tiny_causal_lm

    return tiny_causal_lm("llama", vocab=64, seed=0)


def test_faithfulness_is_the_evaluation_curves_of_each_method(tiny):
    from lrp_llm.analyses.evaluate import perturbation_curves

    ids = [3, 17, 5, 22, 9, 41, 12, 30]
    rng = np.random.default_rng(0)
    rel = {"attnlrp": rng.normal(size=7), "cp-lrp": rng.normal(size=7)}
    seen = []
    curves = faithfulness(
        tiny, ids, 7, rel, candidates=[1, 2, 3, 4, 5, 6], steps=3, progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(1, 2), (2, 2)]
    for m, r in rel.items():
        ref = perturbation_curves(tiny, ids, 7, r, candidates=[1, 2, 3, 4, 5, 6], steps=3)
        np.testing.assert_allclose(curves[m].morf_logit, ref.morf_logit)
        assert curves[m].abpc == pytest.approx(ref.abpc)


def comparison(curves=None) -> MethodComparison:
    tokens = ["<s>", "Q", "\x1b[31m", " is", " A", "!"]
    return MethodComparison(
        model="tiny",
        tokens=tokens,
        input_ids=[1, 5, 6, 7, 8, 9],
        prompt_length=4,
        target=1,
        position=5,
        methods=["attnlrp", "integrated-gradients"],
        relevance=[np.array([0.0, 1.0, -2.0, 0.5, 3.0]), np.array([0.1, 0.9, 0.3, -0.2, 2.0])],
        curves=curves or {},
    )


def test_comparison_round_trips_and_refuses_a_broken_file(tiny):
    from lrp_llm.analyses.evaluate import perturbation_curves

    c = comparison({"attnlrp": perturbation_curves(tiny, [1, 5, 6, 7, 8, 9], 5, np.arange(5.0), steps=2)})
    d = json.loads(c.to_json())
    assert d["pairs"][0]["spearman"] == pytest.approx(spearman(c.relevance[0], c.relevance[1]))
    assert d["faithfulness"]["attnlrp"]["abpc"] == pytest.approx(c.abpc("attnlrp"))
    back = MethodComparison.from_json(c.to_json())
    assert back.methods == c.methods and back.token == "!"
    np.testing.assert_allclose(back.relevance[1], c.relevance[1])
    assert back.abpc("attnlrp") == pytest.approx(c.abpc("attnlrp"), abs=1e-5)
    assert back.abpc("integrated-gradients") is None
    d["relevance"][1] = d["relevance"][1][:3]
    with pytest.raises(InputError, match=r"relevance\[1\] has 3 values"):
        MethodComparison.from_dict(d)
    d = json.loads(c.to_json())
    d["target"] = 0
    with pytest.raises(InputError, match="target"):
        MethodComparison.from_dict(d)


def test_html_section_shows_the_numbers_and_escapes_tokens(tiny):
    from lrp_llm.analyses.evaluate import perturbation_curves
    from lrp_llm.export.report import comparison_report

    c = comparison({"attnlrp": perturbation_curves(tiny, [1, 5, 6, 7, 8, 9], 5, np.arange(5.0), steps=2)})
    html = comparison_report(c)
    assert f"{c.pairs[0].spearman:.3f}" in html and f"{round(c.pairs[0].overlap * 5)}/5</td>" in html
    assert f"ABPC {c.abpc('attnlrp'):.3f}" in html
    assert "AttnLRP" in html and "Integrated gradients" in html
    assert "\x1b" not in html

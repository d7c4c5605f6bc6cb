"""Long-range statistics (hand-computed vectors), the explain JSON key, and ``xai-tui longrange``."""

import json

import numpy as np
import pytest

from lrp_llm.analyses.longrange import (
    distances,
    far_tokens,
    farthest_relevant,
    log_edges,
    relevance_by_distance,
    share_beyond,
    summarize,
)
from lrp_llm.results.attribution import Attribution, TargetRelevance


def test_distances_and_edges():
    assert distances(4).tolist() == [4, 3, 2, 1]
    assert log_edges(1) == [1, 2]
    assert log_edges(4) == [1, 2, 4, 8]
    assert log_edges(7) == [1, 2, 4, 8]
    assert log_edges(8) == [1, 2, 4, 8, 16]


def test_relevance_by_distance_by_hand():
    # 6 tokens before the target: distances 6, 5, 4, 3, 2, 1
    r = np.array([1.0, -2.0, 0.5, 0.25, -1.0, 3.0])
    bins = relevance_by_distance(r)
    assert bins.edges == [1, 2, 4, 8]
    assert bins.counts.tolist() == [1, 2, 3]  # {1}, {2, 3}, {4, 5, 6}
    assert bins.signed.tolist() == [3.0, -0.75, -0.5]
    assert bins.absolute.tolist() == [3.0, 1.25, 3.5]
    assert np.allclose(bins.share, np.array([3.0, 1.25, 3.5]) / 7.75)
    assert relevance_by_distance(np.zeros(3)).share.tolist() == [0.0, 0.0]


def test_share_beyond_farthest_and_far_tokens_by_hand():
    r = np.zeros(1200)
    r[0] = -2.0  # distance 1200
    r[150] = 1.0  # distance 1050
    r[1000] = 4.0  # distance 200
    r[-1] = 8.0  # distance 1
    total = 15.0
    assert share_beyond(r, 1000) == pytest.approx(3.0 / total)
    assert share_beyond(r, 100) == pytest.approx(7.0 / total)
    assert share_beyond(r, 5000) == 0.0
    assert farthest_relevant(r, 0.2) == 0  # |-2| >= 0.2 * 8
    assert farthest_relevant(r, 0.3) == 1000  # 4 >= 2.4, and 2 < 2.4
    assert farthest_relevant(np.zeros(5)) is None
    tokens = [f"t{i}" for i in range(1200)]
    far = far_tokens(r, tokens, min_distance=100, k=2)
    assert [(f.index, f.distance, f.relevance, f.text) for f in far] == [
        (1000, 200, 4.0, "t1000"),
        (0, 1200, -2.0, "t0"),
    ]
    assert far_tokens(r, None, min_distance=2000) == []


def test_summary_dict_is_json_ready():
    r = np.array([0.0, 2.0, -1.0, 1.0])
    s = summarize(r, ["a", "b", "c", "d"], thresholds=(1, 2), k=2, far_distance=1)
    d = json.loads(json.dumps(s.to_dict()))
    assert [(b["from"], b["to"], b["tokens"]) for b in d["bins"]] == [(1, 2, 1), (2, 4, 2), (4, 8, 1)]
    assert d["share_beyond"] == {"1": 0.75, "2": 0.5}
    assert d["farthest"] == {"index": 1, "distance": 3, "fraction_of_max": 0.1}
    assert [t["text"] for t in d["far_tokens"]["tokens"]] == ["b", "c"]


def test_explain_json_has_longrange_per_target_and_keeps_old_keys():
    targets = [
        TargetRelevance(position=3, token="x", id=5, logit=2.0, probability=0.5, relevance=np.array([0.5, 1.0, 0.5])),
        TargetRelevance(position=4, token="y", id=6, logit=1.0, probability=0.2, relevance=np.array([1, 0, 0, 0.0])),
    ]
    a = Attribution("m", "mambalrp", ["a", "b", "c", "x", "y"], [1, 2, 3, 5, 6], 3, targets, 0.1)
    d = json.loads(a.to_json())
    for key in ("position", "token", "id", "logit", "probability", "relevance", "relevance_sum", "conservation"):
        assert key in d["targets"][0]
    assert d["targets"][1]["longrange"]["farthest"]["distance"] == 4
    assert d["targets"][0]["longrange"]["share_beyond"] == {"100": 0.0, "1000": 0.0}
    assert Attribution.from_json(a.to_json()).to_dict() == a.to_dict()

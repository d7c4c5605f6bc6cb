"""Faithfulness beyond ABPC: insertion / deletion AUC, ERASER comprehensiveness / sufficiency,
top-5 and the pointing game, checked against hand computations on a linear toy scorer."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from rich.console import Console

from lrp_llm.analyses.evaluate import (
    ERASER_PERCENTS,
    Curves,
    Evaluation,
    ItemResult,
    perturbation_curves,
    removal_counts,
    removal_order,
    top_share_count,
)
from lrp_llm.errors import InputError
from lrp_llm.export import evaluation_section
from tests.support.models import random_ids, tiny_causal_lm

TARGET = 1  # the explained token's id; the scorer's logits have two entries, 0 and 1


class LinearScorer(torch.nn.Module):
    """logit(TARGET) = bias + sum of the present tokens' weights, logit(0) = 0 (float64).

    Each token's input embedding is its weight (one dimension), so a zero embedding removes
    the token exactly: p(TARGET) = sigmoid(bias + sum over present tokens)."""

    def __init__(self, weights: np.ndarray, bias: float) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(len(weights), 1, dtype=torch.float64)
        with torch.no_grad():
            self.embed.weight[:, 0] = torch.as_tensor(weights, dtype=torch.float64)
        self.bias = float(bias)
        self.rows = 0  # perturbed inputs seen (forward rows)

    def get_input_embeddings(self):
        return self.embed

    def forward(self, inputs_embeds, use_cache=False, logits_to_keep=1):
        self.rows += inputs_embeds.shape[0]
        z = self.bias + inputs_embeds.sum(dim=(1, 2))
        logits = torch.stack([torch.zeros_like(z), z], dim=-1)[:, None, :]
        return SimpleNamespace(logits=logits)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _trapezoid(ys: list[float], xs: list[float]) -> float:
    return sum((xs[j + 1] - xs[j]) * (ys[j] + ys[j + 1]) / 2 for j in range(len(xs) - 1))


def _setup(n_tokens: int, seed: int):
    """A scorer, the token ids (position 0 = a kept special token, the last = TARGET) and each
    position's weight (the exact effect of removing it on the logit)."""
    rng = np.random.default_rng(seed)
    vocab = n_tokens + 2
    weights = rng.normal(scale=0.4, size=vocab)
    ids = [int(i) for i in rng.permutation(np.arange(2, vocab))[: n_tokens - 1]] + [TARGET]
    return LinearScorer(weights, bias=0.3), ids, [float(weights[t]) for t in ids[:-1]]


def _p(ids_weight: list[float], present: set[int]) -> float:
    return _sigmoid(0.3 + sum(w for i, w in enumerate(ids_weight) if i in present))


@pytest.mark.parametrize("steps", [9, 4])
def test_insertion_and_deletion_auc_by_hand(steps):
    model, ids, w = _setup(11, seed=1)
    position = len(ids) - 1
    cand = list(range(1, position))  # position 0 (a special token) is never removed
    rel = np.random.default_rng(2).normal(size=position)
    c = perturbation_curves(model, ids, position, rel, candidates=cand, steps=steps)
    order = sorted(cand, key=lambda i: -rel[i])  # most relevant first (no ties)
    n = len(cand)
    counts = removal_counts(n, steps)
    xs = [k / n for k in counts]
    everything = set(range(position))
    deletion = [_p(w, everything - set(order[:k])) for k in counts]
    insertion = [_p(w, {0} | set(order[:k])) for k in counts]
    assert c.morf_prob.tolist() == pytest.approx(deletion, abs=1e-12)
    assert c.insertion_prob.tolist() == pytest.approx(insertion, abs=1e-12)
    assert c.deletion_auc == pytest.approx(_trapezoid(deletion, xs), abs=1e-12)
    assert c.insertion_auc == pytest.approx(_trapezoid(insertion, xs), abs=1e-12)
    # the ends: nothing restored = everything removed (LeRF's last point), all restored = the full input
    assert c.insertion_prob[0] == pytest.approx(c.lerf_prob[-1], abs=1e-15)
    assert c.insertion_prob[-1] == pytest.approx(c.morf_prob[0], abs=1e-15)


def test_exact_relevance_wins_every_protocol():
    """On the linear scorer the weights are the exact effect of each token: ordering by them
    must beat ordering by their negation on every score."""
    model, ids, w = _setup(16, seed=3)
    position = len(ids) - 1
    good = perturbation_curves(model, ids, position, np.array(w), steps=15)
    bad = perturbation_curves(model, ids, position, -np.array(w), steps=15)
    assert good.insertion_auc > bad.insertion_auc and good.deletion_auc < bad.deletion_auc
    assert good.comprehensiveness > bad.comprehensiveness and good.sufficiency < bad.sufficiency


def test_top_share_count_rounds_up_in_exact_integers():
    assert [top_share_count(30, k) for k in ERASER_PERCENTS] == [1, 2, 3, 6, 15]
    assert [top_share_count(100, k) for k in ERASER_PERCENTS] == [1, 5, 10, 20, 50]
    assert [top_share_count(1, k) for k in ERASER_PERCENTS] == [1, 1, 1, 1, 1]
    assert [top_share_count(7, k) for k in ERASER_PERCENTS] == [1, 1, 1, 2, 4]
    assert top_share_count(0, 50) == 0
    # every n up to 1000: the smallest count that is at least k % of n
    for k in ERASER_PERCENTS:
        for n in range(1, 1001):
            c = top_share_count(n, k)
            assert c * 100 >= k * n and (c - 1) * 100 < k * n


@pytest.mark.parametrize("n_tokens", [31, 8])
def test_comprehensiveness_and_sufficiency_by_hand(n_tokens):
    model, ids, w = _setup(n_tokens, seed=4)
    position = len(ids) - 1
    cand = list(range(1, position))
    rel = np.random.default_rng(5).normal(size=position)
    c = perturbation_curves(model, ids, position, rel, candidates=cand, steps=10)
    order = sorted(cand, key=lambda i: -rel[i])
    n = len(cand)
    everything = set(range(position))
    full = _p(w, everything)
    comp, suff = [], []
    for k in (1, 5, 10, 20, 50):
        top = set(order[: math.ceil(k * n / 100 - 1e-9)])
        comp.append(full - _p(w, everything - top))
        suff.append(full - _p(w, {0} | top))  # the special token stays
    assert c.comprehensiveness_k.tolist() == pytest.approx(comp, abs=1e-12)
    assert c.sufficiency_k.tolist() == pytest.approx(suff, abs=1e-12)
    assert c.comprehensiveness == pytest.approx(sum(comp) / 5, abs=1e-12)
    assert c.sufficiency == pytest.approx(sum(suff) / 5, abs=1e-12)


def test_no_candidates_scores_nothing():
    model, ids, w = _setup(6, seed=6)
    position = len(ids) - 1
    c = perturbation_curves(model, ids, position, np.zeros(position), candidates=[], steps=10)
    full = _p(w, set(range(position)))
    assert c.fractions.tolist() == [0.0] and c.insertion_prob.tolist() == pytest.approx([full], abs=1e-12)
    assert c.insertion_auc == 0.0 and c.deletion_auc == 0.0
    assert c.comprehensiveness_k.tolist() == [0.0] * 5 and c.sufficiency_k.tolist() == [0.0] * 5
    assert model.rows == 1  # one forward: the unperturbed input


def test_ties_restore_in_position_order():
    """Equal relevance: MoRF removes the earliest first, so insertion restores the earliest first
    (it is not LeRF reversed, which would keep the latest)."""
    model, ids, w = _setup(6, seed=7)
    position = len(ids) - 1
    c = perturbation_curves(model, ids, position, np.ones(position), steps=position)
    want = [_p(w, set(range(k))) for k in range(position + 1)]
    assert c.insertion_prob.tolist() == pytest.approx(want, abs=1e-12)
    assert c.lerf_prob[position - 1] == pytest.approx(_p(w, {position - 1}), abs=1e-12)


def test_new_scores_share_the_batches():
    """One point per token and no ties: every insertion and ERASER set is a MoRF or LeRF set,
    so the new scores cost no forward row; with 10 steps they add at most 10 rows."""
    model, ids, w = _setup(21, seed=8)
    position = len(ids) - 1
    rel = np.random.default_rng(9).normal(size=position)
    perturbation_curves(model, ids, position, rel, steps=position, batch_size=64)
    assert model.rows == 2 * position  # MoRF's position + 1 sets, LeRF's position - 1 others
    model.rows = 0
    perturbation_curves(model, ids, position, rel, steps=10, batch_size=64)
    assert 2 * 11 - 2 <= model.rows <= 2 * 11 - 2 + 10


@pytest.mark.parametrize("strategy", ["zero", "neutral", "delete"])
def test_tiny_llama_matches_one_forward_per_input(strategy):
    """A real model and every removal strategy: each new point equals an unbatched forward."""
    model = tiny_causal_lm("llama", vocab=61, dtype=torch.float64)
    ids = random_ids(14, seed=3)
    position = 13
    cand = list(range(1, position))
    rel = np.random.default_rng(0).normal(size=position)
    c = perturbation_curves(
        model, ids, position, rel, candidates=cand, strategy=strategy, steps=4, neutral_id=7, batch_size=5
    )
    order = removal_order(rel, cand, most_relevant_first=True)

    def prob(removed: set[int]) -> float:
        with torch.no_grad():
            if strategy == "delete":
                kept = [t for i, t in enumerate(ids[:position]) if i not in removed]
                logits = model(input_ids=torch.tensor([kept])).logits[0, -1]
            else:
                x = torch.tensor([[7 if (i in removed and strategy == "neutral") else t for i, t in enumerate(ids)]])
                e = model.get_input_embeddings()(x[:, :position])
                if strategy == "zero":
                    e[0, sorted(removed)] = 0.0
                logits = model(inputs_embeds=e).logits[0, -1]
        return float(torch.softmax(logits.double(), -1)[ids[position]])

    full = prob(set())
    for j, k in enumerate(removal_counts(len(cand), 4)):
        assert c.insertion_prob[j] == pytest.approx(prob(set(cand) - set(order[:k])), abs=1e-12)
    for j, pct in enumerate(ERASER_PERCENTS):
        top = set(order[: top_share_count(len(cand), pct)])
        assert c.comprehensiveness_k[j] == pytest.approx(full - prob(top), abs=1e-12)
        assert c.sufficiency_k[j] == pytest.approx(full - prob(set(cand) - top), abs=1e-12)


# ------------------------------------------------------------------ results, JSON, table
def _curves(offset: float) -> Curves:
    f = np.array([0.0, 0.5, 1.0])
    return Curves(
        f,
        np.array([2.0, 1.0, 0.0]),
        np.array([2.0, 2.0, 1.0]),
        np.array([0.8, 0.4, 0.2]),
        np.array([0.8, 0.7, 0.2]),
        insertion_prob=np.array([0.2, 0.6 + offset, 0.8]),
        comprehensiveness_k=np.array([0.1, 0.2, 0.3, 0.4, 0.5]) + offset,
        sufficiency_k=np.array([0.5, 0.4, 0.3, 0.2, 0.1]),
    )


def _evaluation() -> Evaluation:
    loc = {"top1": 0.0, "topk": 1.0, "mass": 0.25, "rank": 2.0}
    return Evaluation(
        model="m", methods=["attnlrp", "random"], strategy="zero", steps=2, n_items=2, n_answered=2,
        results=[
            ItemResult("a", "attnlrp", True, 4, 5, 0.25, _curves(0.0), localisation={**loc, "top1": 1.0}),
            ItemResult("b", "attnlrp", True, 4, 5, 0.25, _curves(0.1), localisation=loc),
            ItemResult("a", "random", True, 4, 5, 0.01, Curves(*(np.array([0.0, 0.5, 1.0]) for _ in range(5)))),
        ],
        meta={},
    )  # fmt: skip


def test_summary_and_json_round_trip(tmp_path):
    ev = _evaluation()
    s = ev.summary()[0]
    # deletion: trapezoid of (0.8, 0.4, 0.2) over (0, .5, 1) = 0.45; insertion (0.2, 0.6 | 0.7, 0.8): 0.55 | 0.6
    assert s.deletion_auc == pytest.approx(0.45) and s.insertion_auc == pytest.approx((0.55 + 0.6) / 2)
    assert s.comprehensiveness == pytest.approx((0.3 + 0.4) / 2) and s.sufficiency == pytest.approx(0.3)
    assert s.top1 == 0.5 and s.top5 == 1.0
    old = ev.summary()[1]  # curves without the new fields (a file written before them)
    assert old.insertion_auc is None and old.comprehensiveness is None and old.sufficiency is None
    assert old.deletion_auc == pytest.approx(0.5) and old.top5 is None
    d = json.loads(ev.to_json())
    first = d["results"][0]
    assert first["insertion_auc"] == pytest.approx(0.55) and first["comprehensiveness"] == pytest.approx(0.3)
    assert "insertion_prob" not in d["results"][2]["curves"] and d["summary"][1]["insertion_auc"] is None
    ev.save(tmp_path / "e.json")
    back = Evaluation.load(tmp_path / "e.json")
    assert back.summary()[0] == ev.summary()[0]  # (the second's CI is NaN, which never compares equal)
    assert back.summary()[1].insertion_auc is None and back.summary()[1].deletion_auc == pytest.approx(0.5)
    b = back.results[1].curves
    assert b.insertion_prob.tolist() == pytest.approx([0.2, 0.7, 0.8]) and b.sufficiency_k.tolist() == [
        0.5,
        0.4,
        0.3,
        0.2,
        0.1,
    ]
    assert back.results[2].curves.comprehensiveness_k is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("insertion_prob", [0.1, 0.2], "insertion_prob has 2 values but the curve has 3 fractions"),
        ("comprehensiveness_k", [0.1, 0.2, 0.3], "comprehensiveness_k has 3 values but there is one per top-k bin"),
        ("sufficiency_k", [0.1, "x", 0.1, 0.1, 0.1], "sufficiency_k[1]"),
    ],
)
def test_bad_new_fields_are_refused_on_load(key, value, message):
    d = json.loads(_evaluation().to_json())
    d["results"][0]["curves"][key] = value
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        Evaluation.from_json(json.dumps(d))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("width", [240, 60])
def test_cli_table_shows_the_new_columns_at_any_width(width):
    from tui.commands.evaluate import render_evaluation

    console = Console(width=width, record=True, color_system=None)
    render_evaluation(console, _evaluation())
    text = console.export_text()
    for label in ("ins. / del. (p)", "comp. / suff.", "top-5"):
        assert label in text, text
    # attnlrp: insertion 0.575 / deletion 0.450, comprehensiveness 0.350 / sufficiency 0.300, top-5 1.00
    for number in ("0.575 / 0.450", "0.350 / 0.300", "1.00"):
        assert number in text, text
    assert "…" not in text
    if width == 60:  # the block layout: one "label  value" line each
        assert any(line.strip().startswith("comp. / suff.") for line in text.splitlines())


def test_html_section_shows_the_new_columns():
    html = evaluation_section.render(_evaluation())
    for label in ("insertion AUC (prob.)", "deletion AUC (prob.)", "comprehensiveness", "sufficiency", "top-5 hit"):
        assert f"<th>{label}</th>" in html
    assert "<td class='num'>0.575</td><td class='num'>0.450</td>" in html
    assert "<td class='num'>0.350</td><td class='num'>0.300</td>" in html


def test_cli_prints_and_saves_the_new_scores(tiny_dir, tmp_path, capsys, monkeypatch):
    """`xai-tui evaluate` end to end (tiny model, output piped at 80 columns): every new number
    is printed in the block layout and is the one the JSON holds."""
    from tui.cli import main

    monkeypatch.setenv("COLUMNS", "80")
    data = tmp_path / "items.jsonl"
    lines = [{"id": "b", "text": "the capital of france is", "answer": "paris", "evidence": "france"}]
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "ev.json"
    args = ["evaluate", "--model", str(tiny_dir), "--data", str(data), "--methods", "grad-x-input,random"]
    assert main([*args, "--steps", "3", "--json", str(out), "--quiet"]) == 0
    shown = capsys.readouterr().out
    summary = json.loads(out.read_text())["summary"]
    for s in summary:
        assert s["insertion_auc"] is not None and s["comprehensiveness"] is not None and s["top5"] is not None
        assert f"{s['insertion_auc']:.3f} / {s['deletion_auc']:.3f}" in shown, shown
        assert f"{s['comprehensiveness']:.3f} / {s['sufficiency']:.3f}" in shown, shown
    assert "…" not in shown

"""lrp_llm.analyses.evaluate: perturbation curves against a naive one-input-at-a-time loop,
ABPC, localisation, statistics, data validation and the end-to-end evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lrp_llm.analyses.evaluate import (
    Curves,
    EvalItem,
    auc,
    evaluate,
    explain_prepared,
    load_items,
    localisation,
    localisation_scores,
    mean_ci,
    neutral_token_id,
    perturbation_curves,
    prepare_item,
    removal_counts,
    removal_order,
    t_quantile_975,
)
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.engines.generation import generate_greedy
from lrp_llm.errors import Cancelled, InputError
from lrp_llm.methods import parse_method
from tests.support.models import cancel_after, random_ids, tiny_causal_lm, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_causal_lm("llama", vocab=len(tok))


# ----------------------------------------------------------------- small pieces
def test_removal_counts_cover_zero_to_all():
    assert removal_counts(10, 5) == [0, 2, 4, 6, 8, 10]
    assert removal_counts(3, 10) == [0, 1, 2, 3]  # never more steps than tokens
    assert removal_counts(7, 2) == [0, 4, 7]  # round(3.5) = 4 (banker's rounding is fine: ends are exact)
    assert removal_counts(0, 4) == [0]


def test_removal_order_sorts_candidates_only_with_stable_ties():
    rel = np.array([0.5, 3.0, -1.0, 3.0, 0.0])
    assert removal_order(rel, [0, 1, 2, 3, 4], most_relevant_first=True) == [1, 3, 0, 4, 2]
    assert removal_order(rel, [0, 1, 2, 3, 4], most_relevant_first=False) == [2, 4, 0, 1, 3]
    assert removal_order(rel, [0, 2, 3], most_relevant_first=True) == [3, 0, 2]


def test_auc_and_abpc_by_hand():
    x = np.array([0.0, 0.5, 1.0])
    assert auc(x, np.array([2.0, 1.0, 0.0])) == pytest.approx(1.0)
    c = Curves(
        fractions=x,
        morf_logit=np.array([4.0, 0.0, 0.0]),
        lerf_logit=np.array([4.0, 4.0, 0.0]),
        morf_prob=np.array([0.5, 0.1, 0.1]),
        lerf_prob=np.array([0.5, 0.5, 0.1]),
    )
    # AUC(LeRF) = 0.5*(4+4)/2 + 0.5*(4+0)/2 = 3; AUC(MoRF) = 0.5*(4+0)/2 = 1
    assert c.lerf_auc == pytest.approx(3.0) and c.morf_auc == pytest.approx(1.0)
    assert c.abpc == pytest.approx(2.0)
    assert c.abpc_prob == pytest.approx((0.25 + 0.15) - (0.15 + 0.05))


def test_t_quantiles_and_confidence_interval():
    for df, t in ((1, 12.706), (5, 2.571), (10, 2.228), (20, 2.086), (30, 2.042), (100, 1.984), (1000, 1.962)):
        assert t_quantile_975(df) == pytest.approx(t, abs=1.5e-3)
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    mean, half = mean_ci(x)
    assert mean == 3.0
    assert half == pytest.approx(2.776 * np.std(x, ddof=1) / np.sqrt(5), rel=1e-3)
    assert np.isnan(mean_ci([1.0])[1])


def test_localisation_by_hand():
    rel = np.array([0.1, 2.0, -3.0, 1.0, 1.0])
    out = localisation(rel, [3], k=2)
    assert out == {"top1": 0.0, "topk": 1.0, "mass": pytest.approx(1.0 / 4.1), "rank": 1.0}
    assert localisation(rel, [1, 2])["top1"] == 1.0
    # position 1 is not a candidate: the best candidate is 3 or 4 (tie, position order)
    assert localisation(rel, [3], candidates=[0, 2, 3, 4])["top1"] == 1.0
    assert localisation(-np.abs(rel), [0])["mass"] == 0.0  # nothing positive
    scores = localisation_scores([rel, rel], [[1], [3]], k=1)
    assert scores["top1"] == 0.5 and scores["mass"] == pytest.approx((2.0 + 1.0) / 4.1 / 2)
    with pytest.raises(ValueError):
        localisation(rel, [1], candidates=[0, 2])


def test_parse_method():
    assert parse_method("attnlrp") == ("attnlrp", None)
    assert parse_method("integrated-gradients:16") == ("integrated-gradients", 16)
    assert parse_method("ig:4") == ("integrated-gradients", 4)
    for bad in ("lime", "attnlrp:4", "integrated-gradients:x", "integrated-gradients:0"):
        with pytest.raises(InputError):
            parse_method(bad)


# ------------------------------------------------------------- curves vs naive loop
def _naive_scores(model, prefix, target, removed, strategy, neutral_id):
    """One unbatched forward per perturbed input, built the obvious way."""
    with torch.no_grad():
        if strategy == "delete":
            ids = [t for i, t in enumerate(prefix) if i not in removed] or [
                prefix[0] if neutral_id is None else neutral_id
            ]
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
        else:
            ids = torch.tensor([prefix])
            if strategy == "neutral":
                ids = torch.tensor([[neutral_id if i in removed else t for i, t in enumerate(prefix)]])
            e = model.get_input_embeddings()(ids)
            if strategy == "zero":
                for i in removed:
                    e[0, i] = 0.0
            logits = model(inputs_embeds=e).logits[0, -1].double()
    return float(logits[target]), float(torch.softmax(logits, -1)[target])


@pytest.mark.parametrize("strategy", ["zero", "neutral", "delete"])
def test_batched_curves_match_one_forward_per_input(model, strategy):
    ids = random_ids(14, seed=3)
    position = 13
    rel = np.random.default_rng(0).normal(size=position)
    candidates = list(range(1, position))  # first token kept, as for a BOS
    curves = perturbation_curves(
        model, ids, position, rel, candidates=candidates, strategy=strategy, steps=5, neutral_id=7, batch_size=3
    )
    counts = removal_counts(len(candidates), 5)
    assert np.allclose(curves.fractions, np.array(counts) / len(candidates))
    morf = removal_order(rel, candidates, most_relevant_first=True)
    lerf = removal_order(rel, candidates, most_relevant_first=False)
    for j, k in enumerate(counts):
        for order, logit, prob in (
            (morf, curves.morf_logit, curves.morf_prob),
            (lerf, curves.lerf_logit, curves.lerf_prob),
        ):
            want_logit, want_prob = _naive_scores(model, ids[:position], ids[position], set(order[:k]), strategy, 7)
            assert logit[j] == pytest.approx(want_logit, abs=1e-4)
            assert prob[j] == pytest.approx(want_prob, abs=1e-6)
    # nothing removed: the explained logit that relevance() reports
    out = relevance(model, ids, [position], method="grad-x-input")
    assert curves.morf_logit[0] == pytest.approx(float(out["logits"][0]), abs=1e-4)
    assert curves.lerf_logit[0] == curves.morf_logit[0] and curves.lerf_logit[-1] == curves.morf_logit[-1]


def test_abpc_is_antisymmetric_in_the_ordering(tok):
    # float64: the two orderings run their inputs in differently composed batches, whose
    # float32 results may differ in the last bits on some CPUs (3.6e-7 seen); in float64
    # that difference is ~1e-15, far inside the 1e-9 the antisymmetry is checked to.
    model = tiny_causal_lm("llama", vocab=len(tok), dtype=torch.float64)
    ids = random_ids(12, seed=5)
    rel = np.random.default_rng(1).normal(size=11)
    a = perturbation_curves(model, ids, 11, rel, steps=11)
    b = perturbation_curves(model, ids, 11, -rel, steps=11)
    assert b.abpc == pytest.approx(-a.abpc, abs=1e-9)
    assert np.allclose(a.morf_logit, b.lerf_logit, rtol=0, atol=1e-9)


def test_occlusion_ordering_beats_its_reverse(model):
    """Relevance = logit drop when each token alone is zeroed: MoRF must fall first."""
    ids = random_ids(12, seed=9)
    position = 11
    base = _naive_scores(model, ids[:position], ids[position], set(), "zero", None)[0]
    drop = np.array(
        [base - _naive_scores(model, ids[:position], ids[position], {i}, "zero", None)[0] for i in range(position)]
    )
    c = perturbation_curves(model, ids, position, drop, steps=position)
    assert c.abpc > 0
    assert c.morf_logit[1] == pytest.approx(base - drop.max(), abs=1e-4)  # first removal = the largest drop


def test_curve_input_errors(model):
    ids = random_ids(6)
    with pytest.raises(InputError, match="strategy"):
        perturbation_curves(model, ids, 5, np.zeros(5), strategy="blur")
    with pytest.raises(InputError, match="neutral"):
        perturbation_curves(model, ids, 5, np.zeros(5), strategy="neutral")
    with pytest.raises(InputError, match="relevance has"):
        perturbation_curves(model, ids, 5, np.zeros(3))
    with pytest.raises(InputError, match="candidate"):
        perturbation_curves(model, ids, 5, np.zeros(5), candidates=[5])


# ------------------------------------------------------------------------ data
def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_items_reads_both_kinds_and_skips_comments(tmp_path):
    p = _write(
        tmp_path / "d.jsonl",
        [
            "# a comment",
            json.dumps({"id": "q1", "context": "paris is in france", "question": "what country", "answer": "france"}),
            "",
            json.dumps({"text": "the capital of france is", "answer": " paris", "source": "hand"}),
        ],
    )
    items = load_items(p)
    assert [i.kind for i in items] == ["qa", "next-token"]
    assert items[0].evidence_text == "france" and items[1].evidence_text is None
    assert items[1].id == "d-4" and items[1].meta == {"source": "hand"}
    assert len(load_items(p, limit=1)) == 1


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["{not json"], "d.jsonl line 1 is not valid JSON"),
        (['{"question": "q", "context": "c"}'], "line 1: missing 'answer'"),
        (['{"answer": "a"}'], "needs 'question'"),
        (['{"answer": "a", "question": "q", "text": "t"}'], "not both"),
        (['{"answer": "", "text": "t"}'], "'answer' must be a non-empty string"),
        (["[1, 2]"], "expected a JSON object"),
        (["", "# only comments"], "holds no items"),
    ],
)
def test_load_items_errors_are_one_line(tmp_path, lines, message):
    p = _write(tmp_path / "d.jsonl", lines)
    with pytest.raises(InputError) as err:
        load_items(p)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_load_items_missing_or_binary_file(tmp_path):
    with pytest.raises(InputError, match="no such data file"):
        load_items(tmp_path / "nope.jsonl")
    p = tmp_path / "b.jsonl"
    p.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="not UTF-8"):
        load_items(p)


# ---------------------------------------------------------------- preparation
def test_prepare_qa_item_forced_and_answered(model, tok):
    item = EvalItem(id="q", context="paris is in france", question="what country", answer="yes")
    prep = prepare_item(model, tok, item, max_new_tokens=3)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "paris is in france\nwhat country"}], add_generation_prompt=True, tokenize=True
    )["input_ids"]
    special = set(tok.all_special_ids)
    assert prep.prompt_length == len(prompt)
    # the content: the user's words; the chat markup is the template's, never removed
    words = "paris is in france what country".split()
    assert [prep.tokens[i] for i in prep.candidates] == words
    assert prep.candidates == [i for i in range(prep.position) if prep.tokens[i] in words]
    every = prepare_item(model, tok, item, max_new_tokens=3, removable="all")
    assert every.candidates == [i for i in range(prep.position) if prep.input_ids[i] not in special]
    with pytest.raises(InputError, match="choose one of: content, all"):
        prepare_item(model, tok, item, removable="some")
    # the tiny random model never says "yes" here: the answer is forced after the prompt
    generated = generate_greedy(model, prompt, 6)
    if "yes" not in tok.decode(generated).split():
        assert not prep.answered and prep.input_ids == list(prompt) + [tok.convert_tokens_to_ids("yes")]
    # an answer that the model does give: explained where the model says it
    said = next(tok.decode([t]) for t in generated if t not in special)
    prep2 = prepare_item(
        model, tok, EvalItem(id="q2", context=item.context, question=item.question, answer=said), max_new_tokens=6
    )
    assert prep2.answered
    n_prompt = prep2.prompt_length
    assert (
        prep2.input_ids[n_prompt:]
        == generate_greedy(model, prep2.input_ids[:n_prompt], 6)[: prep2.position - n_prompt + 1]
    )
    assert said in prep2.target_token
    # the answer so far is content: every generated token before the explained one may be removed
    assert set(range(n_prompt, prep2.position)) <= set(prep2.candidates)


def test_prepare_finds_evidence_tokens(model, tok):
    item = EvalItem(
        id="q", context="the red city is north of paris", question="what city", answer="rome", evidence="north of"
    )
    prep = prepare_item(model, tok, item, max_new_tokens=2)
    assert [prep.tokens[i] for i in prep.evidence] == ["north", "of"]
    nt = EvalItem(id="n", text="the capital of france is", answer="paris", evidence="france")
    prep = prepare_item(model, tok, nt)
    assert [prep.tokens[i] for i in prep.evidence] == ["france"] and prep.position == 5
    assert prep.answered == (generate_greedy(model, prep.input_ids[:5], 1)[0] == prep.input_ids[5])
    assert prep.distance == 2


def test_neutral_token_id(tok):
    assert neutral_token_id(tok, "the") == tok.convert_tokens_to_ids("the")
    with pytest.raises(InputError, match="2 tokens"):
        neutral_token_id(tok, "the a")


# ------------------------------------------------------------------ end to end
def test_evaluate_end_to_end(model, tok):
    items = [
        EvalItem(id="a", context="paris is in france", question="what country", answer="france"),
        EvalItem(id="b", text="the capital of france is", answer="paris", evidence="france"),
        EvalItem(id="c", text="one two three", answer="four"),
    ]
    seen = []
    ev = evaluate(
        model,
        tok,
        items,
        ["attnlrp", "integrated-gradients:3", "random"],
        steps=4,
        max_new_tokens=3,
        progress=lambda stage, done, total: seen.append((stage, done, total)),
    )
    assert seen[:3] == [("answering", 1, 3), ("answering", 2, 3), ("answering", 3, 3)]
    assert seen[-1] == ("explaining", 9, 9)
    assert len(ev.results) == 9 and ev.n_items == 3
    summary = {s.method: s for s in ev.summary()}
    assert list(summary) == ["attnlrp", "integrated-gradients:3", "random"]
    for s in summary.values():
        assert s.n == 3 and np.isfinite(s.abpc) and np.isfinite(s.abpc_ci) and s.seconds > 0
        assert s.abpc == pytest.approx(s.lerf_auc - s.morf_auc)
        assert s.n_localised == 2  # items a (answer in context) and b (evidence)
    # each result's curves are those of its method's relevance
    prep = prepare_item(model, tok, items[1])
    rel, _ = explain_prepared(model, prep, "attnlrp")
    again = perturbation_curves(model, prep.input_ids, prep.position, rel, candidates=prep.candidates, steps=4)
    got = next(r for r in ev.results if r.item_id == "b" and r.method == "attnlrp")
    assert got.curves.abpc == pytest.approx(again.abpc, abs=1e-6)
    d = json.loads(ev.to_json())
    assert d["schema"] == "xai-tui/evaluation/1" and len(d["results"]) == 9
    assert d["summary"][0]["method"] == "attnlrp"
    curves = ev.mean_curves("random")
    assert curves is not None and curves["morf"].shape == (21,)


def test_evaluate_only_answered_and_strategies(model, tok):
    predicted = generate_greedy(model, tok("one two three")["input_ids"], 1)[0]
    wrong = "the" if predicted != tok.convert_tokens_to_ids("the") else "a"
    items = [EvalItem(id="c", text="one two three", answer=wrong)]
    ev = evaluate(model, tok, items, ["grad-x-input"], only_answered=True, steps=2)
    assert ev.results == [] and ev.n_answered == 0 and ev.summary() == []
    ev = evaluate(model, tok, items, ["grad-x-input"], strategy="neutral", neutral="the", steps=2)
    assert len(ev.results) == 1 and ev.meta["neutral"] == "the"
    with pytest.raises(InputError, match="strategy"):
        evaluate(model, tok, items, ["grad-x-input"], strategy="blur")
    with pytest.raises(InputError, match="twice"):
        evaluate(model, tok, items, ["random", "random"])


def test_evaluation_carries_the_run_metadata_and_reloads(model, tok, tmp_path):
    from lrp_llm.analyses.evaluate import Evaluation

    ev = evaluate(model, tok, [EvalItem(id="c", text="one two three", answer="four")], ["random"], steps=2)
    assert {"kind", "method", "rules", "steps", "dtype", "device", "date", "torch", "version"} <= set(ev.meta)
    assert (ev.meta["kind"], ev.meta["dtype"], ev.meta["device"], ev.meta["ig_steps"]) == (
        "evaluation",
        "float32",
        "cpu",
        32,
    )
    ev.save(tmp_path / "ev.json")
    back = Evaluation.load(tmp_path / "ev.json")
    # curves are written to 6 decimals; the scores are recomputed from them
    assert back.results[0].curves.to_dict() == ev.results[0].curves.to_dict() and back.meta == ev.meta
    assert back.summary()[0].abpc == pytest.approx(ev.summary()[0].abpc, abs=1e-5)


def test_evaluate_cancels(model, tok):
    items = [EvalItem(id=str(i), text="one two three", answer="four") for i in range(3)]
    with pytest.raises(Cancelled):
        evaluate(model, tok, items, ["attnlrp", "random"], steps=2, should_cancel=cancel_after(4))


def test_answer_must_match_whole_words(tok):
    from lrp_llm.analyses.evaluate import _answer_token_index

    ids = tok("one two three")["input_ids"]
    assert _answer_token_index(tok, ids, "two") == 1
    assert _answer_token_index(tok, ids, "TWO three") == 1
    assert _answer_token_index(tok, ids, "hree") is None  # inside a word: not an answer
    assert _answer_token_index(tok, ids, "on") is None


@pytest.mark.parametrize("strategy", ["zero", "delete"])
def test_mamba_curves_match_the_naive_loop_and_methods_are_checked(tok, strategy):
    from lrp_llm.analyses.evaluate import check_methods
    from tests.support.tiny_mamba import tiny_mamba

    mamba = tiny_mamba("mamba", vocab=len(tok))
    ids = random_ids(10, seed=4)
    rel = np.random.default_rng(2).normal(size=9)
    c = perturbation_curves(mamba, ids, 9, rel, strategy=strategy, steps=3, batch_size=2)
    order = removal_order(rel, range(9), most_relevant_first=True)
    for j, k in enumerate(removal_counts(9, 3)):
        want = _naive_scores(mamba, ids[:9], ids[9], set(order[:k]), strategy, None)[0]
        assert c.morf_logit[j] == pytest.approx(want, abs=1e-4)
    with pytest.raises(InputError, match="not available for mamba"):
        check_methods(mamba, ["attnlrp"])
    ev = evaluate(mamba, tok, [EvalItem(id="n", text="one two three", answer="four")], ["mambalrp", "random"], steps=2)
    assert [s.method for s in ev.summary()] == ["mambalrp", "random"]


def test_qa_answer_search_stops_once_the_answer_is_settled(model, tok, monkeypatch):
    """Decoding stops when the answer's first whole-word match is followed by a character; the prepared
    item is the one a full-length answer gives."""
    from lrp_llm.analyses import evaluate as ev

    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "paris is in france\nwhat country"}], add_generation_prompt=True, tokenize=True
    )["input_ids"]
    special = set(tok.all_special_ids)
    words = [tok.decode([t]) for t in generate_greedy(model, prompt, 8) if t not in special]
    for said in dict.fromkeys(words[:3]):  # the model's first words, each as the expected answer
        item = EvalItem(id="s", context="paris is in france", question="what country", answer=said)
        early = prepare_item(model, tok, item, max_new_tokens=8)
        with monkeypatch.context() as m:
            m.setattr(ev, "_answer_settled", lambda *a: False)
            full = prepare_item(model, tok, item, max_new_tokens=8)
        assert early.answered and full.answered
        assert (early.input_ids, early.position, early.candidates) == (full.input_ids, full.position, full.candidates)
        assert len(early.model_answer) <= len(full.model_answer)
    # settled: a character follows the match; at the very end it may still grow into a longer word
    ids = tok("france is", add_special_tokens=False)["input_ids"]
    assert ev._answer_settled(tok, ids, "france")
    assert not ev._answer_settled(tok, ids[:1], "france") and not ev._answer_settled(tok, ids, "paris")

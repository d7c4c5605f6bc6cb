"""Integration on the bundled SmolLM2-135M-Instruct (real weights, GGUF)."""

import pytest
import torch

from lrp_llm import explain, load_model

pytestmark = pytest.mark.integration

CONTEXT = (
    "The Normans (Norman: Nourmands; French: Normands; Latin: Normanni) were the people who in the 10th and 11th "
    "centuries gave their name to Normandy, a region in France."
)
QUESTION = "In what country is Normandy located? Answer briefly."


@pytest.fixture(scope="module")
def smollm2():
    return load_model()


@pytest.fixture(scope="module")
def normandy(smollm2):
    model, tok = smollm2
    return explain(model, tok, QUESTION, context=CONTEXT, generate=12, method="attnlrp")


def _context_span(a):
    """Token indices of the context passage inside the prompt."""
    text = ""
    for i, tok in enumerate(a.tokens[: a.prompt_length]):
        text += tok
        if text.endswith("Normans"):  # first word of the context
            start = i - 1
            break
    end = next(i for i in range(start, a.prompt_length) if a.tokens[i] == "." and a.tokens[i - 1] == " France")
    return range(start, end + 1)


def test_the_normandy_question_is_answered_with_france(normandy):
    assert "France" in normandy.answer
    assert normandy.answer.strip().startswith(("France", "Norman"))


def test_france_is_explained_by_normandy_or_france_in_the_context(normandy):
    a = normandy
    target = next(t for t in a.targets if t.token.strip() == "France")
    span = _context_span(a)
    top5 = target.top(5)
    hits = [i for i in top5 if i in span and a.tokens[i].strip() in ("Normandy", "France")]
    assert hits, [(i, a.tokens[i]) for i in top5]


@pytest.mark.parametrize("method", ["attnlrp", "cp-lrp", "grad-x-input", "saliency", "integrated-gradients", "random"])
def test_every_method_runs_and_reports_its_conservation(smollm2, normandy, method, record_property):
    model, tok = smollm2
    n = normandy.prompt_length
    a = explain(model, tok, QUESTION, context=CONTEXT, answer_ids=normandy.input_ids[n : n + 4], method=method, steps=4)
    ratios = [t.conservation for t in a.targets]
    record_property("conservation", ratios)
    assert all(torch.isfinite(torch.tensor(t.relevance)).all() for t in a.targets)
    if method == "cp-lrp":  # SmolLM2 has no biases: exact up to float32 rounding
        assert all(abs(r - 1.0) < 1e-3 for r in ratios)
    # logits do not depend on the method
    assert [round(t.logit, 3) for t in a.targets] == [round(t.logit, 3) for t in normandy.targets[:4]]


def test_bfloat16_model_gives_finite_relevance_close_to_float32(normandy):
    model, tok = load_model(dtype="bfloat16")
    n = normandy.prompt_length
    a = explain(model, tok, QUESTION, context=CONTEXT, answer_ids=normandy.input_ids[n : n + 3], method="attnlrp")
    for half, full in zip(a.targets, normandy.targets[:3]):
        r = torch.tensor(half.relevance)
        assert torch.isfinite(r).all()
        corr = torch.corrcoef(torch.stack([r, torch.tensor(full.relevance)]))[0, 1]
        assert corr > 0.8, corr

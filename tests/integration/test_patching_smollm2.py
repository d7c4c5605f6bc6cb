"""The README recipes on the bundled SmolLM2-135M-Instruct (real weights)."""

import numpy as np
import pytest

from lrp_llm import load_model
from patching import sweep
from patching.recipes import attention_knockout, overwrite_attribute, patch_last_token

pytestmark = pytest.mark.integration

EIFFEL = "The Eiffel Tower is located in the city of"
COLOSSEUM = "The Colosseum is located in the city of"


@pytest.fixture(scope="module")
def smollm2():
    return load_model()


def test_recipe_attention_knockout(smollm2):
    """Cutting the last token's edges to the subject halves p(Paris); cutting as many other
    (non-subject) tokens' edges hurts far less."""
    model, tok = smollm2
    subject = attention_knockout(model, tok, EIFFEL, "Eiffel Tower", " Paris")
    assert subject.subject_positions == [1, 2, 3]
    assert subject.p_before > 0.5 and subject.drop > 0.35
    control = attention_knockout(model, tok, EIFFEL, "", " Paris", positions=[4, 5, 6])
    assert control.drop < subject.drop / 2


def test_recipe_patch_instruction_into_last_token(smollm2):
    """The last position of an 'opposite word' prompt, patched into a 'same word' prompt,
    makes it answer ' down' -- from the upper-middle layers on, not from the bottom."""
    model, tok = smollm2
    source = "Answer with the opposite word. hot -> cold, big -> small, up ->"
    target = "Answer with the same word. hot -> hot, big -> big, up ->"
    out = patch_last_token(model, tok, source, target, layers=[0, 10, 20, 29])
    assert (out.source_answer, out.target_answer) == (" down", " up")
    assert out.top_tokens[0] == " up" and out.p_source_answer[0] < 0.01
    assert out.top_tokens[-2:] == [" down", " down"] and out.p_source_answer[-1] > 0.9
    assert out.first_layer_taking_over() == 20


def test_recipe_overwrite_attribute(smollm2):
    """The subject states of 'Eiffel Tower' patched over 'Colosseum' at layer 4: the answer moves to Paris."""
    model, tok = smollm2
    out = overwrite_attribute(model, tok, EIFFEL, COLOSSEUM, "Eiffel Tower", "Colosseum", " Paris", " Rome", layer=4)
    assert out.top_before == " Rome" and out.logit_diff_before < -5
    assert out.top_after == " Paris" and out.logit_diff_after > 2


def test_stepper_on_smollm2_matches_direct_patching(smollm2):
    """The layer stepper passes its self-check on the real model; cells agree with a plain patched forward."""
    import torch

    from patching import intervene, replace, run_with_cache

    model, tok = smollm2
    clean, corrupted = tok(EIFFEL)["input_ids"], tok(COLOSSEUM)["input_ids"]
    a, w = tok(" Paris")["input_ids"][0], tok(" Rome")["input_ids"][0]
    fast = sweep(model, clean, corrupted, a, w, kinds=("resid",), positions=[2], metrics=("logit_diff",))
    assert fast.engine == "stepper"
    _, cache = run_with_cache(model, clean, ["layer.3.resid", "layer.20.resid"])
    for layer in (3, 20):
        with torch.no_grad(), intervene(model, replace(f"layer.{layer}.resid", cache, positions=[2])):
            logits = model(torch.tensor([corrupted])).logits[0, -1]
        want = float(logits[a] - logits[w])
        assert fast.values[("resid", "logit_diff")][layer, 0] == pytest.approx(want, abs=1e-3)


@pytest.mark.slow
def test_stepper_on_smollm2_matches_batched(smollm2):
    """The whole grid at one position, resid and MLP, against the batched engine."""
    model, tok = smollm2
    clean, corrupted = tok(EIFFEL)["input_ids"], tok(COLOSSEUM)["input_ids"]
    a, w = tok(" Paris")["input_ids"][0], tok(" Rome")["input_ids"][0]
    kw = dict(kinds=("resid", "mlp"), positions=[2], metrics=("logit_diff",))
    fast = sweep(model, clean, corrupted, a, w, engine="auto", **kw)
    ref = sweep(model, clean, corrupted, a, w, engine="batched", **kw)
    assert fast.engine == "stepper"
    for key, want in ref.values.items():
        np.testing.assert_allclose(fast.values[key], want, atol=1e-3, rtol=0)

"""MoE experts as components in the families whose MoE output is an "mlp" site and whose experts are transformers'
fused experts: LFM2-MoE, Qwen3-Next / Qwen3.5-MoE (a shared expert behind a sigmoid gate), Kimi Linear and Bailing
hybrid (ungated shared experts, float32 routers), MiniMax-M3 (ungated shared experts, the routed sum scaled by
``routed_scaling_factor`` after the experts module). Per family: the sites, each expert's relevance against a hand
computation (hooks written here and transformers' own eager expert loop), the experts (+ shared expert) adding up to
the MoE part, conditional heatmaps over all experts adding up to the part's, the forward and the model left as they
were, JSON, and zeroing an expert removing exactly its contribution."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lrp_llm.analyses.components import conditional_relevance
from lrp_llm.archs import experts as experts_lib
from lrp_llm.archs.experts import experts_modules
from lrp_llm.archs.sites import SiteMap
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.mechanism.components import ComponentRecorder, ComponentSpec
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.results.components import ComponentRelevance
from tests.support.conformance import without_biases_and_position_embeddings
from tests.support.expert_hand import check_restored_after_an_error, hand_expert_relevance
from tests.support.models import model_state, random_ids
from tests.support.tiny_any import tiny_model

# model type -> (the layers with routed experts, whether a shared expert, whether its sigmoid gate). tiny_any's
# configs: LFM2-MoE, Kimi Linear, Bailing and MiniMax-M3 have a dense first block, Qwen3-Next / Qwen3.5-MoE none.
CASES = {
    "lfm2_moe": ([1], False, False),
    "qwen3_next": ([0, 1], True, True),
    "qwen3_5_moe_text": ([0, 1], True, True),
    "kimi_linear": ([1], True, False),
    "bailing_hybrid": ([1], True, False),
    "minimax_m3_vl_text": ([1], True, False),
}
# the MoE block multiplies the experts module's output by its routed_scaling_factor (MiniMax-M3; the others
# scale the routing weights inside their routers, which the experts module receives)
SCALED_AFTER = {"minimax_m3_vl_text"}
# float64 sums of a few hundred products of O(1) values: rounding ~1e-15 relative; 1e-10 leaves room (as
# tests/unit/test_expert_components.py). The routers of Kimi, Bailing and MiniMax-M3 compute their scores in float32,
# but the weights are the same tensors in the library's run and in the hand's, so that rounding cancels.
F64 = 1e-10
# a conditional heatmap of one expert under AttnLRP also runs back through the router (its share of w * E), whose
# softmax or sigmoid transformers computes in float32 here (eps 1.2e-7): the heatmaps over the experts then add up
# to the part's to float32 rounding over a few dozen terms
F32_ROUTER = 1e-5
# the same for every rule set where a heatmap runs back through a delta-rule token mixer before the MoE block:
# transformers computes the chunked delta rule (Qwen3-Next, Qwen3.5, Kimi, Bailing) in float32, so the backward
# passes of the selections round differently
F32_KERNEL = {"qwen3_next", "qwen3_5_moe_text", "kimi_linear", "bailing_hybrid"}
SEQ, P = 12, 11


def _model(model_type: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return without_biases_and_position_embeddings(tiny_model(model_type, dtype=torch.float64))


@pytest.fixture(scope="module")
def models():
    return {t: _model(t) for t in CASES}


def _scale_after(model, model_type: str, layer: int) -> float:
    return float(SiteMap(model).module(layer, "mlp").routed_scaling_factor) if model_type in SCALED_AFTER else 1.0


# ------------------------------------------------------------------ sites
@pytest.mark.parametrize("model_type", list(CASES))
def test_experts_are_sites_where_the_blocks_have_them(models, model_type):
    model = models[model_type]
    sm = SiteMap(model)
    moe, shared, gated = CASES[model_type]
    assert sm.layers_with("expert") == moe and sm.n_experts == 4
    assert sm.layers_with("shared_expert") == (moe if shared else [])
    for i in moe:
        assert sm.module(i, "expert") in experts_modules(model)
        assert sm.module(i, "expert") is sm.module(i, "mlp").experts  # inside the "mlp" site's block
        if shared:
            block = sm.module(i, "mlp")
            assert sm.module(i, "shared_expert") is getattr(block, "shared_expert", getattr(block, "shared_experts", 0))
        assert (sm.shared_gate(i) is not None) == gated
        assert [s.name for s in sm.expand(f"layer.{i}.mlp.expert.*")] == [f"layer.{i}.mlp.expert.{e}" for e in range(4)]
    dense = [i for i in range(sm.n_layers) if i not in moe]
    assert all(sm.has(i, "mlp") and not sm.has(i, "expert") for i in dense)


# ------------------------------------------------------------------ against hands
@pytest.mark.parametrize("rules", ["cp-lrp", "attnlrp"])
@pytest.mark.parametrize("model_type", list(CASES))
def test_each_expert_equals_weight_times_output_times_gradient(models, model_type, rules):
    model, ids = models[model_type], random_ids(SEQ)
    c = relevance(model, ids, [P], method=rules, components=True)["components"][0]
    hand = hand_expert_relevance(model, ids, P, rules)
    moe, shared, _ = CASES[model_type]
    assert sorted(hand) == moe
    scale = max(abs(v) for v in c.mlp if v is not None)
    for i in range(c.n_layers):
        if i not in hand:
            assert np.isnan(c.experts[i]).all() and (c.shared_expert is None or c.shared_expert[i] is None)
            continue
        per, hand_shared = hand[i]
        want = np.array([per.get(e, 0.0) for e in range(4)])
        assert np.abs(want).max() > 0  # the hand is not all zeros: the check can fail
        assert np.abs(c.experts[i] - want).max() <= F64 * scale
        if shared:
            assert abs(c.shared_expert[i] - hand_shared) <= F64 * scale
        else:
            assert c.shared_expert is None
        # the experts (+ the shared expert) partition the MoE part's relevance: its output times its gradient
        total = float(c.experts[i].sum()) + (c.shared_expert[i] if shared else 0.0)
        assert abs(total - c.mlp[i]) <= F64 * scale


def test_minimax_m3_scales_its_routed_sum_after_the_experts(models):
    # the hand reads the gradient at the experts module's output: routed_scaling_factor (2 in tiny_any) times the
    # gradient at the MoE output; a hand without it would be off by that factor
    model = models["minimax_m3_vl_text"]
    assert _scale_after(model, "minimax_m3_vl_text", 1) == 2.0


@pytest.mark.parametrize("rules", ["cp-lrp", "attnlrp", "grad-x-input"])
@pytest.mark.parametrize("model_type", list(CASES))
def test_experts_and_shared_expert_partition_the_moe_output(models, model_type, rules):
    out = relevance(models[model_type], random_ids(14), [9, 13], method=rules, components=True)
    for c in out["components"]:
        for i in CASES[model_type][0]:
            shared = 0.0 if c.shared_expert is None else c.shared_expert[i]
            assert abs(float(c.experts[i].sum()) + shared - c.mlp[i]) <= F64 * max(abs(c.mlp[i]), 1.0)
            assert np.count_nonzero(c.experts[i]) >= 2  # top-2 of 4 over 14 tokens: several experts chosen


# ------------------------------------------------------------------ conditional heatmaps
@pytest.mark.parametrize("rules", ["cp-lrp", "attnlrp"])
@pytest.mark.parametrize("model_type", list(CASES))
def test_conditional_heatmaps_of_all_experts_add_up_to_the_moe_part(models, model_type, rules):
    model, ids = models[model_type], random_ids(SEQ)
    sm = SiteMap(model)
    layer = sm.layers_with("expert")[-1]
    parts = [f"layer.{layer}.mlp.expert.{e}" for e in range(sm.n_experts)]
    if sm.has(layer, "shared_expert"):
        parts.append(f"layer.{layer}.mlp.shared_expert")
    out = conditional_relevance(model, ids, P, [*parts, parts, f"layer.{layer}.mlp"], method=rules)
    *singles, together, whole = out.heatmaps
    tol = F64 if rules == "cp-lrp" and model_type not in F32_KERNEL else F32_ROUTER
    scale = max(np.abs(whole.relevance).max(), 1e-300)
    assert np.abs(sum(h.relevance for h in singles) - whole.relevance).max() <= tol * scale
    assert np.abs(together.relevance - whole.relevance).max() <= tol * scale
    assert abs(sum(h.selected for h in singles) - whole.selected) <= F64 * max(abs(whole.selected), 1.0)
    assert sum(np.abs(h.relevance).max() > 0 for h in singles) >= 2  # not all on one expert: the test can fail
    # each selection's relevance is the recorder's for that expert
    c = relevance(model, ids, [P], method=rules, components=True)["components"][0]
    selected = np.array([h.selected for h in singles[: sm.n_experts]])
    assert np.abs(selected - c.experts[layer]).max() <= F64 * max(abs(whole.selected), 1.0)


# ------------------------------------------------------------------ the model left as it was
@pytest.mark.parametrize("model_type", list(CASES))
def test_taps_on_experts_leave_the_forward_and_the_model_unchanged(models, model_type):
    model, ids = models[model_type], torch.tensor([random_ids(10)])
    before = model_state(model)
    with torch.no_grad():
        plain = model(ids, use_cache=False).logits
    n_moe = len(CASES[model_type][0])
    for rules in ("attnlrp", "cp-lrp", None):  # None (grad-x-input): the recorder runs the experts' plain forward
        recorder = ComponentRecorder(ComponentSpec(), 1, 10, torch.float64)
        with lrp_rules(model, rules):
            with torch.no_grad():
                untapped = model(ids, use_cache=False).logits
            with recorder.installed(model):
                assert len(experts_lib._OBSERVERS) == n_moe
                with torch.enable_grad():
                    tapped = model(ids, use_cache=False).logits
        # float64, the same operations up to the order of the experts' sum: rounding only
        torch.testing.assert_close(tapped, untapped, atol=1e-12, rtol=0)
        # the rules leave the forward as it was, up to float32 rounding: transformers' eager attention computes its
        # softmax in float32 (a float64 model too), the rules' attention in the model's dtype; eps 1.2e-7 over a
        # few layers, relative to the logits' scale
        torch.testing.assert_close(untapped, plain, atol=1e-5 * float(plain.abs().max()), rtol=0)
        assert sum(key[0] == "expert" for key in recorder.keys) >= 2 * n_moe  # >= top-k experts per MoE layer
        assert model_state(model) == before and len(experts_lib._OBSERVERS) == 0
    assert all("forward" not in m.__dict__ for m in experts_modules(model))


def test_observers_and_forwards_restored_after_an_error(models):
    check_restored_after_an_error(models["qwen3_next"])


# ------------------------------------------------------------------ result
@pytest.mark.parametrize("model_type", list(CASES))
def test_experts_round_trip_through_json_and_rank(models, model_type):
    c = relevance(models[model_type], random_ids(SEQ), [P], method="cp-lrp", components=True)["components"][0]
    back = ComponentRelevance.from_dict(json.loads(json.dumps(c.to_dict())), position=P)
    np.testing.assert_array_equal(back.experts, c.experts)
    assert back.shared_expert == c.shared_expert
    layer = CASES[model_type][0][-1]
    every = [float(v) for v in c.experts[layer]]
    if CASES[model_type][1]:
        every.append(c.shared_expert[layer])
    for i in CASES[model_type][0][:-1]:
        every += [float(v) for v in c.experts[i]] + ([c.shared_expert[i]] if CASES[model_type][1] else [])
    top = back.top_components("expert", 3)
    assert [abs(r) for _, r in top] == sorted((abs(v) for v in every), reverse=True)[:3]
    sm = SiteMap(models[model_type])
    for site, _ in top:
        sm.check(site)


# ------------------------------------------------------------------ patching
def _block_io(sm, layer):
    """Hooks keeping the MoE block's output (as tokens x hidden) and the experts module's arguments."""
    seen = {}
    block = sm.module(layer, "mlp")
    handles = [
        block.register_forward_hook(lambda m, a, o: seen.__setitem__("out", o.detach().reshape(-1, o.shape[-1]))),
        sm.module(layer, "expert").register_forward_pre_hook(lambda m, a: seen.__setitem__("args", a)),
    ]
    return seen, handles


@pytest.mark.parametrize("model_type", list(CASES))
def test_zeroing_a_routed_expert_removes_exactly_its_weighted_contribution(models, model_type):
    from patching import intervene, zero

    model, layer, positions = models[model_type], CASES[model_type][0][-1], [2, 5, -1]
    # two rows: a wrong token -> (row, position) mapping would hit other tokens
    ids = torch.tensor([random_ids(10), random_ids(10, seed=2)])
    sm = SiteMap(model)
    seen, handles = _block_io(sm, layer)
    try:
        with torch.no_grad():
            model(ids, use_cache=False)
            plain, (x, index, weights) = seen["out"], seen["args"]
            # the expert routed most often at the chosen positions (so that the edit does something)
            rows = [2, 5, 9, 12, 15, 19]
            e = int(torch.mode(index[rows].flatten()).values)
            with intervene(model, zero(f"layer.{layer}.mlp.expert.{e}", positions=positions)):
                model(ids, use_cache=False)
            patched = seen["out"]
    finally:
        for h in handles:
            h.remove()
    experts = sm.module(layer, "expert")
    own = type(experts).forward.__wrapped__  # transformers' eager loop for expert e alone
    factor = _scale_after(model, model_type, layer)
    want = plain.clone()
    with torch.no_grad():
        for t in rows:  # positions 2, 5, 9 of both rows (10 tokens a row)
            for k in range(index.shape[1]):
                if int(index[t, k]) == e:
                    one = own(experts, x[t : t + 1], torch.tensor([[e]]), torch.ones(1, 1, dtype=x.dtype))
                    want[t] -= factor * weights[t, k] * one[0]
    assert (want != plain).any()  # the expert was routed at one of the positions: the check can fail
    torch.testing.assert_close(patched, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("model_type", ["qwen3_next", "kimi_linear"])
def test_zeroing_the_shared_expert_at_a_position_equals_a_hook_by_hand(models, model_type):
    from patching import intervene, zero

    model, ids = models[model_type], torch.tensor([random_ids(10)])
    layer = CASES[model_type][0][-1]
    shared = SiteMap(model).module(layer, "shared_expert")

    def by_hand(m, a, o):  # Qwen3-Next runs it on (tokens, hidden), Kimi on (batch, pos, hidden): position 3
        o = o.clone()
        o.view(-1, o.shape[-1])[3] = 0
        return o

    with torch.no_grad():
        plain = model(ids, use_cache=False).logits
        with intervene(model, zero(f"layer.{layer}.mlp.shared_expert", positions=[3])):
            ablated = model(ids, use_cache=False).logits
        handle = shared.register_forward_hook(by_hand)
        try:
            want = model(ids, use_cache=False).logits
        finally:
            handle.remove()
    torch.testing.assert_close(ablated, want, atol=0, rtol=0)
    assert (ablated - plain).abs().max() > 1e-6


def test_explain_with_components_reports_the_experts():
    from lrp_llm.engines.explain import explain
    from lrp_llm.results.attribution import Attribution
    from tests.support.models import tiny_tokenizer

    torch.manual_seed(0)
    model = tiny_model("qwen3_next", dtype=torch.float64, vocab_size=len(tiny_tokenizer()))
    result = explain(model, tiny_tokenizer(), "the capital of france is", generate=2, method="cp-lrp", components=True)
    back = Attribution.from_json(result.to_json())
    for a, b in zip(result.targets, back.targets):
        assert a.components.experts is not None and np.isfinite(a.components.experts).all()
        np.testing.assert_array_equal(a.components.experts, b.components.experts)
        assert a.components.shared_expert == b.components.shared_expert
        assert all(v is not None for v in a.components.shared_expert)

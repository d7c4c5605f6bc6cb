"""Experts of mixture-of-experts blocks as components: sites, relevance per expert against a hand computation
(hooks written here and transformers' own eager expert loop), the partition of the MoE output, conditional
heatmaps, JSON, and the model left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrp_llm.analyses.components import conditional_relevance
from lrp_llm.archs import arch_for_model_type, supported_model_types
from lrp_llm.archs import experts as experts_lib
from lrp_llm.archs.experts import experts_modules
from lrp_llm.archs.sites import Site, SiteMap
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.errors import InputError
from lrp_llm.mechanism.components import ComponentRecorder, ComponentSpec
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.results.components import ComponentRelevance
from tests.support.conformance import without_biases_and_position_embeddings
from tests.support.expert_hand import check_restored_after_an_error, hand_expert_relevance
from tests.support.models import model_state, random_ids
from tests.support.tiny_any import tiny_model

# three layouts: routed experts only (Mixtral, OLMoE), a shared expert behind a sigmoid gate (Qwen2-MoE),
# an ungated shared expert and a dense first layer (DeepSeek-V3: first_k_dense_replace=1 in tiny_any)
FAMILIES = ["mixtral", "qwen2_moe", "olmoe", "deepseek_v3"]
# float64 sums of a few hundred O(1) products: rounding ~1e-15 relative; 1e-10 leaves room
F64 = 1e-10
# under AttnLRP the routing weights' share passes the router's softmax, which transformers computes in float32
# (Mixtral's router: softmax(logits.float())): float32 rounding, eps 1.2e-7, over a few dozen terms
F32_ROUTER = 1e-5


def _model(model_type: str) -> torch.nn.Module:
    return without_biases_and_position_embeddings(tiny_model(model_type, dtype=torch.float64))


@pytest.fixture(scope="module")
def models():
    return {t: _model(t) for t in FAMILIES}


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# ------------------------------------------------------------------ sites
def test_expert_site_names_parse_and_print():
    for name in ("layer.3.mlp.expert.4", "layer.0.mlp.shared_expert"):
        assert Site.parse(name).name == name
    assert Site.parse("layer.3.mlp.expert.4") == Site(3, "expert", 4)
    assert Site.parse("layer.1.mlp.shared_expert") == Site(1, "shared_expert")
    for bad in ("layer.1.attn.expert.0", "layer.1.attn.shared_expert", "layer.1.mlp.expert"):
        with pytest.raises(InputError, match="^unknown site"):
            Site.parse(bad)


def test_site_maps_offer_experts_where_the_blocks_have_them(models):
    mixtral, qwen, deepseek = SiteMap(models["mixtral"]), SiteMap(models["qwen2_moe"]), SiteMap(models["deepseek_v3"])
    assert "expert" in mixtral.kinds and "shared_expert" not in mixtral.kinds and mixtral.n_experts == 4
    assert {"expert", "shared_expert"} <= set(qwen.kinds) and qwen.shared_gate(0) is not None
    assert deepseek.layers_with("expert") == [1] and deepseek.shared_gate(1) is None  # layer 0 is dense
    assert [s.name for s in mixtral.expand("layer.1.mlp.expert.*")] == [f"layer.1.mlp.expert.{e}" for e in range(4)]
    assert [s.name for s in deepseek.expand("shared_expert")] == ["layer.1.mlp.shared_expert"]
    assert len(deepseek.expand("expert")) == 4
    with pytest.raises(InputError, match=r"^site 'layer.0.mlp.expert.1' does not exist: block 0"):
        deepseek.check("layer.0.mlp.expert.1")
    with pytest.raises(InputError, match=r"^site 'layer.1.mlp.expert.4': expert 4 is out of range"):
        mixtral.check("layer.1.mlp.expert.4")
    with pytest.raises(InputError, match=r"^site 'layer.1.mlp.shared_expert' does not exist in a moe-family model"):
        mixtral.check("layer.1.mlp.shared_expert")
    # a dense model has no expert sites
    assert "expert" not in SiteMap(tiny_model("llama")).kinds


# ------------------------------------------------------------------ against hands


@pytest.mark.parametrize("rules", ["cp-lrp", "attnlrp"])
@pytest.mark.parametrize("model_type", FAMILIES)
def test_each_expert_equals_weight_times_output_times_gradient(models, model_type, rules):
    model, ids, p = models[model_type], random_ids(12), 11
    c = relevance(model, ids, [p], method=rules, components=True)["components"][0]
    hand = hand_expert_relevance(model, ids, p, rules)
    scale = max(abs(v) for v in c.mlp if v is not None)
    for i in range(c.n_layers):
        if i not in hand:
            assert np.isnan(c.experts[i]).all() and (c.shared_expert is None or c.shared_expert[i] is None)
            continue
        per, shared = hand[i]
        want = np.array([per.get(e, 0.0) for e in range(c.experts.shape[1])])
        assert np.abs(c.experts[i] - want).max() <= F64 * scale
        assert any(e not in per for e in range(4)) or len(per) == 4  # experts no token chose get 0
        if shared is None:
            assert c.shared_expert is None or c.shared_expert[i] is None
        else:
            assert abs(c.shared_expert[i] - shared) <= F64 * scale


@pytest.mark.parametrize("rules", ["cp-lrp", "attnlrp", "grad-x-input"])
@pytest.mark.parametrize("model_type", [*FAMILIES, "gpt_oss"])
def test_experts_and_shared_expert_partition_the_moe_output(model_type, rules):
    # gpt_oss: interleaved gate/up, transposed weights, a clamped SwiGLU and expert biases (kept here)
    model = tiny_model(model_type, dtype=torch.float64)
    out = relevance(model, random_ids(14), [9, 13], method=rules, components=True)
    for c in out["components"]:
        assert c.experts is not None
        layers = [i for i in range(c.n_layers) if not np.isnan(c.experts[i]).all()]
        assert layers
        for i in layers:
            shared = 0.0 if c.shared_expert is None or c.shared_expert[i] is None else c.shared_expert[i]
            assert abs(float(c.experts[i].sum()) + shared - c.mlp[i]) <= F64 * max(abs(c.mlp[i]), 1.0)
        assert any(c.experts[i].sum() != 0 for i in layers)


# every registered type whose family names experts paths (dense members of those families offer none)
EXPERT_TYPES = [
    t
    for t in supported_model_types()
    if arch_for_model_type(t).blocks is not None and arch_for_model_type(t).blocks.experts is not None
]


@pytest.mark.parametrize("model_type", EXPERT_TYPES)
def test_every_family_with_experts_partitions_its_moe_output(model_type):
    # the paths of the experts and the shared expert are right where the partition holds: a shared expert the
    # description misnames is missing from the sum
    model = tiny_model(model_type, dtype=torch.float64)
    sm = SiteMap(model)
    if "expert" not in sm.kinds:
        assert not experts_modules(model)  # a dense member (MiniCPM3, Youtu)
        return
    c = relevance(model, random_ids(10), [9], method="cp-lrp", components=True)["components"][0]
    # HY-V3 adds routed and shared outputs in float32 (enable_moe_fp32_combine): float32 rounding there
    tol = 1e-6 if getattr(model.config, "enable_moe_fp32_combine", False) else F64
    for i in sm.layers_with("expert"):
        shared = c.shared_expert[i] if sm.has(i, "shared_expert") else 0.0
        if not sm.has(i, "mlp"):  # Granite-4 hybrid, Llama-4: no "mlp" site to compare with
            assert np.isfinite(c.experts[i]).all()  # its partition: tests/unit/test_components_hybrids.py
            continue
        assert abs(float(c.experts[i].sum()) + shared - c.mlp[i]) <= tol * max(abs(c.mlp[i]), 1e-3)
    assert np.isnan(c.experts[[i for i in range(c.n_layers) if not sm.has(i, "expert")]]).all()


def test_the_layers_conserve_the_logit_under_cp_lrp_with_experts(models):
    out = relevance(models["qwen2_moe"], random_ids(12), [11], method="cp-lrp", components=True)
    c, logit = out["components"][0], float(out["logits"][0])
    assert _rel(c.layer_totals, np.full(c.n_layers + 1, logit)) < F64


# ------------------------------------------------------------------ conditional heatmaps
@pytest.mark.parametrize("rules", ["cp-lrp", "attnlrp"])
@pytest.mark.parametrize("model_type", FAMILIES)
def test_conditional_heatmaps_of_all_experts_add_up_to_the_mlp(models, model_type, rules):
    model, ids, p = models[model_type], random_ids(12), 11
    sm = SiteMap(model)
    layer = sm.layers_with("expert")[-1]
    parts = [f"layer.{layer}.mlp.expert.{e}" for e in range(sm.n_experts)]
    if sm.has(layer, "shared_expert"):
        parts.append(f"layer.{layer}.mlp.shared_expert")
    out = conditional_relevance(model, ids, p, [*parts, parts, f"layer.{layer}.mlp"], method=rules)
    *singles, together, whole = out.heatmaps
    tol = F64 if rules == "cp-lrp" else F32_ROUTER
    assert _rel(sum(h.relevance for h in singles), whole.relevance) < tol
    assert _rel(together.relevance, whole.relevance) < tol
    assert abs(sum(h.selected for h in singles) - whole.selected) <= F64 * abs(whole.selected)
    assert sum(np.abs(h.relevance).max() > 0 for h in singles) >= 2  # not all on one expert: the test can fail
    if rules == "cp-lrp":  # bias-free, conserving: each heatmap sums to its selection's relevance
        for h in singles:
            assert abs(float(h.relevance.sum()) - h.selected) <= F64 * abs(whole.selected)
    # the selection's relevance is the recorder's per expert
    c = relevance(model, ids, [p], method=rules, components=True)["components"][0]
    assert np.abs(np.array([h.selected for h in singles[: sm.n_experts]]) - c.experts[layer]).max() <= F64


def test_expert_selections_of_two_layers_are_refused_with_one_line(models):
    with pytest.raises(InputError, match=r"^selection 0 .* names parts of different tensors"):
        conditional_relevance(models["mixtral"], random_ids(8), 7, [["layer.0.mlp.expert.0", "layer.1.mlp.expert.0"]])


# ------------------------------------------------------------------ the model left as it was
def test_taps_on_experts_leave_the_forward_and_the_model_unchanged(models):
    model = models["qwen2_moe"]
    ids = torch.tensor([random_ids(10)])
    before = model_state(model)
    for rules in ("attnlrp", None):  # None (grad-x-input): the recorder runs the experts' plain eager forward
        recorder = ComponentRecorder(ComponentSpec(), 1, 10, torch.float64)
        with lrp_rules(model, rules):
            with torch.no_grad():
                untapped = model(ids).logits  # the forward under the rules (the model's own experts kernel: None)
            with recorder.installed(model):
                assert len(experts_lib._OBSERVERS) == 2
                with torch.enable_grad():
                    tapped = model(ids).logits
            # float64, the same operations up to the order of the experts' sum: rounding only
            torch.testing.assert_close(tapped, untapped, atol=1e-12, rtol=0)
            assert sum(key[0] == "expert" for key in recorder.keys) >= 2 * 2  # >= top-k experts per MoE layer
        assert model_state(model) == before and len(experts_lib._OBSERVERS) == 0


def test_observers_and_forwards_restored_after_an_error(models):
    check_restored_after_an_error(models["mixtral"])


# ------------------------------------------------------------------ result
def test_experts_round_trip_through_json_and_rank(models):
    c = relevance(models["deepseek_v3"], random_ids(12), [11], method="cp-lrp", components=True)["components"][0]
    back = ComponentRelevance.from_dict(c.to_dict(), position=11)
    np.testing.assert_array_equal(back.experts, c.experts)
    assert back.shared_expert == c.shared_expert and back.shared_expert[0] is None
    top = c.top_components("expert", 3)
    every = [*(float(v) for v in c.experts[1]), c.shared_expert[1]]
    assert [abs(r) for _, r in top] == sorted((abs(v) for v in every), reverse=True)[:3]
    assert all(s.startswith("layer.1.mlp.") for s, _ in top)
    dense = relevance(tiny_model("llama"), random_ids(8), [7], method="cp-lrp", components=True)["components"][0]
    assert dense.experts is None and dense.shared_expert is None and dense.top_components("expert") == []
    assert "experts" not in dense.to_dict()


# ------------------------------------------------------------------ patching
def _block_io(model, layer):
    """Run ``model`` on ids and return the MoE block's output (batch, pos, hidden) and the experts' arguments."""
    block = model.model.layers[layer].mlp
    seen = {}
    handles = [
        block.register_forward_hook(lambda m, a, o: seen.__setitem__("out", o.detach().clone())),
        block.experts.register_forward_pre_hook(lambda m, a: seen.__setitem__("args", a)),
    ]
    return seen, handles


@pytest.mark.parametrize(("op", "factor"), [("zero", 0.0), ("scale", 0.25)])
def test_patching_a_routed_expert_removes_exactly_its_weighted_contribution(models, op, factor):
    from patching import intervene, scale, zero

    model, ids, layer, e, positions = models["mixtral"], torch.tensor([random_ids(10)]), 1, 2, [2, 5, -1]
    edit = zero(f"layer.{layer}.mlp.expert.{e}", positions=positions)
    if op == "scale":
        edit = scale(f"layer.{layer}.mlp.expert.{e}", factor, positions=positions)
    seen, handles = _block_io(model, layer)
    try:
        with torch.no_grad():
            model(ids)
            plain, (x, index, weights) = seen["out"][0], seen["args"]
            with intervene(model, edit):
                model(ids)
            patched = seen["out"][0]
    finally:
        for h in handles:
            h.remove()
    # by hand: transformers' own eager loop for expert e alone, times its routing weight, at the chosen positions
    own = type(model.model.layers[layer].mlp.experts).forward.__wrapped__
    want = plain.clone()
    for t in (2, 5, 9):
        for k in range(index.shape[1]):
            if int(index[t, k]) == e:
                one = own(model.model.layers[layer].mlp.experts, x[t : t + 1], torch.tensor([[e]]), torch.ones(1, 1))
                want[t] -= (1 - factor) * weights[t, k] * one[0].to(want.dtype)
    assert (want != plain).any()  # the expert was routed at one of the positions: the check can fail
    torch.testing.assert_close(patched, want, atol=1e-12, rtol=0)


def test_patching_the_shared_expert_position_by_position_and_refusals(models):
    from patching import intervene, mean_ablate, run_with_cache, zero

    model, ids = models["qwen2_moe"], torch.tensor([random_ids(10)])
    shared = model.model.layers[1].mlp.shared_expert
    with torch.no_grad():
        plain = model(ids).logits
        with intervene(model, zero("layer.1.mlp.shared_expert", positions=[3])):
            ablated = model(ids).logits

        def by_hand(m, a, o):  # run on the flattened tokens (tokens, width): token 3 is position 3 of row 0
            o = o.clone()
            o[3] = 0
            return o

        handle = shared.register_forward_hook(by_hand)
        try:
            want = model(ids).logits
        finally:
            handle.remove()
        _, cache = run_with_cache(model, ids, ["layer.1.mlp.shared_expert"])
    torch.testing.assert_close(ablated, want, atol=0, rtol=0)
    assert (ablated - plain).abs().max() > 1e-3
    assert cache["layer.1.mlp.shared_expert"].shape == (1, 10, model.config.hidden_size)
    with pytest.raises(InputError, match=r"^site 'layer.1.mlp.expert.0': a routed expert's contribution can be"):
        with intervene(model, mean_ablate("layer.1.mlp.expert.0")):
            pass
    with pytest.raises(InputError, match=r"^site 'layer.1.mlp.expert.0': a routed expert's contribution exists"):
        run_with_cache(model, ids, ["layer.1.mlp.expert.0"])
    with pytest.raises(InputError, match=r"^cannot sweep 'expert'"):
        from patching.sweeps import sweep_kinds

        sweep_kinds(SiteMap(model), ["expert"])


def test_explain_with_components_on_a_moe_model_round_trips_and_renders():
    from rich.console import Console

    from lrp_llm.engines.explain import explain
    from lrp_llm.results.attribution import Attribution
    from tests.support.models import tiny_tokenizer
    from tui.render_components import render_components

    model = tiny_model("qwen2_moe", dtype=torch.float64, vocab_size=len(tiny_tokenizer()))
    result = explain(model, tiny_tokenizer(), "the capital of france is", generate=2, method="cp-lrp", components=True)
    back = Attribution.from_json(result.to_json())
    for a, b in zip(result.targets, back.targets):
        np.testing.assert_array_equal(a.components.experts, b.components.experts)
        assert a.components.shared_expert == b.components.shared_expert
    console = Console(record=True, width=200)
    render_components(console, back)
    text = console.export_text()
    assert "experts" in text and ("mlp.expert." in text or "mlp.shared_expert" in text)

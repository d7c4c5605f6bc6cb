"""Mamba channels / SSM heads and MoE experts as components of the hybrid families (Bamba, Granite-4 hybrid, Jamba,
Zamba2, Falcon-H1): sites, each channel's relevance against a hook written here (``h * grad`` at the mixer's
``out_proj`` input under the family's rules), channels adding up to the mixer, SSM heads to their channels, experts
(+ the shared expert) against transformers' own eager expert loop and adding up to what the block's MoE part adds,
conditional heatmaps over a partition, JSON, and the model left as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lrp_llm.analyses.components import conditional_relevance
from lrp_llm.archs.sites import SiteMap
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.mechanism.components import ComponentSpec
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.results.components import ComponentRelevance
from tests.support.conformance import without_biases_and_position_embeddings
from tests.support.models import model_state, random_ids
from tests.support.tiny_any import tiny_model

# name -> (model type, config overrides); tiny_any's layer patterns: one Mamba block and one attention (Zamba2:
# hybrid, Falcon-H1: both in every block) block; Jamba's second block has routed experts (expert_layer_period 2)
CASES = {
    "bamba": ("bamba", {}),
    "granitemoehybrid-experts": ("granitemoehybrid", {"num_local_experts": 4}),
    "granitemoehybrid-dense": ("granitemoehybrid", {"num_local_experts": 0}),
    "jamba": ("jamba", {}),
    "zamba2": ("zamba2", {}),
    "falcon_h1": ("falcon_h1", {}),
}
# per case: the layers with a mixer, whether its mixers are Mamba-2 (SSM heads), the layers with routed experts,
# whether a shared expert
LAYOUT = {
    "bamba": ([0], True, [], False),
    "granitemoehybrid-experts": ([0], True, [0, 1], True),
    "granitemoehybrid-dense": ([0], True, [], False),
    "jamba": ([0], False, [1], False),
    "zamba2": ([0, 1], True, [], False),
    "falcon_h1": ([0, 1], True, [], False),
}
# float64 sums of a few hundred products of O(1) values: rounding ~1e-15 relative; 1e-10 leaves room (as
# tests/unit/test_components.py). The Mamba scans run in float32 inside transformers even for float64 weights, but
# a tap and the hand hook read the same tensors of the same forward, and out_proj (float64, no bias) is exact.
F64 = 1e-10
SEQ, P = 12, 11


def _model(name: str) -> torch.nn.Module:
    model_type, overrides = CASES[name]
    torch.manual_seed(0)
    return without_biases_and_position_embeddings(tiny_model(model_type, dtype=torch.float64, **overrides))


@pytest.fixture(scope="module")
def models():
    return {name: _model(name) for name in CASES}


def _hand(model, ids, p, rules):
    """Under ``rules``, by hooks on the modules found here: per mixer layer the channels' relevance
    (out_proj's input times its gradient, summed over positions); per MoE layer {expert: sum over its tokens of
    w * E(x) . g} with E from transformers' eager expert loop (one expert, weight 1), w and the routing from the
    experts module's arguments, g the gradient at the experts' output, and the shared expert's output times that
    same gradient (the block adds both: they get one gradient)."""
    sm = SiteMap(model)
    kept: dict = {}

    def keep_input(i):
        def hook(module, args):
            kept["channel", i] = args[0]

        return hook

    def keep_output(key):
        def hook(module, args, kwargs, output):
            kept[key] = (args, output[0] if isinstance(output, tuple) else output)

        return hook

    handles = []
    for i, layer in enumerate(sm.layers):
        for module in layer.modules():
            if type(module).__name__.endswith(("Mixer", "MambaLayer")) and hasattr(module, "out_proj"):
                handles.append(module.out_proj.register_forward_pre_hook(keep_input(i)))
            if isinstance(getattr(module, "down_proj", None), torch.Tensor):
                handles.append(module.register_forward_hook(keep_output(("experts", i)), with_kwargs=True))
            if module is (sm.module(i, "shared_expert") if sm.has(i, "shared_expert") else None):
                handles.append(module.register_forward_hook(keep_output(("shared", i)), with_kwargs=True))
    try:
        with lrp_rules(model, rules):
            e = model.get_input_embeddings()(torch.tensor([ids])).detach().requires_grad_(True)
            logit = model(inputs_embeds=e, use_cache=False).logits[0, p - 1, ids[p]]
            channel_keys = sorted(k for k in kept if k[0] == "channel")
            expert_keys = sorted(k for k in kept if k[0] == "experts")
            tensors = [kept[k] for k in channel_keys] + [kept[k][1] for k in expert_keys]
            grads = torch.autograd.grad(logit, tensors)
    finally:
        for h in handles:
            h.remove()
    channels = {k[1]: (kept[k] * g)[0].sum(0).detach().numpy() for k, g in zip(channel_keys, grads)}
    experts = {}
    for key, y_grad in zip(expert_keys, grads[len(channel_keys) :]):
        i = key[1]
        (x, index, weights), _ = kept[key]
        module = next(m for m in sm.layers[i].modules() if isinstance(getattr(m, "down_proj", None), torch.Tensor))
        own = type(module).forward.__wrapped__  # transformers' eager loop, not the library's forward
        per: dict[int, float] = {}
        with torch.no_grad():
            for t in range(x.shape[0]):
                for k in range(index.shape[1]):
                    ex = int(index[t, k])
                    one = own(module, x[t : t + 1], torch.tensor([[ex]]), torch.ones(1, 1, dtype=x.dtype))
                    per[ex] = per.get(ex, 0.0) + float(weights[t, k] * (one[0] @ y_grad[t]))
        shared = None
        if ("shared", i) in kept:
            s_out = kept["shared", i][1].detach().reshape(-1, x.shape[-1])
            shared = float((s_out * y_grad).sum())
        experts[i] = (per, shared)
    return channels, experts


# ------------------------------------------------------------------ sites
@pytest.mark.parametrize("name", list(CASES))
def test_channels_and_experts_are_sites_where_the_blocks_have_them(models, name):
    sm = SiteMap(models[name])
    mixers, mamba2, moe, shared = LAYOUT[name]
    assert sm.layers_with("channel") == sm.layers_with("mixer") == mixers
    for i in mixers:  # the mixer's own out_proj, at the block's own path (Zamba2's hybrid block: mamba_decoder.mamba)
        assert sm.locate(f"layer.{i}.mixer.channel.0").module is sm.module(i, "mixer").out_proj
    assert sm.n_channels == sm.module(mixers[0], "mixer").out_proj.in_features
    assert sm.layers_with("expert") == moe and ("shared_expert" in sm.kinds) == shared
    if moe:
        assert sm.n_experts == 4
    if shared:  # Granite-4 hybrid: the shared MLP, and no "mlp" site (the block adds experts and shared MLP itself)
        assert sm.module(0, "shared_expert") is sm.layers[0].shared_mlp and "mlp" not in sm.kinds


# ------------------------------------------------------------------ against hands
@pytest.mark.parametrize("rules", ["cp-lrp", "attnlrp"])
@pytest.mark.parametrize("name", list(CASES))
def test_channels_and_experts_equal_the_hand_hooks(models, name, rules):
    model, ids = models[name], random_ids(SEQ)
    c = relevance(model, ids, [P], method=rules, components=ComponentSpec(top_k=4, full=True))["components"][0]
    channels, experts = _hand(model, ids, P, rules)
    mixers, mamba2, moe, shared = LAYOUT[name]
    assert sorted(channels) == mixers and sorted(experts) == moe
    for i in range(c.n_layers):
        if i not in channels:
            assert c.channel_total[i] is None and np.isnan(c.channels[i]).all()
            continue
        hand = channels[i]
        scale = np.abs(hand).max()
        assert np.abs(c.channels[i] - hand).max() <= F64 * scale
        # out_proj is linear without bias: the channels add up to the mixer's output relevance
        assert abs(c.channel_total[i] - c.mixer[i]) <= F64 * max(abs(c.mixer[i]), scale)
        assert set(c.channel_index[i].tolist()) == set(np.argsort(-np.abs(hand), kind="stable")[:4].tolist())
    if mamba2:  # SSM heads of head_dim channels side by side at out_proj's input
        mixer = SiteMap(model).module(mixers[0], "mixer")
        heads, dim = mixer.num_heads, mixer.head_dim
        assert c.ssm_heads.shape == (c.n_layers, heads)
        for i in mixers:
            assert (
                np.abs(c.ssm_heads[i] - channels[i].reshape(heads, dim).sum(-1)).max()
                <= F64 * np.abs(channels[i]).max() * dim
            )
        assert np.isnan(c.ssm_heads[[i for i in range(c.n_layers) if i not in mixers]]).all()
    else:  # Mamba-1 (Jamba): no SSM heads
        assert c.ssm_heads is None
    if not moe:
        assert c.experts is None
        return
    scale = max(abs(v) for v in c.layer_totals)
    for i in range(c.n_layers):
        if i not in experts:
            assert np.isnan(c.experts[i]).all()
            continue
        per, hand_shared = experts[i]
        want = np.array([per.get(e, 0.0) for e in range(4)])
        assert np.abs(c.experts[i] - want).max() <= F64 * scale
        if shared:
            assert abs(c.shared_expert[i] - hand_shared) <= F64 * scale
            # the routed experts and the shared one partition what the block adds (hand: their outputs times the
            # one gradient of their sum)
            assert abs(c.experts[i].sum() + c.shared_expert[i] - (want.sum() + hand_shared)) <= F64 * scale
        else:  # Jamba: the MoE block's output is the "mlp" site, the experts partition it
            assert abs(c.experts[i].sum() - c.mlp[i]) <= F64 * scale


@pytest.mark.parametrize("name", list(CASES))
def test_cp_lrp_with_mambalrp_conserves_and_ranked_names_are_sites(models, name):
    model = models[name]
    out = relevance(model, random_ids(SEQ), [P], method="cp-lrp", components=True)
    c, logit = out["components"][0], float(out["logits"][0])
    # the final residual carries the logit (bias-free, CP-LRP + MambaLRP conserve; the scan runs in float32 inside
    # transformers: the issue's 1e-4). Zamba2's hybrid blocks also read the embeddings: only the last total.
    assert abs(c.layer_totals[-1] - logit) <= 1e-4 * abs(logit)
    sm = SiteMap(model)
    for kind in ("channel", "expert", "ssm-head"):
        for ranked in c.top_components(kind, 5):
            if kind != "ssm-head":
                sm.check(ranked.site)
    back = ComponentRelevance.from_dict(json.loads(json.dumps(c.to_dict())), position=P)
    assert back.channel_total == c.channel_total
    assert np.array_equal(back.channel_index, c.channel_index) and np.array_equal(
        back.channel_value, c.channel_value, equal_nan=True
    )
    for field in ("ssm_heads", "experts"):
        a, b = getattr(c, field), getattr(back, field)
        assert (a is None) == (b is None) and (a is None or np.array_equal(a, b, equal_nan=True))
    assert back.shared_expert == c.shared_expert


# ------------------------------------------------------------------ conditional heatmaps
@pytest.mark.parametrize("name", ["bamba", "jamba", "zamba2", "falcon_h1", "granitemoehybrid-experts"])
def test_conditional_heatmaps_over_all_channels_add_up_to_the_mixer(models, name):
    model, ids = models[name], random_ids(SEQ)
    sm = SiteMap(model)
    i = sm.layers_with("channel")[-1]  # Zamba2: the hybrid block's mixer (mamba_decoder.mamba)
    channels = [f"layer.{i}.mixer.channel.{k}" for k in range(sm.n_channels)]
    c = conditional_relevance(model, ids, P, [*channels, f"layer.{i}.mixer"], method="cp-lrp")
    parts, whole = c.heatmaps[:-1], c.heatmaps[-1]
    total = sum(h.relevance for h in parts)
    scale = np.abs(whole.relevance).max()
    assert scale > 0 and np.abs(total - whole.relevance).max() <= F64 * max(scale, np.abs(c.relevance).max())
    assert abs(sum(h.selected for h in parts) - whole.selected) <= F64 * max(abs(whole.selected), 1.0)


@pytest.mark.parametrize("name", ["jamba", "granitemoehybrid-experts"])
def test_conditional_heatmaps_over_all_experts_add_up_to_the_moe_part(models, name):
    model, ids = models[name], random_ids(SEQ)
    sm = SiteMap(model)
    i = sm.layers_with("expert")[-1]
    parts = [f"layer.{i}.mlp.expert.{e}" for e in range(sm.n_experts)]
    if sm.has(i, "shared_expert"):
        parts.append(f"layer.{i}.mlp.shared_expert")
    # the whole: the MoE block's output (Jamba: the "mlp" site) or, with no such tensor (Granite-4 hybrid), all
    # experts with the shared one selected together
    whole = f"layer.{i}.mlp" if sm.has(i, "mlp") else parts
    c = conditional_relevance(model, ids, P, [*parts, whole], method="cp-lrp")
    total = sum(h.relevance for h in c.heatmaps[:-1])
    scale = max(np.abs(c.heatmaps[-1].relevance).max(), np.abs(c.relevance).max())
    assert np.abs(total - c.heatmaps[-1].relevance).max() <= F64 * scale
    comps = relevance(model, ids, [P], method="cp-lrp", components=True)["components"][0]
    moe = float(comps.experts[i].sum()) + (comps.shared_expert[i] if sm.has(i, "shared_expert") else 0.0)
    assert abs(c.heatmaps[-1].selected - moe) <= F64 * max(abs(moe), 1.0)


# ------------------------------------------------------------------ the model left as it was
@pytest.mark.parametrize("name", list(CASES))
def test_components_leave_the_forward_and_the_model_unchanged(models, name):
    model, ids = models[name], random_ids(SEQ)
    with torch.no_grad():
        before = model(torch.tensor([ids]), use_cache=False).logits
    state = model_state(model)
    relevance(model, ids, [P], method="attnlrp", components=True)
    conditional_relevance(model, ids, P, [f"layer.{LAYOUT[name][0][0]}.mixer.channel.0"], method="cp-lrp")
    with torch.no_grad():
        after = model(torch.tensor([ids]), use_cache=False).logits
    assert model_state(model) == state and torch.equal(after, before)


# ------------------------------------------------------------------ patching Granite-4 hybrid's experts
def test_patching_a_granite_hybrid_expert_removes_exactly_its_weighted_contribution(models):
    # the block has no "mlp" site: the routed edit reads (batch, pos) from the block's input; two rows, so that a
    # wrong token -> (row, position) mapping would hit other tokens
    from patching import intervene, zero

    model, layer, e, positions = models["granitemoehybrid-experts"], 0, 2, [2, 5, -1]
    ids = torch.tensor([random_ids(10), random_ids(10, seed=2)])
    moe = model.model.layers[layer].block_sparse_moe
    seen = {}
    handles = [
        moe.register_forward_hook(lambda m, a, o: seen.__setitem__("out", o.detach().clone())),
        moe.experts.register_forward_pre_hook(lambda m, a: seen.__setitem__("args", a)),
    ]
    try:
        with torch.no_grad():
            model(ids, use_cache=False)
            plain, (x, index, weights) = seen["out"].reshape(-1, x_width := model.config.hidden_size), seen["args"]
            with intervene(model, zero(f"layer.{layer}.mlp.expert.{e}", positions=positions)):
                model(ids, use_cache=False)
            patched = seen["out"].reshape(-1, x_width)
    finally:
        for h in handles:
            h.remove()
    own = type(moe.experts).forward.__wrapped__  # transformers' eager loop for expert e alone
    want = plain.clone()
    for t in (2, 5, 9, 12, 15, 19):  # positions 2, 5, 9 of both rows (10 tokens a row)
        for k in range(index.shape[1]):
            if int(index[t, k]) == e:
                one = own(moe.experts, x[t : t + 1], torch.tensor([[e]]), torch.ones(1, 1, dtype=x.dtype))
                want[t] -= weights[t, k] * one[0]
    assert (want != plain).any()  # the expert was routed at one of the positions: the check can fail
    torch.testing.assert_close(patched, want, atol=1e-12, rtol=0)


# ------------------------------------------------------------------ Llama-4: the router's scores scale the experts' input
@pytest.fixture(scope="module")
def llama4():
    torch.manual_seed(0)
    # tiny_any: a dense first layer, routed experts (4, top-1) and a shared expert in the second
    return without_biases_and_position_embeddings(tiny_model("llama4_text", dtype=torch.float64))


def _hand_llama4(model, ids, p, rules):
    """Per MoE block, under ``rules``: {expert: its output . g} and the shared expert's output . g, where g is the
    gradient at the block's output (tokens, hidden) and the outputs come from transformers' own modules run here
    on the block's input: routed_in = x * the router's score of each expert, transformers' experts forward."""
    sm = SiteMap(model)
    kept = {}
    handles = [
        sm.layers[i].feed_forward.register_forward_hook(lambda m, a, o, i=i: kept.__setitem__(i, (a[0], o[0])))
        for i in sm.layers_with("expert")
    ]
    try:
        with lrp_rules(model, rules) if rules != "grad-x-input" else torch.enable_grad():
            e = model.get_input_embeddings()(torch.tensor([ids])).detach().requires_grad_(True)
            logit = model(inputs_embeds=e, use_cache=False).logits[0, p - 1, ids[p]]
            grads = torch.autograd.grad(logit, [kept[i][1] for i in sorted(kept)])
    finally:
        for h in handles:
            h.remove()
    out = {}
    with torch.no_grad():
        for i, g in zip(sorted(kept), grads):
            block, (x, whole) = sm.layers[i].feed_forward, kept[i]
            x = x.reshape(-1, x.shape[-1])
            scores, _ = block.router(x)  # (tokens, experts)
            n = scores.shape[1]
            routed_in = x.repeat(n, 1) * scores.transpose(0, 1).reshape(-1, 1)
            y = type(block.experts).forward(block.experts, routed_in).view(n, -1, x.shape[-1])
            experts = (y * g).sum((1, 2))
            shared = float((block.shared_expert(x) * g).sum())
            out[i] = (experts.numpy(), shared, float((whole * g).sum()))
    return out


@pytest.mark.parametrize("rules", ["cp-lrp", "attnlrp", "grad-x-input"])
def test_llama4_experts_equal_their_outputs_times_the_blocks_gradient_and_partition_it(llama4, rules):
    sm = SiteMap(llama4)
    assert sm.layers_with("expert") == sm.layers_with("shared_expert") == [1] and "mlp" not in sm.kinds
    ids = random_ids(SEQ)
    c = relevance(llama4, ids, [P], method=rules, components=True)["components"][0]
    hand = _hand_llama4(llama4, ids, P, rules)
    experts, shared, whole = hand[1]
    scale = max(abs(v) for v in c.layer_totals if v == v) or 1.0
    assert np.abs(c.experts[1] - experts).max() <= F64 * scale and np.isnan(c.experts[0]).all()
    assert (experts == 0).any() and (experts != 0).any()  # top-1 of 4: experts no token chose carry nothing
    assert abs(c.shared_expert[1] - shared) <= F64 * scale and c.shared_expert[0] is None
    # the experts and the shared expert partition what the block adds
    assert abs(c.experts[1].sum() + c.shared_expert[1] - whole) <= F64 * max(abs(whole), scale)


def test_llama4_conditional_heatmaps_over_its_experts_add_up_and_the_model_is_unchanged(llama4):
    ids = random_ids(SEQ)
    with torch.no_grad():
        before = llama4(torch.tensor([ids]), use_cache=False).logits
    state = model_state(llama4)
    parts = [f"layer.1.mlp.expert.{e}" for e in range(4)] + ["layer.1.mlp.shared_expert"]
    c = conditional_relevance(llama4, ids, P, [*parts, parts], method="cp-lrp")
    total = sum(h.relevance for h in c.heatmaps[:-1])
    scale = max(np.abs(c.heatmaps[-1].relevance).max(), np.abs(c.relevance).max())
    assert np.abs(total - c.heatmaps[-1].relevance).max() <= F64 * scale
    whole = _hand_llama4(llama4, ids, P, "cp-lrp")[1][2]
    assert abs(c.heatmaps[-1].selected - whole) <= F64 * max(abs(whole), 1.0)
    relevance(llama4, ids, [P], method="grad-x-input", components=True)
    with torch.no_grad():
        after = llama4(torch.tensor([ids]), use_cache=False).logits
    assert model_state(llama4) == state and torch.equal(after, before)


def test_llama4_zeroing_an_expert_removes_exactly_its_output_and_scaling_is_refused(llama4):
    from lrp_llm.errors import InputError
    from patching import intervene, scale, zero

    block, e, positions = llama4.model.layers[1].feed_forward, 2, [2, 5, -1]
    ids = torch.tensor([random_ids(10), random_ids(10, seed=2)])  # two rows: the token -> (row, position) map
    seen = {}
    handle = block.register_forward_hook(lambda m, a, o: seen.__setitem__("io", (a[0].detach(), o[0].detach())))
    try:
        with torch.no_grad():
            llama4(ids, use_cache=False)
            x, plain = seen["io"]
            with intervene(llama4, zero(f"layer.1.mlp.expert.{e}", positions=positions)):
                llama4(ids, use_cache=False)
            patched = seen["io"][1]
            # by hand: expert e's output (transformers' experts forward on the router-scaled input) at positions
            # 2, 5, 9 of both rows taken away
            x = x.reshape(-1, x.shape[-1])
            scores, _ = block.router(x)
            routed_in = x.repeat(4, 1) * scores.transpose(0, 1).reshape(-1, 1)
            y = type(block.experts).forward(block.experts, routed_in).view(4, -1, x.shape[-1])
    finally:
        handle.remove()
    want = plain.clone()
    tokens = [2, 5, 9, 12, 15, 19]
    want[tokens] -= y[e, tokens]
    assert y[e, tokens].abs().max() > 0  # expert e was chosen at one of them: the check can fail
    torch.testing.assert_close(patched, want, atol=1e-12, rtol=0)
    with pytest.raises(InputError, match=r"^site 'layer.1.mlp.expert.0': this model's router scores scale") as err:
        with intervene(llama4, scale("layer.1.mlp.expert.0", 0.5)):
            pass
    assert "\n" not in str(err.value)


def test_the_components_views_moe_row_reads_the_experts_where_there_is_no_mlp_site(models, llama4):
    # the app's trace row label: a block with experts shows its MoE part's total; with no "mlp" site it is the
    # experts' and the shared expert's sum (a partition, checked against hands above)
    from tui.screens.components import ComponentsScreen, block_parts

    for model, layer in ((models["granitemoehybrid-experts"], 0), (llama4, 1), (models["jamba"], 1)):
        c = relevance(model, random_ids(SEQ), [P], method="cp-lrp", components=True)["components"][0]
        assert "experts" in block_parts(c)[layer] and "mlp" not in block_parts(c)[layer]
        shared = c.shared_expert[layer] if c.shared_expert is not None else 0.0
        want = c.mlp[layer] if c.mlp[layer] is not None else float(c.experts[layer].sum()) + shared
        assert ComponentsScreen._part_value(c, layer, "experts") == pytest.approx(want, rel=F64)
        assert abs(float(c.experts[layer].sum()) + shared - want) <= F64 * max(abs(want), 1.0)


def test_llama4_shared_expert_edits_read_the_position_from_the_block(llama4):
    # its shared expert runs on the flattened tokens (tokens, width) and the block has no "mlp" site: the edit reads
    # (batch, pos) from the block's input; row 1, position 3 is token 13
    from patching import intervene, zero

    ids, shared = (
        torch.tensor([random_ids(10), random_ids(10, seed=2)]),
        llama4.model.layers[1].feed_forward.shared_expert,
    )
    with torch.no_grad():
        plain = llama4(ids, use_cache=False).logits
        with intervene(llama4, zero("layer.1.mlp.shared_expert", positions=[3], batch=[1])):
            ablated = llama4(ids, use_cache=False).logits

        def by_hand(m, a, o):
            o = o.clone()
            o[13] = 0
            return o

        handle = shared.register_forward_hook(by_hand)
        try:
            want = llama4(ids, use_cache=False).logits
        finally:
            handle.remove()
    torch.testing.assert_close(ablated, want, atol=0, rtol=0)
    assert (ablated - plain).abs().max() > 1e-6

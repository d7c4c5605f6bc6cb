"""Component relevance on Falcon, whose parallel blocks add the attention output to the MLP output in place
(``mlp_output += attention_output``): the taps hand the block a copy, so the MLP's tensor keeps its value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrp_llm.analyses.components import conditional_relevance
from lrp_llm.engines.causal_lm import relevance
from lrp_llm.mechanism.components import ComponentRecorder, ComponentSpec
from lrp_llm.mechanism.context import lrp_rules
from tests.support.models import model_state, random_ids
from tests.support.tiny_gpt import tiny_gpt, without_biases

LAYOUTS = [
    {},  # Falcon-7B: multi-query, parallel blocks (the in-place add)
    dict(new_decoder_architecture=True, num_kv_heads=2),  # Falcon-40B/180B: parallel, two LayerNorms
    dict(parallel_attn=False, multi_query=False),  # sequential blocks: no in-place add
]
IDS = [",".join(d) or "7b" for d in LAYOUTS]
# float64 sums of a few hundred O(1) products: rounding ~1e-15 relative; 1e-10 leaves room
F64 = 1e-10


def _falcon(layout):
    return without_biases(tiny_gpt("falcon", dtype=torch.float64, **layout))


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_falcon_layers_conserve_and_parts_partition_under_cp_lrp(layout):
    model = _falcon(layout)
    out = relevance(model, random_ids(14), [9, 13], method="cp-lrp", components=True)
    for c, logit in zip(out["components"], out["logits"].numpy()):
        assert np.abs(c.layer_totals - logit).max() <= F64 * abs(logit)
        # dense and dense_4h_to_h are linear without bias: heads add up to the attention output, neurons to the MLP's
        assert np.abs(c.heads.sum(-1) - np.array(c.attn)).max() <= F64 * abs(logit)
        assert np.abs(np.array(c.neuron_total) - np.array(c.mlp)).max() <= F64 * abs(logit)


@pytest.mark.parametrize("rules", ["cp-lrp", "attnlrp"])
@pytest.mark.parametrize("layout", LAYOUTS[:2], ids=IDS[:2])
def test_falcon_mlp_and_attention_relevance_by_hand(layout, rules):
    # parallel blocks: out = residual + attention + MLP, so both parts get the block output's gradient; their
    # values are kept by hooks written here before the block's in-place add
    model, ids, p = _falcon(layout), random_ids(12), 11
    c = relevance(model, ids, [p], method=rules, components=True)["components"][0]
    kept, handles = {}, []
    for i, block in enumerate(model.transformer.h):

        def value(name, i=i):
            def hook(module, args, output):
                out = output[0] if isinstance(output, tuple) else output
                kept[name, i] = out.detach().clone()

            return hook

        def grad(module, args, output, i=i):
            output.retain_grad()
            kept["block", i] = output

        handles += [
            block.mlp.register_forward_hook(value("mlp")),
            block.self_attention.register_forward_hook(value("attn")),
            block.register_forward_hook(lambda m, a, o, i=i: grad(m, a, o[0] if isinstance(o, tuple) else o, i)),
        ]
    try:
        with lrp_rules(model, rules):
            e = model.get_input_embeddings()(torch.tensor([ids])).detach().requires_grad_(True)
            model(inputs_embeds=e, use_cache=False).logits[0, p - 1, ids[p]].backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    scale = max(abs(v) for v in (*c.mlp, *c.attn))
    for i in range(c.n_layers):
        g = kept["block", i].grad
        assert abs(c.mlp[i] - float((kept["mlp", i] * g).sum())) <= F64 * scale
        assert abs(c.attn[i] - float((kept["attn", i] * g).sum())) <= F64 * scale
        # the check can fail: the MLP's value differs from what the block turns it into in place
        assert not torch.allclose(kept["mlp", i], kept["mlp", i] + kept["attn", i])


@pytest.mark.parametrize("layout", LAYOUTS, ids=IDS)
def test_falcon_conditional_heatmaps_partition_the_mlp_and_conserve(layout):
    model, ids, p = _falcon(layout), random_ids(12), 11
    neurons = [f"layer.1.mlp.neuron.{n}" for n in range(48)]
    out = conditional_relevance(model, ids, p, [neurons[:20], neurons[20:], "layer.1.mlp", "layer.1.resid"])
    low, high, mlp, block = out.heatmaps
    scale = np.abs(block.relevance).max()
    # the neurons partition the MLP's input to dense_4h_to_h: their heatmaps add up to the MLP output's (any rule set)
    assert np.abs(low.relevance + high.relevance - mlp.relevance).max() <= F64 * scale
    assert np.abs(block.relevance - out.relevance).max() <= F64 * scale  # the last block output: everything
    # CP-LRP (the family default is attnlrp: ask for it), bias-free: each heatmap sums to its selection's relevance
    cp = conditional_relevance(model, ids, p, ["layer.1.mlp", "layer.0.mlp"], method="cp-lrp")
    for h in cp.heatmaps:
        assert abs(float(h.relevance.sum()) - h.selected) <= F64 * float(np.abs(cp.relevance).sum())
    assert np.abs(mlp.relevance).max() > 1e-3 * scale  # the MLP's heatmap is not empty


def test_falcon_taps_leave_the_forward_and_the_model_unchanged():
    model = _falcon({})
    ids = torch.tensor([random_ids(10)])
    before = model_state(model)
    with lrp_rules(model, "attnlrp"):
        with torch.no_grad():
            untapped = model(ids).logits
        recorder = ComponentRecorder(ComponentSpec(), 1, 10, torch.float64)
        with recorder.installed(model), torch.enable_grad():
            tapped = model(ids).logits
            recorder.check_unchanged()  # the in-place add changed the copy, not the tapped tensor
    torch.testing.assert_close(tapped, untapped, atol=0, rtol=0)
    assert model_state(model) == before

"""Patching where a block keeps a part at a path of its own (``BlockPaths.layer_parts`` mapping part -> path):
Zamba2 (its mixer at ``mamba`` or, in hybrid blocks, ``mamba_decoder.mamba``), Kimi Linear and Bailing (the
linear-attention mixer and MLA both at ``self_attn``): each site resolves to its own block's module, a patch
there changes what that module alone would change, MLA's head sites are its value heads, and a mapping that
names no block part is refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lrp_llm.archs.description import BlockPaths, by_layer_type
from patching.interventions import intervene, zero
from patching.sites import SiteMap
from tests.support.conformance import tiny_for
from tests.support.models import random_ids
from tests.support.tiny_any import tiny_model


def test_a_mapped_block_keeps_its_own_paths_and_the_others_the_named_ones():
    parts = by_layer_type({"mamba": ("mixer",), "hybrid": {"mixer": "inner.m", "attention": "shared.a"}})
    blocks = BlockPaths(layers="layers", mixer="m", layer_parts=parts)
    config = SimpleNamespace(layer_types=["mamba", "hybrid"])
    assert blocks.paths_per_layer(config, 2) == [{"mixer": "m"}, {"mixer": "inner.m", "attention": "shared.a"}]
    # a mapped part need not be named on BlockPaths (here: attention)
    assert blocks.parts_per_layer(config, 2) == [frozenset({"mixer"}), frozenset({"mixer", "attention"})]
    odd = BlockPaths(layers="layers", layer_parts=by_layer_type({"x": {"mixr": "m"}}))
    with pytest.raises(ValueError, match="mixr are not block parts"):
        odd.paths_per_layer(SimpleNamespace(layer_types=["x"]), 1)


def test_zamba2s_mixer_sites_are_each_blocks_own_mixer():
    model = tiny_for("zamba2")[0]
    sm = SiteMap(model)
    kinds = [type(layer).__name__ for layer in sm.layers]
    assert kinds == ["Zamba2MambaDecoderLayer", "Zamba2HybridLayer"]
    # no site on the shared attention block (one module at every depth); each mixer's channels at its own out_proj
    assert sm.kinds == ("resid", "mixer", "channel")
    assert sm.module(0, "mixer") is sm.layers[0].mamba
    assert sm.module(1, "mixer") is sm.layers[1].mamba_decoder.mamba
    assert sm.module(1, "channel") is sm.layers[1].mamba_decoder.mamba.out_proj


@pytest.mark.parametrize("model_type", ["kimi_linear", "bailing_hybrid"])
def test_kimi_blocks_hold_a_mixer_or_attention_at_the_same_path(model_type):
    model = tiny_for(model_type)[0]
    sm = SiteMap(model)
    # block 1's MLP is a MoE block: its routed experts and shared experts are (component) sites too
    assert [sm.describe_layer(i) for i in range(sm.n_layers)] == [
        "resid, mlp, mixer",
        "resid, attn, mlp, head, expert, shared_expert",
    ]
    assert sm.module(0, "mixer") is sm.layers[0].self_attn and hasattr(sm.layers[0].self_attn, "forget_gate")
    assert sm.module(1, "attn") is sm.layers[1].self_attn and hasattr(sm.layers[1].self_attn, "kv_a_proj_with_mqa")
    with pytest.raises(Exception, match="block 0 .* has resid, mlp, mixer; attn sites are in layers 1"):
        sm.check("layer.0.attn")


def test_patching_one_blocks_mixer_leaves_the_other_blocks_mixer_alone():
    # Zamba2: zeroing block 1's mixer output (at its own path) changes the logits; block 0's mixer output
    # is what it was without the patch (a site at the wrong path would patch the other block or none)
    torch.manual_seed(0)
    model = tiny_for("zamba2", dtype=torch.float64)[0]
    sm = SiteMap(model)
    ids = torch.tensor([random_ids(6, seed=1)])
    seen = []
    handle = sm.module(0, "mixer").register_forward_hook(lambda _m, _a, out: seen.append(out.detach().clone()))
    try:
        with torch.no_grad():
            plain = model(input_ids=ids, use_cache=False).logits
            with intervene(model, zero("layer.1.mixer")):
                patched = model(input_ids=ids, use_cache=False).logits
    finally:
        handle.remove()
    torch.testing.assert_close(seen[0], seen[1], rtol=0, atol=0)
    assert (plain - patched).abs().max() > 1e-6


def test_mla_head_sites_are_its_value_heads():
    # MLA's value heads (v_head_dim) are what sits side by side at o_proj's input, not hidden_size / heads
    model = tiny_model("kimi_linear", v_head_dim=6)
    attn = model.model.layers[1].self_attn
    assert attn.v_head_dim * model.config.num_attention_heads == attn.o_proj.in_features
    assert attn.v_head_dim != model.config.hidden_size // model.config.num_attention_heads
    sm = SiteMap(model)
    assert sm.head_dim == attn.v_head_dim
    last = sm.locate(f"layer.1.attn.head.{sm.n_heads - 1}")
    assert (last.start, last.stop) == (attn.o_proj.in_features - attn.v_head_dim, attn.o_proj.in_features)

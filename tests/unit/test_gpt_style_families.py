"""The older GPT-style decoders (OPT, BioGPT, GPTBigCode, BLOOM, MPT, CodeGen, GPT-Neo, OpenAI GPT,
GPT-NeoX-Japanese): the Q/K/V rules where Q, K, V enter an attention method or leave a fused
projection in thirds, against the hand-written attention gradient (float64); BLOOM's GELU under
the identity rule; and the layouts the conformance suite's default tiny configs do not reach
(multi-query or not, post-LayerNorm, residual after the LayerNorm), each conserving on a
bias-free float64 copy with the forward unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrp_llm.archs.blocks import install_attention, install_mlps
from lrp_llm.archs.description import (
    AttentionCallParts,
    AttentionProjectionParts,
    MLPParts,
    NormParts,
    TransformerParts,
)
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.mechanism.patch import ModelPatch
from tests.support.conformance import without_biases_and_position_embeddings
from tests.support.models import random_ids
from tests.support.tiny_any import tiny_model

D, T = 6, 5  # width of the toy attention (one head), positions


def _weights(seed: int) -> torch.Tensor:
    return torch.randn(3 * D, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class _InlineAttention(nn.Module):
    """One causal head computed inline from a fused projection ``[q | k | v]``: MPT's chunk and
    CodeGen's ``_attn`` in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(D, 3 * D, bias=False, dtype=torch.float64)
        self.qkv.weight.data = _weights(11)
        self.qkv.weight.requires_grad_(False)

    def _attn(self, query, key, value):
        scores = query @ key.T / D**0.5
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        return torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1) @ value

    def forward(self, x):
        query, key, value = self.qkv(x).chunk(3, dim=-1)
        return self._attn(query, key, value)


def _hand_gradient(x: torch.Tensor, w: torch.Tensor, cot: torch.Tensor, factors) -> torch.Tensor:
    """The input gradient of the toy attention with Q, K, V's plain gradients times ``factors`` (0: detached)."""
    wq, wk, wv = w.chunk(3, dim=0)
    q, k, v = x @ wq.T, x @ wk.T, x @ wv.T
    scores = (q @ k.T / D**0.5).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    a = torch.softmax(scores, dim=-1)
    dv = a.T @ cot
    da = cot @ v.T
    ds = a * (da - (da * a).sum(-1, keepdim=True))  # softmax's Jacobian, row by row
    dq, dk = ds @ k / D**0.5, ds.T @ q / D**0.5
    fq, fk, fv = factors
    return fq * dq @ wq + fk * dk @ wk + fv * dv @ wv


FACTORS = {"attnlrp": (0.25, 0.25, 0.5), "cp-lrp": (0.0, 0.0, 1.0), "relp": (0.0, 0.0, 1.0)}


@pytest.mark.parametrize("rules", list(FACTORS))
@pytest.mark.parametrize(
    "parts", [AttentionCallParts(projection="qkv", method="_attn"), AttentionProjectionParts(projection="qkv")]
)
def test_inline_attention_rules_match_the_hand_written_gradient(rules, parts):
    attn = _InlineAttention()
    x = torch.randn(T, D, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    cot = torch.randn(T, D, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
    plain = attn(x)
    with ModelPatch(attn) as patch:
        install_attention(patch, [attn], parts, rules)
        xr = x.clone().requires_grad_(True)
        out = attn(xr)
        (grad,) = torch.autograd.grad((out * cot).sum(), xr)
    torch.testing.assert_close(out, plain, atol=0, rtol=0)  # the forward is untouched
    torch.testing.assert_close(grad, _hand_gradient(x, attn.qkv.weight, cot, FACTORS[rules]), atol=1e-12, rtol=0)
    if rules != "attnlrp":  # probabilities constant, no bias: the output is linear in x
        torch.testing.assert_close((x * grad).sum(), (plain * cot).sum(), atol=1e-12, rtol=0)
    # restored: the class's method again, no hook left
    assert "_attn" not in attn.__dict__ and not attn.qkv._forward_hooks


def test_attention_method_rules_are_refused_twice_and_removed_after():
    attn = _InlineAttention()
    parts = AttentionCallParts(projection="qkv", method="_attn")
    with ModelPatch(attn) as patch:
        install_attention(patch, [attn], parts, "attnlrp")
        with pytest.raises(RuntimeError, match="already installed"):
            install_attention(patch, [attn], parts, "attnlrp")
    assert "_attn" not in attn.__dict__


def test_codegen_method_rules_equal_factors_on_its_sharded_qkv_layout():
    """CodeGen's ``qkv_proj`` output is four shards of ``[q | v | k]``; the rules where Q, K, V enter
    ``_attn`` must equal the factors put on exactly those output features (an independent layout)."""
    from lrp_llm.archs.blocks import find_parts, install_norms

    model = tiny_model("codegen", dtype=torch.float64)
    embeds = model.get_input_embeddings()(torch.tensor([random_ids(8)])).detach()
    shard = model.config.n_embd * 3 // 4
    role = torch.arange(3 * model.config.n_embd) % shard // (shard // 3)  # 0: q, 1: v, 2: k
    factor = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)[role]

    def gradient() -> torch.Tensor:
        er = embeds.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(inputs_embeds=er).logits[0, -1, 5], er)
        return grad

    with lrp_rules(model, "attnlrp"):
        by_family = gradient()
    parts = TransformerParts(
        attention=AttentionCallParts(projection="qkv_proj", method="_attn"),
        mlps=(MLPParts(up="fc_in", act="act", down="fc_out"),),
        norm=NormParts(kind="layer", class_suffix="LayerNorm"),
    )
    with ModelPatch(model) as patch:  # the same norms and MLPs; Q/K/V by their features in the layout
        found = find_parts(model, parts)
        install_norms(patch, found["norms"], parts.norm)
        install_mlps(patch, model, parts, "attnlrp")
        for attn in found["attentions"]:
            patch.hook_output(attn.qkv_proj, lambda _m, _a, out: out.detach() + factor * (out - out.detach()))
        by_layout = gradient()
    torch.testing.assert_close(by_family, by_layout, atol=1e-10, rtol=0)
    assert (by_family - gradient()).abs().max() > 1e-3  # the rules differ from the plain gradient


def test_bloom_gelu_gets_the_identity_rule():
    from transformers.models.bloom.modeling_bloom import BloomGelu, bloom_gelu_forward

    mlp = nn.Module()
    mlp.up, mlp.down, mlp.gelu_impl = nn.Linear(3, 6), nn.Linear(6, 3), BloomGelu()
    parts = TransformerParts(
        attention=AttentionCallParts(projection="qkv", method="_attn"),
        mlps=(MLPParts(up="up", act="gelu_impl", down="down"),),
        norm=NormParts(kind="layer", class_suffix="LayerNorm"),
    )
    h = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(14))
    with ModelPatch(mlp) as patch:
        install_mlps(patch, mlp, parts, "cp-lrp")
        hr = h.clone().requires_grad_(True)
        out = mlp.gelu_impl(hr)
        (grad,) = torch.autograd.grad(out.sum(), hr)
    torch.testing.assert_close(out, bloom_gelu_forward(h), atol=0, rtol=0)
    torch.testing.assert_close(grad, bloom_gelu_forward(h) / h, atol=1e-12, rtol=0)


# ------------------------------------------------------------------ layouts beyond the default tiny configs
def _forward_kept_and_conserves(model_type: str, **overrides) -> list[float]:
    """Every rule set keeps the forward (float32); CP-LRP's relevance / logit on a bias-free float64 copy."""
    from lrp_llm.engines.causal_lm import relevance

    model = tiny_model(model_type, **overrides)
    ids = torch.tensor([random_ids(12)])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        for rules in ("attnlrp", "cp-lrp", "relp"):
            with lrp_rules(model, rules):
                torch.testing.assert_close(model(input_ids=ids).logits, plain, atol=1e-5, rtol=1e-5)
    model = without_biases_and_position_embeddings(tiny_model(model_type, dtype=torch.float64, **overrides))
    out = relevance(model, random_ids(12), [8, 11], method="cp-lrp")
    return [float(out["relevance"][i].sum() / out["logits"][i]) for i in range(2)]


@pytest.mark.parametrize(
    "model_type,overrides",
    [
        ("gpt_bigcode", {"multi_query": True}),  # one key/value head for every query head (StarCoder 1)
        ("gpt_bigcode", {"multi_query": False}),
        ("bloom", {"apply_residual_connection_post_layernorm": True}),
        ("opt", {"do_layer_norm_before": False}),  # OPT-350m: post-LayerNorm, no final LayerNorm
        ("opt", {"word_embed_proj_dim": 16}),  # project_in / project_out around the blocks
        ("mpt", {"attn_config": {"alibi": False}}),  # learned positions instead of ALiBi
        ("gpt_neo", {"attention_types": [[["local", "global"], 1]], "window_size": 2}),
    ],
)
def test_layout_keeps_the_forward_and_conserves(model_type, overrides):
    for ratio in _forward_kept_and_conserves(model_type, **overrides):
        assert abs(ratio - 1.0) < 1e-4, f"{model_type} {overrides}: relevance sums to {ratio:.6f}"


def test_gpt_bigcode_multi_query_has_one_key_value_head():
    model = tiny_model("gpt_bigcode", multi_query=True)
    attn = model.transformer.h[0].attn
    assert attn.c_attn.out_features == model.config.n_embd + 2 * attn.head_dim


def test_mpt_with_clipped_qkv_is_refused_and_left_unchanged():
    model = tiny_model("mpt", attn_config={"clip_qkv": 4.0})
    hooks = sum(len(m._forward_hooks) for m in model.modules())
    with pytest.raises(UnsupportedModelError, match=r"clip_qkv=4.0 clamps Q/K/V, which has no LRP rule"):
        with lrp_rules(model, "attnlrp"):
            pass
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks


def test_xlm_is_refused_with_a_one_line_error():
    """Not registered: XLM is a bidirectional masked LM unless its config sets ``causal``; the error says so
    (XGLM and CTRL are registered now: ``lrp_llm.archs.xglm``, ``lrp_llm.archs.ctrl``)."""
    from lrp_llm.archs import get_arch

    with pytest.raises(
        UnsupportedModelError, match=r"unsupported architecture 'xlm' \(.*MultiHeadAttention.*\); supported: "
    ):
        get_arch(tiny_model("xlm"))

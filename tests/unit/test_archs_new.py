"""The newest families: DeepSeek sparse attention (DSA), Gemma-4 unified's shared keys and values and
Cohere Compass's LayerNorm against hand formulas in float64, and the refusals of the newest types that have a part without a rule (each error names the part)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lrp_llm.archs import get_arch
from lrp_llm.archs.blocks import install_norms
from lrp_llm.archs.cohere_compass import COHERE_COMPASS_FAMILY
from lrp_llm.archs.dsa import index_mask
from lrp_llm.errors import UnsupportedModelError
from lrp_llm.mechanism.context import lrp_rules
from lrp_llm.mechanism.patch import ModelPatch
from tests.support.tiny_any import tiny_model

DSA_TYPES = ("deepseek_v32", "glm_moe_dsa")


# ------------------------------------------------------------------ the top-k selection as a mask
@pytest.mark.parametrize("boolean", [True, False])
def test_index_mask_keeps_exactly_the_selected_keys(boolean):
    torch.manual_seed(0)
    batch, queries, keys, topk = 2, 5, 7, 3
    indices = torch.stack([torch.randperm(keys)[:topk] for _ in range(batch * queries)]).view(batch, queries, topk)
    causal = torch.ones(queries, keys, dtype=torch.bool).tril(keys - queries)[None, None].expand(batch, 1, -1, -1)
    low = torch.finfo(torch.float64).min
    mask = causal.clone() if boolean else torch.zeros(causal.shape, dtype=torch.float64).masked_fill(~causal, low)

    got = index_mask(indices.to(torch.int32), mask, keys)

    for b in range(batch):
        for i in range(queries):
            for j in range(keys):
                keep = bool(causal[b, 0, i, j]) and j in indices[b, i].tolist()
                if boolean:
                    assert bool(got[b, 0, i, j]) is keep
                else:
                    assert got[b, 0, i, j].item() == (0.0 if keep else low)
    assert got.dtype == mask.dtype and got.shape == mask.shape


# ------------------------------------------------------------------ the attention under CP-LRP, by hand
def _rms(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    # DeepSeek's RMSNorm (weight * x / rms, no offset) with 1/rms a constant, as CP-LRP holds it
    rms = torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).detach()
    return norm.weight * x / rms


def _hand_output(attn, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """The attention's output with its probabilities ``probs`` [batch, heads, q, k] given: V from the
    latent (kv_a_proj_with_mqa's first kv_lora_rank features, normed, then kv_b_proj), then o_proj."""
    batch, seq, _ = x.shape
    latent = (x @ attn.kv_a_proj_with_mqa.weight.T)[..., : attn.kv_lora_rank]
    kv = (_rms(latent, attn.kv_a_layernorm) @ attn.kv_b_proj.weight.T).view(
        batch, seq, -1, attn.qk_nope_head_dim + attn.v_head_dim
    )
    values = kv[..., attn.qk_nope_head_dim :].transpose(1, 2)  # [batch, heads, k, v_head_dim]
    mixed = (probs @ values).transpose(1, 2).reshape(batch, seq, -1)
    return mixed @ attn.o_proj.weight.T


@pytest.mark.parametrize("model_type", DSA_TYPES)
def test_cp_lrp_through_the_sparse_attention_matches_the_hand_formula(model_type):
    torch.manual_seed(0)
    model = tiny_model(model_type, dtype=torch.float64)
    attn = model.model.layers[0].self_attn
    assert attn.indexer is not None and attn.indexer.index_topk < 12
    seq = 12
    x = torch.randn(1, seq, model.config.hidden_size, dtype=torch.float64)
    positions = torch.arange(seq)[None]
    rotary = model.model.rotary_emb(x, positions)
    low = torch.finfo(torch.float64).min
    causal = torch.full((seq, seq), low, dtype=torch.float64).triu(1)[None, None]

    with torch.no_grad():
        plain, probs = attn(hidden_states=x, position_embeddings=rotary, attention_mask=causal, position_ids=positions)[
            :2
        ]
    kept = probs[0, 0] > 0
    # the indexer masked some causal keys: the rows past index_topk keep exactly that many
    assert (kept.sum(-1)[attn.indexer.index_topk :] == attn.indexer.index_topk).all()
    assert (kept.sum(-1) < torch.arange(1, seq + 1)).any()

    query = seq - 1
    xr = x.clone().requires_grad_(True)
    with lrp_rules(model, "cp-lrp"):
        out, held = attn(hidden_states=xr, position_embeddings=rotary, attention_mask=causal, position_ids=positions)[
            :2
        ]
        out[0, query].sum().backward()
    ruled = (xr * xr.grad).sum(-1)[0]
    # the model's norms and softmax round through float32 inside; the rules' norm does not
    torch.testing.assert_close(out.detach(), plain, atol=1e-5, rtol=1e-4)
    assert torch.equal(held[0, 0] > 0, kept)  # the same keys selected under the rules

    # the hand formula takes the probabilities CP-LRP holds constant as given
    xr = x.clone().requires_grad_(True)
    _hand_output(attn, xr, held.detach())[0, query].sum().backward()
    hand = (xr * xr.grad).sum(-1)[0]

    torch.testing.assert_close(ruled, hand, atol=1e-10, rtol=1e-10)
    # keys the indexer dropped get exactly nothing; the relevance sums to the output (no biases)
    assert (ruled[~kept[query]] == 0).all() and (ruled[kept[query]] != 0).all()
    torch.testing.assert_close(ruled.sum(), out[0, query].sum().detach(), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("model_type", DSA_TYPES)
def test_the_selection_stays_a_mask_under_the_rules_with_sdpa(model_type):
    # with SDPA the attention hands the indices to the rules' function, which must mask like the module does
    torch.manual_seed(0)
    model = tiny_model(model_type, attn="sdpa")
    ids = torch.randint(0, model.config.vocab_size, (1, 12))
    with torch.no_grad():
        plain = model(ids).logits
        for rules in ("attnlrp", "cp-lrp", "relp"):
            with lrp_rules(model, rules):
                torch.testing.assert_close(model(ids).logits, plain, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ Gemma-4 unified: K/V shared, V from K
def test_cp_lrp_through_a_kv_shared_layer_reaches_the_layer_that_stored_v():
    torch.manual_seed(0)
    model = tiny_model("gemma4_unified_text", dtype=torch.float64)
    store, reuse = model.model.layers[1].self_attn, model.model.layers[3].self_attn
    assert store.store_full_length_kv and store.v_proj is None and reuse.is_kv_shared_layer
    seq, d = 6, model.config.hidden_size
    x1, x3 = torch.randn(2, 1, seq, d, dtype=torch.float64)
    rotary = model.model.rotary_emb(x1, torch.arange(seq)[None], "full_attention")
    causal = torch.full((seq, seq), torch.finfo(torch.float64).min, dtype=torch.float64).triu(1)[None, None]

    x1r, x3r = x1.clone().requires_grad_(True), x3.clone().requires_grad_(True)
    with lrp_rules(model, "cp-lrp"):
        shared: dict = {}
        store(x1r, rotary, causal, shared)
        out, held = reuse(x3r, rotary, causal, shared)
        out[0, -1].sum().backward()
    stored = (x1r * x1r.grad).sum(-1)[0]
    # the reusing layer's own input only forms its queries: no relevance under CP-LRP
    assert x3r.grad is None or (x3r.grad == 0).all()

    # by hand: V = k_proj(x1) per head over its rms (a constant; v_norm has no weight), the
    # probabilities given, o_proj of the mixed heads
    x1h = x1.clone().requires_grad_(True)
    keys = (x1h @ store.k_proj.weight.T).view(1, seq, -1, store.head_dim)
    rms = torch.sqrt(keys.pow(2).mean(-1, keepdim=True) + model.config.rms_norm_eps).detach()
    values = (keys / rms).transpose(1, 2).repeat_interleave(reuse.num_key_value_groups, dim=1)
    mixed = (held.detach() @ values).transpose(1, 2).reshape(1, seq, -1)
    (mixed @ reuse.o_proj.weight.T)[0, -1].sum().backward()
    hand = (x1h * x1h.grad).sum(-1)[0]

    torch.testing.assert_close(stored, hand, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(stored.sum(), out[0, -1].sum().detach(), atol=1e-10, rtol=1e-10)


# ------------------------------------------------------------------ Cohere Compass's LayerNorm
def test_cohere_compass_layer_norm_rule_is_the_centred_linear_map_with_sigma_constant():
    from transformers.models.cohere_compass.modeling_cohere_compass import CohereCompassLayerNorm

    d = 8
    norm = CohereCompassLayerNorm(d, eps=1e-5).to(torch.float64)
    norm.weight.data = torch.linspace(0.5, 1.5, d, dtype=torch.float64)
    x = torch.randn(3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    c = torch.randn(3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    with ModelPatch(norm) as patch:
        install_norms(patch, [norm], COHERE_COMPASS_FAMILY.parts.norm)
        xr = x.clone().requires_grad_(True)
        out = norm(xr)
        (grad,) = torch.autograd.grad((out * c).sum(), xr)
    # the module itself computes in float32 (mean-centred, weight only, no offset)
    torch.testing.assert_close(out, norm(x), atol=1e-6, rtol=1e-6)
    centred = x - x.mean(-1, keepdim=True)
    sigma = torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(out, norm.weight * centred / sigma, atol=1e-12, rtol=0)
    g = c * norm.weight / sigma  # 1/sigma a constant: the mean removal is the only coupling left
    torch.testing.assert_close(grad, g - g.mean(-1, keepdim=True), atol=1e-12, rtol=0)


# ------------------------------------------------------------------ refusals name the part
REFUSED = [
    ("gemma3n", "Gemma3nTextAltUp"),
    ("gemma3n_text", "Gemma3nTextAltUp"),
    ("gemma4", "per-layer input embeddings"),
    ("gemma4_text", "per-layer input embeddings"),
    ("gemma4_unified", "Gemma4UnifiedModel"),
    ("gemma4_assistant", "drafter"),
    ("gemma4_unified_assistant", "drafter"),
    ("deepseek_v4", "DeepseekV4HyperConnection"),
    ("hy_v4", "HYV4HyperConnection"),
    ("dots3_note", "per_layer_config"),
    ("dots3_note_text", "per_layer_config"),
    ("inkling_text", "InklingRelativeLogits"),
    ("inkling2_text", "Inkling2BlockAttentionResidual"),
    ("hrm_text", "no_grad"),
    ("blt", "BltPatcher"),
    ("emu3", "Emu3VQVAE"),
    ("phi4_multimodal", "embed_tokens_extend"),
    ("musicgen", "num_codebooks"),
    ("musicgen_melody", "num_codebooks"),
]


@pytest.mark.parametrize("model_type,part", REFUSED)
def test_each_refused_type_names_its_part_in_one_line(model_type, part):
    model = torch.nn.Module()
    model.config = SimpleNamespace(model_type=model_type, is_encoder_decoder=False)
    with pytest.raises(
        UnsupportedModelError, match=rf"^unsupported architecture '{model_type}' \(.*{part}.*\); supported: "
    ) as err:
        get_arch(model)
    assert "\n" not in str(err.value)

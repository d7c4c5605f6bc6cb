"""A tiny random model of any transformers model type, built from its config class (seeded).

The conformance suite builds every registered type with :func:`tiny_model`: the config
class's defaults with every size field it has shrunk to the same small shape (width 32,
2 layers, 4 heads of 8, 2 key/value heads, MLP width 48, vocabulary 61, 4 experts of which
2 are routed per token), the layer-type lists cut to the layer count, and the weights scaled
up so that the rules' differences are visible. Types whose configs need more than that get
it from ``_SPECIAL`` (one entry per type, with the reason).
"""

from __future__ import annotations

import torch

WIDTH, LAYERS, HEADS, KV_HEADS, HEAD_DIM, MLP, VOCAB, EXPERTS, TOP_K = 32, 2, 4, 2, 8, 48, 61, 4, 2

# The size fields the config classes use, and the value each gets (a field is set only
# where the class has it).
_SIZES = {
    "vocab_size": VOCAB,
    "hidden_size": WIDTH,
    "n_embd": WIDTH,
    "d_model": WIDTH,
    "num_hidden_layers": LAYERS,
    "n_layer": LAYERS,
    "num_layers": LAYERS,
    "n_layers": LAYERS,
    "num_attention_heads": HEADS,
    "n_head": HEADS,
    "n_heads": HEADS,
    "num_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "n_kv_heads": KV_HEADS,
    "head_dim": HEAD_DIM,
    "intermediate_size": MLP,
    "n_inner": MLP,
    "ffn_hidden_size": MLP,
    "ffn_dim": MLP,
    "moe_intermediate_size": MLP // 2,
    "shared_expert_intermediate_size": MLP,
    "num_experts": EXPERTS,
    "num_local_experts": EXPERTS,
    "n_routed_experts": EXPERTS,
    "num_experts_per_tok": TOP_K,
    "moe_k": TOP_K,
    "max_position_embeddings": 128,
    "n_positions": 128,
    "max_seq_len": 128,
    "sliding_window": 16,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
    "use_cache": True,
}
# lists with one entry per layer, cut to the layer count
_PER_LAYER = ("layer_types", "layers_block_type", "mlp_layer_types", "hybrid_override_pattern", "no_rope_layers")


def tiny_config(model_type: str, **overrides):
    """The config of ``model_type`` with its size fields shrunk (see the module docstring)."""
    from transformers import AutoConfig

    defaults = AutoConfig.for_model(model_type)
    fields = {k: v for k, v in _SIZES.items() if hasattr(defaults, k)}
    for name in _PER_LAYER:
        value = getattr(defaults, name, None)
        if isinstance(value, (list, tuple)) and len(value) > LAYERS:
            fields[name] = list(value[:LAYERS])
        elif isinstance(value, str) and len(value) > LAYERS:
            fields[name] = value[:LAYERS]
    fields.update(_SPECIAL.get(model_type, {}))
    fields.update(overrides)
    return AutoConfig.for_model(model_type, **fields)


def scale_weights(model, *, norm_offset: bool = False) -> None:
    """Scale a random init up (in place): matrices N(0, 0.3), vectors N(0, 0.1), norm weights 1 + N(0, 0.3).

    ``norm_offset``: the norms compute ``(1 + weight) * x`` (Gemma), so their weights are N(0, 0.3).
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                if name.endswith("bias"):
                    p.normal_(0.0, 0.1)
                else:
                    p.copy_((0.0 if norm_offset else 1.0) + 0.3 * torch.randn_like(p))
            elif p.dim() >= 2:
                p.normal_(0.0, 0.3)
            else:
                p.normal_(0.0, 0.1)


def tiny_model(model_type: str, *, seed: int = 0, dtype: torch.dtype = torch.float32, attn: str = "eager", **overrides):
    """A 2-layer causal LM of ``model_type`` with the shrunk config, weights scaled up, in eval mode."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(model_type, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    scale_weights(
        model, norm_offset=model_type.startswith("gemma") and model_type not in ("gemma3n_text", "gemma4_text")
    )
    return model.to(dtype).eval()


# DeepSeek multi-head latent attention: consistent low ranks and head widths (the defaults are
# full-size), rotary width = head_dim, and one K/V head per query head (K and V come per head out of kv_b_proj)
_MLA = {
    "kv_lora_rank": 16,
    "q_lora_rank": 24,
    "qk_rope_head_dim": 4,
    "qk_nope_head_dim": 8,
    "v_head_dim": 8,
    "num_key_value_heads": HEADS,
}

_SPECIAL: dict[str, dict] = {
    **{t: {**_MLA, "head_dim": 4} for t in ("deepseek_v2", "glm4_moe_lite", "longcat_flash", "minicpm3", "youtu")},
    # the first 3 layers are dense by default: one, so that the second has routed experts
    # and its router groups the experts (8 groups by default): one group of the 4
    "deepseek_v3": {**_MLA, "head_dim": 4, "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1},
    # chunked attention within the 12-token prompts (the sweeps, 7 tokens, stay in one chunk), a NoPE second layer (with its query
    # temperature) and a dense first layer, so that each is checked
    "llama4_text": {"attention_chunk_size": 8, "no_rope_layers": [1, 0], "moe_layers": [1]},
    # its router groups the experts (8 groups by default): one group of the 4
    "axk1": {**_MLA, "head_dim": 4, "n_group": 1, "topk_group": 1},
    # dots1's config leaves the shared-expert count unset (None) and its MoE block multiplies by it
    "dots1": {"n_shared_experts": 1},
    # its shared MLP is off by default (width 0); on, so that its rules are checked
    "granitemoeshared": {"shared_intermediate_size": 48},
}

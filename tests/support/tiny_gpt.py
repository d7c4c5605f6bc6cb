"""Tiny random GPT-style causal LMs (LayerNorm with bias, plain MLPs) from transformers' config classes (seeded):
GPT-2, GPT-NeoX (Pythia), StarCoder2, GPT-J, Phi, Falcon."""

from __future__ import annotations

import torch


def tiny_gpt(
    model_type: str = "gpt2", *, seed: int = 0, dtype: torch.dtype = torch.float32, attn: str = "sdpa", **overrides
):
    """A 2-layer causal LM of ``model_type`` (vocabulary 61, width 32, 4 heads of 8, MLP width 48), weights scaled up."""
    from transformers import (
        AutoModelForCausalLM,
        FalconConfig,
        GPT2Config,
        GPTJConfig,
        GPTNeoXConfig,
        PhiConfig,
        Starcoder2Config,
    )

    if model_type == "gpt2":
        fields = dict(
            n_layer=2, n_embd=32, n_head=4, n_inner=48, n_positions=64, vocab_size=61, bos_token_id=1, eos_token_id=2
        )
        config = GPT2Config(**{**fields, **overrides})
    elif model_type == "gpt_neox":
        fields = dict(
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=4,
            intermediate_size=48,
            max_position_embeddings=64,
            vocab_size=61,
            rotary_pct=0.5,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
        )
        config = GPTNeoXConfig(**{**fields, **overrides})
    elif model_type == "gptj":
        fields = dict(n_layer=2, n_embd=32, n_head=4, n_inner=48, n_positions=64, rotary_dim=4, vocab_size=61)
        config = GPTJConfig(**{**fields, "bos_token_id": 1, "eos_token_id": 2, **overrides})
    elif model_type in ("starcoder2", "phi"):
        fields = dict(
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=48,
            max_position_embeddings=64,
            vocab_size=61,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
        )
        config_class = Starcoder2Config if model_type == "starcoder2" else PhiConfig
        config = config_class(**{**fields, **overrides})
    elif model_type == "falcon":  # Falcon-7B's layout: multi-query attention, parallel blocks, RoPE
        fields = dict(
            num_hidden_layers=2,
            hidden_size=32,
            num_attention_heads=4,
            ffn_hidden_size=48,
            vocab_size=61,
            bos_token_id=1,
            eos_token_id=2,
        )
        config = FalconConfig(**{**fields, **overrides})
    else:
        raise ValueError(model_type)
    if model_type == "gptj":
        attn = "eager"  # transformers has no SDPA path for GPT-J
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    with torch.no_grad():  # random init is small; larger weights make the rules' differences visible
        for name, p in model.named_parameters():
            if "ln_" in name or "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn_like(p))
            elif p.dim() >= 2:
                p.normal_(0.0, 0.3)
            else:
                p.normal_(0.0, 0.1)
    return model.to(dtype).eval()


def without_biases(model):
    """``model`` with every bias set to zero (in place), for exact conservation checks."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    return model

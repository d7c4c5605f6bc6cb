"""Tiny random MPNet, DistilBERT, DeBERTa-v2 and ModernBERT encoders (seeded, well under a second each)."""

from __future__ import annotations

import torch

MORE_ENCODER_TYPES = ("mpnet", "distilbert", "deberta-v2", "modernbert")


def _config(model_type: str, vocab: int, layers: int, bias: bool, overrides: dict):
    from transformers import AutoConfig

    common = dict(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    if model_type == "distilbert":
        common = dict(vocab_size=vocab, dim=32, n_layers=layers, n_heads=4, hidden_dim=48, max_position_embeddings=64)
        common.update(dropout=0.1, attention_dropout=0.1, pad_token_id=0)  # must be switched off by eval()
    elif model_type == "mpnet":
        common.update(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    elif model_type == "deberta-v2":
        # DeBERTa-v3's layout: relative positions only (no absolute ones), both disentangled terms
        common.update(
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            position_buckets=8,
            max_relative_positions=-1,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            type_vocab_size=0,
        )
    elif model_type == "modernbert":
        # layer 0 global, layer 1 local (a 4-token window), RoPE; biases only when asked for
        ids = dict(bos_token_id=2, cls_token_id=2, eos_token_id=3, sep_token_id=3)
        common.update(ids, global_attn_every_n_layers=2, local_attention=4, attention_bias=bias, mlp_bias=bias)
        common.update(norm_bias=bias, classifier_bias=bias)
    common.update(overrides)
    return AutoConfig.for_model(model_type, **common)


def tiny_more_encoder(
    model_type: str = "mpnet",
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    bias: bool = True,
    layers: int = 2,
    vocab: int = 48,
    **overrides,
):
    """A bare encoder (``AutoModel``) with large random weights; ``bias=False`` zeroes every bias
    (linear and LayerNorm), which makes CP-LRP conservation exact."""
    from transformers import AutoModel

    config = _config(model_type, vocab, layers, bias, overrides)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") and "relative_attention_bias" not in name:
                p.copy_(0.1 * torch.randn_like(p) if bias else torch.zeros_like(p))
            elif "LayerNorm" in name or "norm" in name.split(".")[-2]:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif "relative_attention_bias" in name or "rel_embeddings" in name:
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, 0.3)
    return model.to(dtype).eval()

"""Tiny random BART-style encoder-decoders (seeded), built from the shrunk configs of tests/support/tiny_any.py."""

from __future__ import annotations

import torch
from torch import nn

SEQ2SEQ_TYPES = ("bart", "plbart", "marian", "blenderbot-small", "mbart", "pegasus", "blenderbot")


def tiny_seq2seq(
    model_type: str, *, seed: int = 0, dtype: torch.dtype = torch.float32, attn: str = "eager", **overrides
):
    """A 2 + 2-layer encoder-decoder of ``model_type`` (width 32, 4 heads), weights scaled up, in eval mode."""
    from transformers import AutoModelForSeq2SeqLM

    from tests.support.tiny_any import scale_weights, tiny_config

    config = tiny_config(model_type, **{"decoder_start_token_id": 0, "dropout": 0.1, **overrides})
    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_config(config, attn_implementation=attn)
    scale_weights(model)
    return model.to(dtype).eval()


def without_biases_and_positions(model: nn.Module) -> nn.Module:
    """``model`` (in place) with every bias, ``final_logits_bias`` and the position embeddings zeroed:
    each is added to every token and absorbs relevance the token embeddings do not get."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "embed_positions" in name:
                p.zero_()
        for name, b in model.named_buffers():
            if name.endswith("final_logits_bias") or "embed_positions" in name:
                b.zero_()
    return model

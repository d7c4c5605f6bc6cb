"""Tiny random BERT-style encoders (seeded, built in well under a second) for the BiLRP tests."""

from __future__ import annotations

from contextlib import contextmanager

import torch

ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "electra", "ernie", "data2vec-text", "camembert")


def tiny_encoder(
    model_type: str = "bert",
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    bias: bool = True,
    layers: int = 2,
    vocab: int = 48,
    attn: str = "sdpa",
    **overrides,
):
    """A bare encoder (``AutoModel``) with large random weights; ``bias=False`` zeroes every bias
    (linear and LayerNorm), which makes CP-LRP conservation exact."""
    from transformers import AutoConfig, AutoModel

    common = dict(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_dropout_prob=0.1,  # must be switched off by the rules' eval()
        attention_probs_dropout_prob=0.1,
        pad_token_id=0,
    )
    if model_type == "electra":
        common["embedding_size"] = 24  # exercises embeddings_project
    common.update(overrides)
    config = AutoConfig.for_model(model_type, **common)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config, attn_implementation=attn)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p) if bias else torch.zeros_like(p))
            elif "LayerNorm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.3)
    return model.to(dtype).eval()


def encoder_ids(n: int, vocab: int = 48, seed: int = 1) -> list[int]:
    """``[CLS]``-like first id 2, random ids, ``[SEP]``-like last id 3 (ids as the shared-nouns tokenizer)."""
    g = torch.Generator().manual_seed(seed)
    return [2, *(int(i) for i in torch.randint(4, vocab, (n - 2,), generator=g)), 3]


@contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` intra-op threads, then restore the setting.

    The BiLRP tests use tiny models, whose small matrix products gain nothing from a
    second thread; on a busy machine OpenMP threads spinning against other jobs make
    them 10 to 20 times slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
